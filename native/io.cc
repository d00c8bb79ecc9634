// Batched vectored I/O. A plan is a Float64Array of frames, each written as
//   nseg, (region, offset, length) x nseg
// One call performs one readv or writev per frame. Results are bytes or
// -errno per frame, never an exception: the hot path returns numbers.
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace vtap {

static constexpr int kMaxSegments = IOV_MAX;

// readv and writev without glibc's wrappers: those are cancellation points
// and pay for enabling and disabling asynchronous cancellation on every call,
// which no thread of ours uses.
static inline ssize_t SysReadv(int fd, const struct iovec* iov, int cnt) {
  return syscall(SYS_readv, fd, iov, cnt);
}
static inline ssize_t SysRead(int fd, void* buf, size_t len) {
  return syscall(SYS_read, fd, buf, len);
}
static inline ssize_t SysWritev(int fd, const struct iovec* iov, int cnt) {
  return syscall(SYS_writev, fd, iov, cnt);
}

struct BatchArgs {
  int fd;
  const double* plan;
  size_t planLen;
  size_t frames;
  int32_t* results;
};

static bool ParseBatch(const Napi::CallbackInfo& info, BatchArgs* a) {
  Napi::Env env = info.Env();
  int64_t fd, frames;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return false;
  if (info.Length() < 4 || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array || !info[3].IsTypedArray() ||
      info[3].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    Napi::TypeError::New(env, "expected (fd, plan: Float64Array, frames, results: Int32Array)")
        .ThrowAsJavaScriptException();
    return false;
  }
  if (!ArgInt(info, 2, 0, INT32_MAX, &frames)) return false;
  Napi::Float64Array plan = info[1].As<Napi::Float64Array>();
  Napi::Int32Array results = info[3].As<Napi::Int32Array>();
  if (static_cast<size_t>(frames) > results.ElementLength()) {
    Napi::RangeError::New(env, "frames (" + std::to_string(frames) + ") exceeds results length (" +
                                   std::to_string(results.ElementLength()) + ")")
        .ThrowAsJavaScriptException();
    return false;
  }
  a->fd = static_cast<int>(fd);
  a->plan = plan.Data();
  a->planLen = plan.ElementLength();
  a->frames = static_cast<size_t>(frames);
  a->results = results.Data();
  return true;
}

// Builds the iovecs of the frame at *pos. Returns the iovec count, -EINVAL
// for a malformed plan (processing stops), or -EFAULT for a segment outside
// its region (the frame is refused, nothing is transferred).
static int BuildFrame(Napi::Env env, AddonData* data, const BatchArgs& a, size_t* pos, struct iovec* iov) {
  if (*pos >= a.planLen) return -EINVAL;
  double n = a.plan[*pos];
  // Invariant: the segment count is an integer in [0, IOV_MAX] and its triples lie inside the plan.
  if (!(n >= 0 && n <= kMaxSegments) || n != std::floor(n)) return -EINVAL;
  size_t nseg = static_cast<size_t>(n);
  if (a.planLen - *pos - 1 < nseg * 3) return -EINVAL;
  const double* seg = a.plan + *pos + 1;
  *pos += 1 + nseg * 3;
  // Segments that are one run of memory (a header descriptor right before
  // its frame's) become one iovec: a single-iovec readv or writev takes the
  // kernel's fast path.
  size_t out = 0;
  for (size_t i = 0; i < nseg; i++) {
    size_t len = 0;
    uint8_t* p = ResolveSegment(env, data, seg[i * 3], seg[i * 3 + 1], seg[i * 3 + 2], &len);
    if (p == nullptr) return -EFAULT;
    if (out > 0 && static_cast<uint8_t*>(iov[out - 1].iov_base) + iov[out - 1].iov_len == p) {
      iov[out - 1].iov_len += len;
      continue;
    }
    iov[out].iov_base = p;
    iov[out].iov_len = len;
    out++;
  }
  return static_cast<int>(out);
}

// Long on purpose: this is the hot loop, one syscall per frame and no allocation.
template <bool kWrite>
static Napi::Value Batch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BatchArgs a;
  if (!ParseBatch(info, &a)) return env.Undefined();
  AddonData* data = GetData(env);
  data->epoch++;
  if (data->epoch == 0) data->epoch = 1;
  struct iovec iov[kMaxSegments];
  size_t pos = 0;
  size_t done = 0;
  while (done < a.frames) {
    int nseg = BuildFrame(env, data, a, &pos, iov);
    if (nseg == -EINVAL) {
      a.results[done++] = -EINVAL;
      break;
    }
    if (nseg < 0) {
      a.results[done++] = nseg;
      continue;
    }
    ssize_t rc;
    do {
      rc = kWrite ? SysWritev(a.fd, iov, nseg) : SysReadv(a.fd, iov, nseg);
    } while (rc < 0 && errno == EINTR);
    if (rc >= 0) {
      a.results[done++] = static_cast<int32_t>(rc);
      continue;
    }
    int err = errno == EWOULDBLOCK ? EAGAIN : errno;
    a.results[done++] = -err;
    if (err == EAGAIN) break;
  }
  return Napi::Number::New(env, static_cast<double>(done));
}

// readvMergeable(fd, plan, groups, minRoom, maxRoom, results, hold, state)
// -> frames. The plan holds `groups` groups of segments (the same layout as
// frames). Frames are read one per read from a cursor over the groups, and a
// frame consumes whole groups, as many as its bytes need.
// results[2i] = bytes or -errno, results[2i+1] = groups consumed.
//
// No frame is cut short. The read offers more than `maxRoom` bytes (the
// largest frame) whenever the groups from the cursor on hold less than that:
// it reads into `hold` (the queue's own buffer, over maxRoom bytes) and copies the
// frame into the groups. A frame larger than the groups left stays in `hold`
// (state[0] = its bytes, 0 when none) and is placed first by a later call,
// when there is room; nothing more is read meanwhile, as QEMU stops reading
// its TAP while the guest's buffers cannot take the frame in hand.
//
// A frame larger than the room offered is reported as -EMSGSIZE with no
// group consumed. Stops at EAGAIN (reported, nothing consumed), when less than
// `minRoom` bytes of groups are left, or when a held frame does not fit. Long on
// purpose: the hot loop of mergeable receive.
static Napi::Value ReadvMergeable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, groups, minRoom, maxRoom;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return env.Undefined();
  auto isType = [&](size_t i, napi_typedarray_type t) {
    return info[i].IsTypedArray() && info[i].As<Napi::TypedArray>().TypedArrayType() == t;
  };
  if (info.Length() < 8 || !isType(1, napi_float64_array) || !isType(5, napi_int32_array) || !isType(6, napi_uint8_array) ||
      !isType(7, napi_int32_array)) {
    Napi::TypeError::New(env,
                         "expected (fd, plan: Float64Array, groups, minRoom, maxRoom, results: Int32Array, hold: Uint8Array, "
                         "state: Int32Array)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!ArgInt(info, 2, 0, MergeScratch::kMaxGroups, &groups) || !ArgInt(info, 3, 1, INT32_MAX, &minRoom) ||
      !ArgInt(info, 4, 1, INT32_MAX, &maxRoom))
    return env.Undefined();
  Napi::Float64Array planArr = info[1].As<Napi::Float64Array>();
  Napi::Int32Array resArr = info[5].As<Napi::Int32Array>();
  Napi::Int32Array stateArr = info[7].As<Napi::Int32Array>();
  uint8_t* hold = nullptr;
  size_t holdLen = 0;
  ViewBytes(env, info[6], &hold, &holdLen);
  if (holdLen <= static_cast<size_t>(maxRoom) || stateArr.ElementLength() < 1) {
    Napi::RangeError::New(env, "hold must have room for maxRoom + 1 bytes, and state one element").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int32_t* state = stateArr.Data();
  // Invariant: a held frame fits the hold buffer it was read into.
  if (state[0] < 0 || static_cast<size_t>(state[0]) > holdLen) state[0] = 0;
  size_t held = static_cast<size_t>(state[0]);
  BatchArgs a{static_cast<int>(fd), planArr.Data(), planArr.ElementLength(), 0, nullptr};
  int32_t* results = resArr.Data();
  size_t maxFrames = resArr.ElementLength() / 2;
  AddonData* data = GetData(env);
  data->epoch++;
  if (data->epoch == 0) data->epoch = 1;

  MergeScratch& scratch = *data->merge;
  struct iovec* const iov = scratch.iov;
  size_t* const groupStart = scratch.groupStart;
  size_t* const groupRoom = scratch.groupRoom;
  // Groups are resolved lazily, only as far as the frames read need them: a
  // call that finds one frame waiting does not resolve hundreds of groups.
  size_t pos = 0, nseg = 0, parsed = 0;
  bool exhausted = false;
  auto parseOne = [&]() -> bool {
    if (exhausted || parsed >= static_cast<size_t>(groups) || pos >= a.planLen) return exhausted = true, false;
    double n = a.plan[pos];
    // Invariant: the group's segments fit both the plan and the iovec array.
    if (!(n >= 1 && n <= kMaxSegments) || n != std::floor(n)) return exhausted = true, false;
    size_t cnt = static_cast<size_t>(n);
    if (a.planLen - pos - 1 < cnt * 3 || nseg + cnt > static_cast<size_t>(kMaxSegments)) return exhausted = true, false;
    size_t room = 0;
    for (size_t i = 0; i < cnt; i++) {
      const double* seg = a.plan + pos + 1 + i * 3;
      size_t len = 0;
      uint8_t* p = ResolveSegment(env, data, seg[0], seg[1], seg[2], &len);
      // An invalid segment ends the usable groups.
      if (p == nullptr) return exhausted = true, false;
      iov[nseg + i].iov_base = p;
      iov[nseg + i].iov_len = len;
      room += len;
    }
    groupStart[parsed] = nseg;
    groupRoom[parsed] = room;
    nseg += cnt;
    pos += 1 + cnt * 3;
    parsed++;
    groupStart[parsed] = nseg;
    return true;
  };
  groupStart[0] = 0;

  bool bigFrames = false;
  // The frame's room is the window [g, last) of groups: as frames consume
  // groups from its front, it grows at its back to maxRoom (or the last group).
  size_t g = 0, frames = 0, left = 0, last = 0;
  while (frames < maxFrames) {
    for (;;) {
      while (last >= parsed && parseOne()) {
      }
      if (last >= parsed || left >= static_cast<size_t>(maxRoom)) break;
      left += groupRoom[last];
      last++;
    }
    const size_t first = groupStart[g], end = groupStart[last];
    // Copies n bytes of hold into the groups from the cursor on.
    auto place = [&](size_t n) {
      size_t from = 0;
      for (size_t i = first; i < end && from < n; i++) {
        size_t k = std::min(n - from, iov[i].iov_len);
        std::memcpy(iov[i].iov_base, hold + from, k);
        from += k;
      }
    };
    ssize_t rc;
    if (held > 0) {
      // The frame held by an earlier call goes first, once it fits.
      if (left < held) break;
      place(held);
      rc = static_cast<ssize_t>(held);
      held = 0;
    } else {
      if (left < static_cast<size_t>(minRoom)) break;
      // A readv costs more the more iovecs it is given: one iovec is the
      // kernel's fast path (a plain user buffer), and every further one adds
      // about a fifth to the cost of reading a small frame. Room for a 64 KiB
      // GSO frame can be 30 or more buffers. So the frame is read straight
      // into the buffers only when they can take any frame and are one run
      // of memory, or the call has already seen a frame larger than an MTU;
      // otherwise it is read into hold and copied: copying a small frame
      // costs less than the iovecs.
      size_t mid = g, small = 0;
      while (mid < last && small < static_cast<size_t>(minRoom)) small += groupRoom[mid++];
      size_t run = first + 1;
      while (run < end && static_cast<uint8_t*>(iov[run - 1].iov_base) + iov[run - 1].iov_len == iov[run].iov_base) run++;
      // More room than the largest frame: a frame the TAP cut short to fit
      // (it does so silently) shows as more than maxRoom bytes.
      const bool direct = left > static_cast<size_t>(maxRoom) && (bigFrames || run == end);
      if (direct) {
        // One run of memory is one iovec.
        struct iovec one = {iov[first].iov_base, left};
        const bool single = run == end;
        do {
          rc = single ? SysReadv(a.fd, &one, 1) : SysReadv(a.fd, &iov[first], static_cast<int>(end - first));
        } while (rc < 0 && errno == EINTR);
      } else {
        do {
          rc = SysRead(a.fd, hold, static_cast<size_t>(maxRoom) + 1);
        } while (rc < 0 && errno == EINTR);
        if (rc > static_cast<ssize_t>(left) && rc <= static_cast<ssize_t>(maxRoom)) {
          // Larger than the buffers left: hold it for a later call.
          held = static_cast<size_t>(rc);
          break;
        }
        if (rc > 0 && rc <= static_cast<ssize_t>(left)) place(static_cast<size_t>(rc));
      }
      if (rc > static_cast<ssize_t>(small)) bigFrames = true;
      // A frame larger than the room offered: the TAP cuts it short to fit
      // (silently: the read fills all the room, which is more than maxRoom),
      // others refuse it (EFAULT). Gone either way: reported, no group
      // consumed, and reading goes on.
      if ((rc < 0 && errno == EFAULT) || (direct ? rc >= static_cast<ssize_t>(left) : rc > static_cast<ssize_t>(maxRoom))) {
        results[frames * 2] = -EMSGSIZE;
        results[frames * 2 + 1] = 0;
        frames++;
        continue;
      }
    }
    if (rc < 0) {
      int err = errno == EWOULDBLOCK ? EAGAIN : errno;
      results[frames * 2] = -err;
      results[frames * 2 + 1] = 0;
      frames++;
      break;
    }
    size_t used = 0, got = 0;
    do {
      got += groupRoom[g + used];
      used++;
    } while (got < static_cast<size_t>(rc) && g + used < last);
    results[frames * 2] = static_cast<int32_t>(rc);
    results[frames * 2 + 1] = static_cast<int32_t>(used);
    frames++;
    g += used;
    left -= got;
  }
  state[0] = static_cast<int32_t>(held);
  return Napi::Number::New(env, static_cast<double>(frames));
}

// Copies `want` bytes of the plan's segments from position `at` on (running
// on into the following entries, as a merged frame's groups do), after
// skipping `skip` bytes, to dst[dstOffset, dstLen). Returns the bytes copied,
// or -EFAULT for a segment outside its region.
static ssize_t CopyPlan(Napi::Env env, AddonData* data, const double* plan, size_t planLen, size_t at, size_t skip,
                        size_t want, uint8_t* dst, size_t dstLen, size_t dstOffset) {
  if (dstOffset > dstLen) return -EFAULT;
  size_t room = std::min(dstLen - dstOffset, want);
  size_t pos = at, got = 0;
  while (got < room && pos < planLen) {
    double n = plan[pos];
    // Invariant: a segment count that is an integer whose triples lie inside the plan.
    if (!(n >= 0 && n <= kMaxSegments) || n != std::floor(n) || planLen - pos - 1 < static_cast<size_t>(n) * 3) break;
    size_t cnt = static_cast<size_t>(n);
    for (size_t i = 0; i < cnt && got < room; i++) {
      const double* seg = plan + pos + 1 + i * 3;
      size_t len = 0;
      uint8_t* p = ResolveSegment(env, data, seg[0], seg[1], seg[2], &len);
      if (p == nullptr) return -EFAULT;
      size_t drop = std::min(skip, len);
      skip -= drop;
      size_t take = std::min(len - drop, room - got);
      std::memcpy(dst + dstOffset + got, p + drop, take);
      got += take;
    }
    pos += 1 + cnt * 3;
  }
  return static_cast<ssize_t>(got);
}

static bool IsFloat64Array(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float64_array;
}

// gatherFrames(plan, jobs, count, dst) -> frames copied, or -errno. Copies
// `count` frames out of registered memory in one call, what a capture
// records, with no copy made in JavaScript: jobs holds (at, skip, want,
// dstOffset) per frame, as CopyPlan takes them.
static Napi::Value GatherFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !IsFloat64Array(info[0]) || !IsFloat64Array(info[1]) || !info[3].IsTypedArray()) {
    Napi::TypeError::New(env, "expected (plan: Float64Array, jobs: Float64Array, count, dst: TypedArray)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int64_t count;
  if (!ArgInt(info, 2, 0, INT32_MAX, &count)) return env.Undefined();
  Napi::Float64Array planArr = info[0].As<Napi::Float64Array>();
  Napi::Float64Array jobArr = info[1].As<Napi::Float64Array>();
  if (static_cast<size_t>(count) * 4 > jobArr.ElementLength()) return Errno(env, EINVAL);
  uint8_t* dst = nullptr;
  size_t dstLen = 0;
  if (!ViewBytes(env, info[3], &dst, &dstLen)) return Errno(env, EFAULT);
  AddonData* data = GetData(env);
  data->epoch++;
  if (data->epoch == 0) data->epoch = 1;
  const double* jobs = jobArr.Data();
  for (int64_t k = 0; k < count; k++) {
    const double* j = jobs + k * 4;
    // Invariant: each job's numbers are integers in [0, 2^32).
    for (int f = 0; f < 4; f++)
      if (!(j[f] >= 0 && j[f] < 4294967296.0) || j[f] != std::floor(j[f])) return Errno(env, EINVAL);
    ssize_t r = CopyPlan(env, data, planArr.Data(), planArr.ElementLength(), static_cast<size_t>(j[0]), static_cast<size_t>(j[1]),
                         static_cast<size_t>(j[2]), dst, dstLen, static_cast<size_t>(j[3]));
    if (r < 0) return Napi::Number::New(env, static_cast<double>(r));
  }
  return Napi::Number::New(env, static_cast<double>(count));
}

// Single-frame I/O on a typed array, for set-up, tests and tools.
template <bool kWrite>
static Napi::Value Single(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsTypedArray()) {
    Napi::TypeError::New(env, "argument 1 must be a typed array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint8_t* p = nullptr;
  size_t len = 0;
  ViewBytes(env, info[1], &p, &len);
  ssize_t rc;
  do {
    rc = kWrite ? write(static_cast<int>(fd), p, len) : read(static_cast<int>(fd), p, len);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return Errno(env, errno == EWOULDBLOCK ? EAGAIN : errno);
  return Napi::Number::New(env, static_cast<double>(rc));
}

void InitIo(Napi::Env env, Napi::Object exports) {
  exports.Set("writevBatch", Napi::Function::New(env, Batch<true>, "writevBatch"));
  exports.Set("readvBatch", Napi::Function::New(env, Batch<false>, "readvBatch"));
  exports.Set("readvMergeable", Napi::Function::New(env, ReadvMergeable, "readvMergeable"));
  exports.Set("gatherFrames", Napi::Function::New(env, GatherFrames, "gatherFrames"));
  exports.Set("writeFrame", Napi::Function::New(env, Single<true>, "writeFrame"));
  exports.Set("readFrame", Napi::Function::New(env, Single<false>, "readFrame"));
  exports.Get("constants").As<Napi::Object>().Set("IOV_MAX", kMaxSegments);
}

}  // namespace vtap
