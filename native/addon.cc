#include "common.h"

namespace vtap {

class MappingTable;                           // vhost.cc
MappingTable* NewMappingTable();              // vhost.cc
void DeleteMappingTable(MappingTable* table);  // vhost.cc: unmaps what is still mapped

namespace {

// The per-environment instance data (the main thread's and each worker's):
// the I/O layer's AddonData and vhost's mappings, freed together, once, when
// the environment goes.
struct EnvData {
  AddonData io;
  MappingTable* mappings = NewMappingTable();
  EnvData() = default;
  EnvData(const EnvData&) = delete;
  EnvData& operator=(const EnvData&) = delete;
  ~EnvData() { DeleteMappingTable(mappings); }
};

}  // namespace

AddonData* GetData(Napi::Env env) { return &env.GetInstanceData<EnvData>()->io; }
MappingTable* GetMappings(Napi::Env env) { return env.GetInstanceData<EnvData>()->mappings; }

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new EnvData());
  InitTun(env, exports);
  InitLink(env, exports);
  InitRegions(env, exports);
  InitIo(env, exports);
  InitPoll(env, exports);
  InitVhost(env, exports);
  InitFds(env, exports);
  return exports;
}

}  // namespace vtap

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return vtap::Init(env, exports); }

NODE_API_MODULE(virtio_tap, InitAddon)
