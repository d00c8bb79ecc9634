// Memory regions that batched I/O may read from and write into. A region is
// registered once (a typed array over an ArrayBuffer or SharedArrayBuffer)
// and named by its index afterwards.
#include "common.h"

#include <cmath>

namespace vtap {

// registerRegion(view: TypedArray) -> index.
static Napi::Value Register(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "registerRegion expects a typed array (for example a Uint8Array)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::TypedArray view = info[0].As<Napi::TypedArray>();
  AddonData* data = GetData(env);
  size_t index = data->regions.size();
  for (size_t i = 0; i < data->regions.size(); i++) {
    if (!data->regions[i].live) {
      index = i;
      break;
    }
  }
  if (index == data->regions.size()) data->regions.emplace_back();
  Region& r = data->regions[index];
  r.view = Napi::Reference<Napi::TypedArray>::New(view, 1);
  if (!ViewBytes(env, view, &r.data, &r.length)) r.length = 0;
  r.epoch = 0;
  r.live = true;
  return Napi::Number::New(env, static_cast<double>(index));
}

// unregisterRegion(index) -> 0 | -EINVAL.
static Napi::Value Unregister(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t index;
  if (!ArgInt(info, 0, 0, INT32_MAX, &index)) return env.Undefined();
  AddonData* data = GetData(env);
  if (static_cast<size_t>(index) >= data->regions.size() || !data->regions[index].live) return Errno(env, EINVAL);
  Region& r = data->regions[index];
  r.view.Reset();
  r.data = nullptr;
  r.length = 0;
  r.live = false;
  return Napi::Number::New(env, 0);
}

uint8_t* ResolveSegment(Napi::Env env, AddonData* data, double region, double offset, double length,
                        size_t* outLen) {
  // Invariant: the index is an integer naming a live region; NaN fails the comparisons.
  if (!(region >= 0 && region < static_cast<double>(data->regions.size())) || region != std::floor(region))
    return nullptr;
  Region& r = data->regions[static_cast<size_t>(region)];
  if (!r.live) return nullptr;
  if (r.epoch != data->epoch) {
    // Re-read the view once per call: a transferred (detached) buffer reports length 0.
    if (!ViewBytes(env, r.view.Value(), &r.data, &r.length)) r.length = 0;
    if (r.length == 0) r.data = nullptr;
    r.epoch = data->epoch;
  }
  // Invariant: 0 <= offset, 0 <= length, offset + length <= region length, all integers.
  double size = static_cast<double>(r.length);
  if (!(offset >= 0 && length >= 0 && offset <= size && length <= size - offset)) return nullptr;
  if (offset != std::floor(offset) || length != std::floor(length)) return nullptr;
  *outLen = static_cast<size_t>(length);
  if (*outLen == 0) return r.data != nullptr ? r.data : reinterpret_cast<uint8_t*>(data);
  return r.data + static_cast<size_t>(offset);
}

void InitRegions(Napi::Env env, Napi::Object exports) {
  exports.Set("registerRegion", Napi::Function::New(env, Register, "registerRegion"));
  exports.Set("unregisterRegion", Napi::Function::New(env, Unregister, "unregisterRegion"));
  (void)env;
}

}  // namespace vtap
