// Batched vectored I/O over an I/O plan (io.h): one call performs one
// readv or writev per frame. Results are bytes or -errno per frame, never an
// exception: the hot path returns numbers. Mergeable receive, which holds
// receive policy, is readv-mergeable.cc.
#include "io.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace vtap {

struct BatchArgs {
  int fd;
  Plan plan;
  size_t frames;
  int32_t* results;
};

static bool ParseBatch(const Napi::CallbackInfo& info, BatchArgs* a) {
  Napi::Env env = info.Env();
  int64_t fd, frames;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return false;
  if (info.Length() < 4 || !IsTypedArrayOf(info[1], napi_float64_array) || !IsTypedArrayOf(info[3], napi_int32_array)) {
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
  // Invariant: fd and frames were range-checked by ArgInt; frames is within results.
  a->fd = static_cast<int>(fd);
  a->plan = Plan{plan.Data(), plan.ElementLength()};
  a->frames = static_cast<size_t>(frames);
  a->results = results.Data();
  return true;
}

// Builds the iovecs of the frame at *pos. Returns the iovec count, -EINVAL
// for a malformed plan (processing stops), or -EFAULT for a segment outside
// its region (the frame is refused, nothing is transferred).
static int BuildFrame(Napi::Env env, AddonData* data, const BatchArgs& a, size_t* pos, struct iovec* iov) {
  const ssize_t n = a.plan.Segments(*pos, 0);
  if (n < 0) return -EINVAL;
  // Invariant: Segments checked the count is in [0, IOV_MAX] and its triples lie inside the plan.
  const size_t nseg = static_cast<size_t>(n);
  const size_t at = *pos;
  *pos = Plan::Next(at, nseg);
  // Segments that are one run of memory (a header descriptor right before
  // its frame's) become one iovec: a single-iovec readv or writev takes the
  // kernel's fast path.
  size_t out = 0;
  for (size_t i = 0; i < nseg; i++) {
    size_t len = 0;
    const double* seg = a.plan.Segment(at, i);
    uint8_t* p = ResolveSegment(env, data, seg[0], seg[1], seg[2], &len);
    if (p == nullptr) return -EFAULT;
    if (out > 0 && static_cast<uint8_t*>(iov[out - 1].iov_base) + iov[out - 1].iov_len == p) {
      iov[out - 1].iov_len += len;
      continue;
    }
    iov[out].iov_base = p;
    iov[out].iov_len = len;
    out++;
  }
  // Invariant: out <= nseg <= IOV_MAX, so it fits an int.
  return static_cast<int>(out);
}

// Long on purpose: this is the hot loop, one syscall per frame and no allocation.
template <bool kWrite>
static Napi::Value Batch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BatchArgs a;
  if (!ParseBatch(info, &a)) return env.Undefined();
  AddonData* data = GetData(env);
  NewEpoch(data);
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
      // Invariant: a read or write moves at most MAX_RW_COUNT (< INT32_MAX) bytes.
      a.results[done++] = static_cast<int32_t>(rc);
      continue;
    }
    int err = errno == EWOULDBLOCK ? EAGAIN : errno;
    a.results[done++] = -err;
    if (err == EAGAIN) break;
  }
  return Napi::Number::New(env, static_cast<double>(done));
}

// Copies `want` bytes of the plan's segments from position `at` on (running
// on into the following entries, as a merged frame's groups do), after
// skipping `skip` bytes, to dst[dstOffset, dstLen). Returns the bytes copied,
// or -EFAULT for a segment outside its region.
static ssize_t CopyPlan(Napi::Env env, AddonData* data, const Plan& plan, size_t at, size_t skip, size_t want, uint8_t* dst,
                        size_t dstLen, size_t dstOffset) {
  if (dstOffset > dstLen) return -EFAULT;
  size_t room = std::min(dstLen - dstOffset, want);
  size_t pos = at, got = 0;
  while (got < room) {
    const ssize_t n = plan.Segments(pos, 0);
    if (n < 0) break;
    // Invariant: Segments checked the count is in [0, IOV_MAX] and its triples lie inside the plan.
    const size_t cnt = static_cast<size_t>(n);
    for (size_t i = 0; i < cnt && got < room; i++) {
      const double* seg = plan.Segment(pos, i);
      size_t len = 0;
      uint8_t* p = ResolveSegment(env, data, seg[0], seg[1], seg[2], &len);
      if (p == nullptr) return -EFAULT;
      size_t drop = std::min(skip, len);
      skip -= drop;
      size_t take = std::min(len - drop, room - got);
      std::memcpy(dst + dstOffset + got, p + drop, take);
      got += take;
    }
    pos = Plan::Next(pos, cnt);
  }
  return static_cast<ssize_t>(got);
}

// gatherFrames(plan, jobs, count, dst) -> frames copied, or -errno. Copies
// `count` frames out of registered memory in one call, what a capture
// records, with no copy made in JavaScript: jobs holds (at, skip, want,
// dstOffset) per frame, as CopyPlan takes them.
static Napi::Value GatherFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !IsTypedArrayOf(info[0], napi_float64_array) || !IsTypedArrayOf(info[1], napi_float64_array) || !info[3].IsTypedArray()) {
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
  NewEpoch(data);
  const Plan plan{planArr.Data(), planArr.ElementLength()};
  const double* jobs = jobArr.Data();
  for (int64_t k = 0; k < count; k++) {
    const double* j = jobs + k * 4;
    // Invariant: each job's numbers are integers in [0, 2^32).
    for (int f = 0; f < 4; f++)
      if (!(j[f] >= 0 && j[f] < 4294967296.0) || j[f] != std::floor(j[f])) return Errno(env, EINVAL);
    ssize_t r = CopyPlan(env, data, plan, static_cast<size_t>(j[0]), static_cast<size_t>(j[1]), static_cast<size_t>(j[2]), dst, dstLen,
                         static_cast<size_t>(j[3]));
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
  // Invariant: fd was range-checked by ArgInt; p and len are the typed array's own bytes.
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
  exports.Get("constants").As<Napi::Object>().Set("IOV_MAX", static_cast<double>(kMaxSegments));
}

}  // namespace vtap
