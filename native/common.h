// virtio-tap native layer: syscalls only, no virtio logic.
// Every function returns a number (>= 0 on success, -errno on failure) or a
// small object; argument type errors throw TypeError. The TypeScript layer
// turns -errno into errors a person can act on.
#pragma once

#include <napi.h>

#include <limits.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>
#include <unordered_set>

namespace vtap {

class Poller;

// One registered memory region: a view whose bytes native I/O may touch.
struct Region {
  Napi::Reference<Napi::TypedArray> view;  // keeps the buffer alive
  uint8_t* data = nullptr;
  size_t length = 0;
  uint32_t epoch = 0;  // call epoch in which data/length were last refreshed
  bool live = false;
};

// Scratch space of mergeable receive. It lives in the per-environment data,
// not in thread_local storage: in a shared library every thread_local access
// goes through __tls_get_addr, which showed up in receive profiles.
struct MergeScratch {
  static constexpr size_t kMaxGroups = 4096;
  struct iovec iov[IOV_MAX];
  size_t groupStart[kMaxGroups + 1];
  size_t groupRoom[kMaxGroups];
};

// Per-environment state (main thread and each worker have their own).
struct AddonData {
  std::vector<Region> regions;
  std::unordered_set<Poller*> pollers;
  uint32_t epoch = 1;
  std::unique_ptr<MergeScratch> merge = std::make_unique<MergeScratch>();
};

AddonData* GetData(Napi::Env env);

// Helpers for argument checking; each throws a TypeError and returns false.
bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t min, int64_t max, int64_t* out);
bool ArgString(const Napi::CallbackInfo& info, size_t i, std::string* out);
Napi::Value Errno(Napi::Env env, int err);  // returns -err as a number

// The bytes of a typed array, over an ArrayBuffer or a SharedArrayBuffer.
// A detached buffer yields length 0. Returns false if value is not a typed array.
bool ViewBytes(napi_env env, napi_value value, uint8_t** data, size_t* length);

void InitTun(Napi::Env env, Napi::Object exports);
void InitLink(Napi::Env env, Napi::Object exports);
void InitRegions(Napi::Env env, Napi::Object exports);
void InitIo(Napi::Env env, Napi::Object exports);
void InitPoll(Napi::Env env, Napi::Object exports);
void InitVhost(Napi::Env env, Napi::Object exports);
void InitFds(Napi::Env env, Napi::Object exports);

// Resolves (region, offset, length) to a pointer, or nullptr when the
// segment does not lie inside a live region. Refreshes the region's view once
// per epoch so that a detached ArrayBuffer is never written.
uint8_t* ResolveSegment(Napi::Env env, AddonData* data, double region, double offset, double length,
                        size_t* outLen);

}  // namespace vtap
