// Mergeable receive (VIRTIO 1.2 §5.1.6.4, MRG_RXBUF): the one place where
// receive policy lives in C++. Everything else native is a plain syscall.
//
// readvMergeable(fd, plan, groups, minRoom, maxRoom, results, hold, state) -> frames
//
// What it reads: the plan (io.h) holds `groups` groups, one per receive
// chain the queue has pending, in ring order. Frames are read one per read
// from a cursor over the groups, and a frame takes whole groups from the
// cursor on, as many as its bytes need (num_buffers of them).
//
// What it returns per frame: results[2i] = bytes or -errno, results[2i+1] =
// groups the frame took. It returns how many frames it reported.
//   - A frame larger than the room offered (more than maxRoom, the largest
//     frame, or refused by the TAP with EFAULT) is -EMSGSIZE with no group
//     taken; reading goes on.
//   - EAGAIN (or another errno) is reported with no group taken, and ends
//     the call.
//   - The call also ends, with nothing more reported, when less than
//     minRoom bytes of groups are left, when the held frame does not fit
//     yet, when a frame it reads becomes the held frame, or when results is
//     full.
//
// When it holds a frame: no frame is cut short. Every read offers more than
// maxRoom bytes, so that a frame the TAP would cut short to fit shows as too
// large. A read goes straight into the groups only when they offer that much
// (and are one run of memory, or the call has already seen a frame larger
// than an MTU); otherwise into `hold` (the queue's own buffer, over maxRoom
// bytes), and the frame is then copied into the groups. A frame read into
// `hold` that is larger than the groups left becomes the held frame: nothing
// more is read until a later call has room for it, as QEMU stops reading its
// TAP while the guest's buffers cannot take the frame in hand.
//
// The held-frame state: state[0] is the held frame's length, 0 when none. A
// later call places that frame first, before reading anything. The caller
// only clears it (a reset, or a frame no ring could ever hold).
#include "io.h"

#include <algorithm>
#include <cstring>

namespace vtap {

namespace {

struct MergeArgs {
  int fd;
  Plan plan;
  size_t groups;
  size_t minRoom;
  size_t maxRoom;
  int32_t* results;
  size_t maxFrames;
  uint8_t* hold;
  size_t holdLen;
  int32_t* state;
};

// Checks every argument's type and length; throws and returns false when one is wrong.
bool ParseMergeArgs(const Napi::CallbackInfo& info, MergeArgs* a) {
  Napi::Env env = info.Env();
  int64_t fd, groups, minRoom, maxRoom;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return false;
  if (info.Length() < 8 || !IsTypedArrayOf(info[1], napi_float64_array) || !IsTypedArrayOf(info[5], napi_int32_array) ||
      !IsTypedArrayOf(info[6], napi_uint8_array) || !IsTypedArrayOf(info[7], napi_int32_array)) {
    Napi::TypeError::New(env,
                         "expected (fd, plan: Float64Array, groups, minRoom, maxRoom, results: Int32Array, hold: Uint8Array, "
                         "state: Int32Array)")
        .ThrowAsJavaScriptException();
    return false;
  }
  if (!ArgInt(info, 2, 0, MergeScratch::kMaxGroups, &groups) || !ArgInt(info, 3, 1, INT32_MAX, &minRoom) ||
      !ArgInt(info, 4, 1, INT32_MAX, &maxRoom))
    return false;
  Napi::Float64Array plan = info[1].As<Napi::Float64Array>();
  Napi::Int32Array results = info[5].As<Napi::Int32Array>();
  Napi::Int32Array state = info[7].As<Napi::Int32Array>();
  ViewBytes(env, info[6], &a->hold, &a->holdLen);
  // Invariant: maxRoom was range-checked by ArgInt (1 .. INT32_MAX), so it is a size.
  a->maxRoom = static_cast<size_t>(maxRoom);
  if (a->holdLen <= a->maxRoom || state.ElementLength() < 1) {
    Napi::RangeError::New(env, "hold must have room for maxRoom + 1 bytes, and state one element").ThrowAsJavaScriptException();
    return false;
  }
  // Invariant: fd, groups and minRoom were range-checked by ArgInt.
  a->fd = static_cast<int>(fd);
  a->groups = static_cast<size_t>(groups);
  a->minRoom = static_cast<size_t>(minRoom);
  a->plan = Plan{plan.Data(), plan.ElementLength()};
  a->results = results.Data();
  a->maxFrames = results.ElementLength() / 2;  // two numbers per frame: results is never written past its length
  a->state = state.Data();
  return true;
}

// The plan's groups as iovecs, resolved lazily, only as far as the frames
// read need them: a call that finds one frame waiting does not resolve
// hundreds of groups. Group i is iov[start[i], start[i + 1]), `room[i]` bytes.
struct Groups {
  Napi::Env env;
  AddonData* data;
  const MergeArgs& a;
  struct iovec* const iov;
  size_t* const start;
  size_t* const room;
  size_t pos = 0;       // plan position of the next group to resolve
  size_t segments = 0;  // iovecs resolved
  size_t resolved = 0;  // groups resolved
  bool exhausted = false;

  Groups(Napi::Env e, AddonData* d, const MergeArgs& args)
      : env(e), data(d), a(args), iov(d->merge->iov), start(d->merge->groupStart), room(d->merge->groupRoom) {
    start[0] = 0;
  }

  // Resolves one more group; false when there is none (the end, a malformed
  // group, or a segment outside its region: each ends the usable groups).
  bool Resolve() {
    if (exhausted || resolved >= a.groups) return exhausted = true, false;
    const ssize_t n = a.plan.Segments(pos, 1);
    // Invariant: the group's segments fit both the plan (Segments) and the iovec array.
    if (n < 0 || segments + static_cast<size_t>(n) > kMaxSegments) return exhausted = true, false;
    const size_t count = static_cast<size_t>(n);
    size_t bytes = 0;
    for (size_t i = 0; i < count; i++) {
      const double* seg = a.plan.Segment(pos, i);
      size_t len = 0;
      uint8_t* p = ResolveSegment(env, data, seg[0], seg[1], seg[2], &len);
      if (p == nullptr) return exhausted = true, false;
      iov[segments + i].iov_base = p;
      iov[segments + i].iov_len = len;
      bytes += len;
    }
    room[resolved] = bytes;
    segments += count;
    pos = Plan::Next(pos, count);
    resolved++;
    start[resolved] = segments;
    return true;
  }
};

// Copies n bytes of hold into iov[first, end).
inline void Place(const struct iovec* iov, size_t first, size_t end, const uint8_t* hold, size_t n) {
  size_t from = 0;
  for (size_t i = first; i < end && from < n; i++) {
    size_t k = std::min(n - from, iov[i].iov_len);
    std::memcpy(iov[i].iov_base, hold + from, k);
    from += k;
  }
}

inline ssize_t RetryReadv(int fd, const struct iovec* iov, int count) {
  ssize_t rc;
  do {
    rc = SysReadv(fd, iov, count);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

}  // namespace

// Long on purpose: the hot loop of mergeable receive, one read per frame and no allocation.
Napi::Value ReadvMergeable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MergeArgs a;
  if (!ParseMergeArgs(info, &a)) return env.Undefined();
  int32_t* const results = a.results;
  uint8_t* const hold = a.hold;
  // Invariant: a held frame fits the hold buffer it was read into.
  if (a.state[0] < 0 || static_cast<size_t>(a.state[0]) > a.holdLen) a.state[0] = 0;
  size_t held = static_cast<size_t>(a.state[0]);
  AddonData* data = GetData(env);
  NewEpoch(data);
  Groups groups(env, data, a);
  const struct iovec* const iov = groups.iov;
  const size_t* const groupStart = groups.start;
  const size_t* const groupRoom = groups.room;

  bool bigFrames = false;
  // The frame's room is the window [g, last) of groups: as frames consume
  // groups from its front, it grows at its back to maxRoom (or the last group).
  size_t g = 0, frames = 0, left = 0, last = 0;
  while (frames < a.maxFrames) {
    for (;;) {
      while (last >= groups.resolved && groups.Resolve()) {
      }
      if (last >= groups.resolved || left >= a.maxRoom) break;
      left += groupRoom[last];
      last++;
    }
    const size_t first = groupStart[g], end = groupStart[last];
    ssize_t rc;
    if (held > 0) {
      // The frame held by an earlier call goes first, once it fits.
      if (left < held) break;
      Place(iov, first, end, hold, held);
      // Invariant: held <= holdLen, a typed array's length, so it fits ssize_t.
      rc = static_cast<ssize_t>(held);
      held = 0;
    } else {
      if (left < a.minRoom) break;
      // A readv costs more the more iovecs it is given: one iovec is the
      // kernel's fast path (a plain user buffer), and every further one adds
      // about a fifth to the cost of reading a small frame. Room for a 64 KiB
      // GSO frame can be 30 or more buffers. So the frame is read straight
      // into the buffers only when they can take any frame and are one run
      // of memory, or the call has already seen a frame larger than an MTU;
      // otherwise it is read into hold and copied: copying a small frame
      // costs less than the iovecs.
      size_t mid = g, small = 0;
      while (mid < last && small < a.minRoom) small += groupRoom[mid++];
      size_t run = first + 1;
      while (run < end && static_cast<uint8_t*>(iov[run - 1].iov_base) + iov[run - 1].iov_len == iov[run].iov_base) run++;
      // More room than the largest frame: a frame the TAP cut short to fit
      // (it does so silently) shows as more than maxRoom bytes.
      const bool direct = left > a.maxRoom && (bigFrames || run == end);
      if (direct) {
        // One run of memory is one iovec.
        struct iovec one = {iov[first].iov_base, left};
        // Invariant: end - first <= IOV_MAX (Groups never resolves more), so it fits an int.
        rc = run == end ? RetryReadv(a.fd, &one, 1) : RetryReadv(a.fd, &iov[first], static_cast<int>(end - first));
      } else {
        do {
          rc = SysRead(a.fd, hold, a.maxRoom + 1);
        } while (rc < 0 && errno == EINTR);
        // Invariant: left (the room of at most IOV_MAX segments of registered regions) and maxRoom fit ssize_t.
        if (rc > static_cast<ssize_t>(left) && rc <= static_cast<ssize_t>(a.maxRoom)) {
          // Larger than the buffers left: hold it for a later call.
          held = static_cast<size_t>(rc);
          break;
        }
        if (rc > 0 && rc <= static_cast<ssize_t>(left)) Place(iov, first, end, hold, static_cast<size_t>(rc));
      }
      if (rc > static_cast<ssize_t>(small)) bigFrames = true;
      // A frame larger than the room offered: the TAP cuts it short to fit
      // (silently: the read fills all the room, which is more than maxRoom),
      // others refuse it (EFAULT). Gone either way: reported, no group
      // taken, and reading goes on.
      if ((rc < 0 && errno == EFAULT) || (direct ? rc >= static_cast<ssize_t>(left) : rc > static_cast<ssize_t>(a.maxRoom))) {
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
    // Invariant: a read returns at most MAX_RW_COUNT (< INT32_MAX) bytes, a held frame at most maxRoom; used <= kMaxGroups.
    results[frames * 2] = static_cast<int32_t>(rc);
    results[frames * 2 + 1] = static_cast<int32_t>(used);
    frames++;
    g += used;
    left -= got;
  }
  // Invariant: held came from state[0] or from a read of at most maxRoom <= INT32_MAX bytes.
  a.state[0] = static_cast<int32_t>(held);
  return Napi::Number::New(env, static_cast<double>(frames));
}

}  // namespace vtap
