// What batched I/O (io.cc) and mergeable receive (readv-mergeable.cc) share:
// the I/O plan's layout, the raw syscalls, and the call epoch.
//
// An I/O plan is a Float64Array written by src/host/io-plan.ts: per frame
// (a group, for mergeable receive), the segment count, then (region, offset,
// length) per segment against memory registered with regions.cc. Plan is
// the one place in C++ that knows that layout.
#pragma once

#include "common.h"

#include <errno.h>
#include <limits.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmath>

namespace vtap {

static constexpr size_t kMaxSegments = IOV_MAX;

// A plan as JavaScript passed it: read only, every position checked.
struct Plan {
  const double* data = nullptr;
  size_t len = 0;

  // The segment count of the frame at `pos`, or -1 unless it is an integer
  // in [minCount, IOV_MAX] whose triples all lie inside the plan.
  ssize_t Segments(size_t pos, size_t minCount) const {
    if (pos >= len) return -1;
    const double n = data[pos];
    // Invariant: the count is an integer in [minCount, IOV_MAX] (NaN fails the comparisons) before it becomes a size.
    if (!(n >= static_cast<double>(minCount) && n <= kMaxSegments) || n != std::floor(n)) return -1;
    const size_t count = static_cast<size_t>(n);
    if (len - pos - 1 < count * 3) return -1;
    return static_cast<ssize_t>(count);
  }

  // Segment i of the frame at `pos` (checked by Segments): region, offset, length.
  const double* Segment(size_t pos, size_t i) const { return data + pos + 1 + i * 3; }

  // The position of the frame after the one at `pos`, which has `count` segments.
  static size_t Next(size_t pos, size_t count) { return pos + 1 + count * 3; }
};

// A new call epoch: each registered region is re-checked once per call.
inline void NewEpoch(AddonData* data) {
  data->epoch++;
  if (data->epoch == 0) data->epoch = 1;
}

// readv and read without glibc's wrappers: those are cancellation points
// and pay for enabling and disabling asynchronous cancellation on every call,
// which no thread of ours uses.
inline ssize_t SysReadv(int fd, const struct iovec* iov, int cnt) { return syscall(SYS_readv, fd, iov, cnt); }
inline ssize_t SysRead(int fd, void* buf, size_t len) { return syscall(SYS_read, fd, buf, len); }
inline ssize_t SysWritev(int fd, const struct iovec* iov, int cnt) { return syscall(SYS_writev, fd, iov, cnt); }

// True when v is a typed array of type t.
inline bool IsTypedArrayOf(const Napi::Value& v, napi_typedarray_type t) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == t;
}

// readvMergeable (readv-mergeable.cc).
Napi::Value ReadvMergeable(const Napi::CallbackInfo& info);

}  // namespace vtap
