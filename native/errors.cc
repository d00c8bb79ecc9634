#include "common.h"

#include <limits>

namespace vtap {

bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t min, int64_t max, int64_t* out) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(env, "argument " + std::to_string(i) + " must be a number")
        .ThrowAsJavaScriptException();
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  // Invariant: only integers inside [min, max] pass; NaN fails every comparison.
  if (!(d >= static_cast<double>(min) && d <= static_cast<double>(max)) ||
      d != static_cast<double>(static_cast<int64_t>(d))) {
    Napi::RangeError::New(env, "argument " + std::to_string(i) + " must be an integer in [" +
                                   std::to_string(min) + ", " + std::to_string(max) + "]")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  if (info.Length() <= i || !info[i].IsString()) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a string")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

bool ViewBytes(napi_env env, napi_value value, uint8_t** data, size_t* length) {
  napi_typedarray_type type;
  size_t count = 0;
  void* p = nullptr;
  // Invariant: napi_get_typedarray_info's data already includes the view's byte offset.
  if (napi_get_typedarray_info(env, value, &type, &count, &p, nullptr, nullptr) != napi_ok) return false;
  size_t elem = 1;
  switch (type) {
    case napi_int16_array: case napi_uint16_array: elem = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
    default: elem = 1;
  }
  *length = p == nullptr ? 0 : count * elem;
  *data = static_cast<uint8_t*>(p);
  return true;
}

Napi::Value Errno(Napi::Env env, int err) { return Napi::Number::New(env, -static_cast<double>(err)); }

}  // namespace vtap
