#include "common.h"

namespace vtap {

AddonData* GetData(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  InitTun(env, exports);
  InitLink(env, exports);
  InitRegions(env, exports);
  InitIo(env, exports);
  InitPoll(env, exports);
  InitVhost(env, exports);
  return exports;
}

}  // namespace vtap

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return vtap::Init(env, exports); }

NODE_API_MODULE(virtio_tap, InitAddon)
