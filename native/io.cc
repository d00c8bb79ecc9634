// Batched vectored I/O. A plan is a Float64Array of frames, each written as
//   nseg, (region, offset, length) x nseg
// One call performs one readv or writev per frame. Results are bytes or
// -errno per frame, never an exception: the hot path returns numbers.
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmath>

namespace vtap {

static constexpr int kMaxSegments = IOV_MAX;

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

// Builds the iovecs of the frame at *pos. Returns the segment count, -EINVAL
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
  for (size_t i = 0; i < nseg; i++) {
    size_t len = 0;
    uint8_t* p = ResolveSegment(env, data, seg[i * 3], seg[i * 3 + 1], seg[i * 3 + 2], &len);
    if (p == nullptr) return -EFAULT;
    iov[i].iov_base = p;
    iov[i].iov_len = len;
  }
  return static_cast<int>(nseg);
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
      rc = kWrite ? writev(a.fd, iov, nseg) : readv(a.fd, iov, nseg);
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
  exports.Set("writeFrame", Napi::Function::New(env, Single<true>, "writeFrame"));
  exports.Set("readFrame", Napi::Function::New(env, Single<false>, "readFrame"));
  exports.Get("constants").As<Napi::Object>().Set("IOV_MAX", kMaxSegments);
}

}  // namespace vtap
