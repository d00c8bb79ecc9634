// What a vhost-user backend needs of the system (QEMU docs/interop/vhost-user.rst):
// Unix stream sockets, SCM_RIGHTS fd passing, memory-region fds mapped
// shared, and eventfds. No vhost-user logic lives here.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <unordered_map>

namespace vtap {

class MappingTable;

// A mapping handed to JavaScript as an external ArrayBuffer. The buffer's
// finalizer deletes it; `table` is null once the table is gone. While
// `creating`, the finalizer only notes that it ran (`refused`): Node calls it
// at once when it refuses the buffer (a length over its limit), and the one
// who made the mapping frees it then, once.
struct Mapping {
  void* ptr;
  size_t size;
  bool mapped;
  MappingTable* table;
  bool creating;
  bool refused;
};

// The mappings of one environment, kept in its instance data (addon.cc), so a
// worker's environment has its own. unmap() finds a buffer's mapping here;
// when the environment goes, what is still mapped is unmapped, once.
class MappingTable {
 public:
  MappingTable() = default;
  MappingTable(const MappingTable&) = delete;
  MappingTable& operator=(const MappingTable&) = delete;
  ~MappingTable() {
    for (auto& [ptr, m] : byPtr_) {
      if (m->mapped) munmap(m->ptr, m->size);
      m->mapped = false;
      m->table = nullptr;  // the buffer's finalizer, if it still runs, deletes m
    }
  }
  // An address unmapped and mapped again replaces the old entry; the old
  // mapping's finalizer then no longer touches the table.
  void Add(Mapping* m) {
    auto [it, fresh] = byPtr_.try_emplace(m->ptr, m);
    if (!fresh) {
      it->second->table = nullptr;
      it->second = m;
    }
  }
  void Remove(Mapping* m) {
    auto it = byPtr_.find(m->ptr);
    if (it != byPtr_.end() && it->second == m) byPtr_.erase(it);
  }
  Mapping* Find(void* ptr) const {
    auto it = byPtr_.find(ptr);
    return it == byPtr_.end() ? nullptr : it->second;
  }

 private:
  std::unordered_map<void*, Mapping*> byPtr_;
};

MappingTable* NewMappingTable() { return new MappingTable(); }
void DeleteMappingTable(MappingTable* table) { delete table; }
MappingTable* GetMappings(Napi::Env env);  // addon.cc: this environment's table

static bool FillSockaddr(Napi::Env env, const std::string& path, struct sockaddr_un* sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  // Invariant: the path and its NUL fit sun_path.
  if (path.empty() || path.size() >= sizeof sa->sun_path) {
    Napi::RangeError::New(env, "socket path must be 1 to " + std::to_string(sizeof sa->sun_path - 1) + " bytes")
        .ThrowAsJavaScriptException();
    return false;
  }
  memcpy(sa->sun_path, path.data(), path.size());
  return true;
}

// unixListen(path) -> fd | -errno. Non-blocking, close-on-exec.
static Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  struct sockaddr_un sa;
  if (!ArgString(info, 0, &path) || !FillSockaddr(env, path, &sa)) return env.Undefined();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno(env, errno);
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0 || listen(fd, 8) < 0) {
    int err = errno;
    close(fd);
    return Errno(env, err);
  }
  return Napi::Number::New(env, fd);
}

// unixConnect(path) -> fd | -errno. The socket is non-blocking once connected.
static Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  struct sockaddr_un sa;
  if (!ArgString(info, 0, &path) || !FillSockaddr(env, path, &sa)) return env.Undefined();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno(env, errno);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0) {
    int err = errno;
    close(fd);
    return Errno(env, err);
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  return Napi::Number::New(env, fd);
}

// A socket call's result as JavaScript sees it: the count, or -errno with
// EWOULDBLOCK reported as EAGAIN. Call it right after the call, errno intact.
static Napi::Value SocketResult(Napi::Env env, ssize_t n) {
  if (n < 0) return Errno(env, errno == EWOULDBLOCK ? EAGAIN : errno);
  return Napi::Number::New(env, static_cast<double>(n));
}

// unixAccept(fd) -> fd | -errno (-EAGAIN when nobody waits).
static Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return info.Env().Undefined();
  return SocketResult(info.Env(), accept4(static_cast<int>(fd), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

static constexpr int kMaxFds = 32;

// The (fd, buffer) that start recvWithFds and sendWithFds; a TypeError naming
// `usage` when they are not there.
static bool ArgFdAndBuffer(const Napi::CallbackInfo& info, const char* usage, int* fd, uint8_t** buf, size_t* len) {
  int64_t v;
  if (!ArgInt(info, 0, 0, INT32_MAX, &v)) return false;
  if (info.Length() < 2 || !ViewBytes(info.Env(), info[1], buf, len)) {
    Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
    return false;
  }
  *fd = static_cast<int>(v);
  return true;
}

// The bytes of value when it is an Int32Array (an fd list); false otherwise.
static bool Int32Bytes(Napi::Env env, Napi::Value value, uint8_t** data, size_t* length) {
  return value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array &&
         ViewBytes(env, value, data, length);
}

// A message of the one buffer iov, no control data yet.
static void OneBufferMsg(struct msghdr* msg, struct iovec* iov) {
  memset(msg, 0, sizeof *msg);
  msg->msg_iov = iov;
  msg->msg_iovlen = 1;
}

// recvWithFds(fd, buf, fds: Int32Array) -> bytes | -errno. fds[0] = how many
// fds came (SCM_RIGHTS, close-on-exec), fds[1..] the fds. fds that do not fit
// are closed and fds[0] is set to -1 so the caller can refuse the message.
static Napi::Value RecvWithFds(const Napi::CallbackInfo& info) {
  static const char kUsage[] = "expected (fd, buffer, fds: Int32Array)";
  Napi::Env env = info.Env();
  int fd;
  uint8_t* buf = nullptr;
  size_t len = 0;
  uint8_t* fdsRaw = nullptr;
  size_t fdsLen = 0;
  if (!ArgFdAndBuffer(info, kUsage, &fd, &buf, &len)) return env.Undefined();
  if (info.Length() < 3 || !Int32Bytes(env, info[2], &fdsRaw, &fdsLen) || fdsLen < 4) {
    Napi::TypeError::New(env, kUsage).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int32_t* fds = reinterpret_cast<int32_t*>(fdsRaw);
  size_t room = fdsLen / 4 - 1;
  struct iovec iov = {buf, len};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  struct msghdr msg;
  OneBufferMsg(&msg, &iov);
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);  // an inherited socket (--fd) may be blocking
  } while (n < 0 && errno == EINTR);
  if (n < 0) return SocketResult(env, n);
  int count = 0;
  bool overflow = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* in = reinterpret_cast<const int*>(CMSG_DATA(c));
    for (size_t i = 0; i < k; i++) {
      // Invariant: only as many fds as the caller's array holds are handed over; the rest are closed.
      if (static_cast<size_t>(count) < room) fds[1 + count++] = in[i];
      else {
        close(in[i]);
        overflow = true;
      }
    }
  }
  // A message with more fds than fit is refused whole: every fd it brought is closed, none handed over.
  if (overflow) {
    for (int i = 0; i < count; i++) close(fds[1 + i]);
    count = 0;
  }
  fds[0] = overflow ? -1 : count;
  return SocketResult(env, n);
}

// sendWithFds(fd, buf, fds?: Int32Array) -> bytes | -errno.
static Napi::Value SendWithFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint8_t* buf = nullptr;
  size_t len = 0;
  if (!ArgFdAndBuffer(info, "expected (fd, buffer, fds?)", &fd, &buf, &len)) return env.Undefined();
  struct iovec iov = {buf, len};
  struct msghdr msg;
  OneBufferMsg(&msg, &iov);
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  size_t nfds = 0;
  if (info.Length() >= 3 && info[2].IsTypedArray()) {
    uint8_t* raw = nullptr;
    size_t rawLen = 0;
    if (!Int32Bytes(env, info[2], &raw, &rawLen)) {
      Napi::TypeError::New(env, "fds must be an Int32Array").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    nfds = rawLen / 4;
    // Invariant: at most kMaxFds fds fit the control buffer.
    if (nfds > static_cast<size_t>(kMaxFds)) return Errno(env, EINVAL);
    if (nfds > 0) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), raw, sizeof(int) * nfds);
    }
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return SocketResult(env, n);
}

// memfdCreate(name, size, { sealable }?) -> fd | -errno: shared memory such
// as a VMM's RAM; sealable: MFD_ALLOW_SEALING, as QEMU's memory-backend-memfd.
static Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  int64_t size;
  if (!ArgString(info, 0, &name) || !ArgInt(info, 1, 0, INT64_C(1) << 40, &size)) return env.Undefined();
  bool sealable = info.Length() >= 3 && info[2].IsObject() && info[2].As<Napi::Object>().Get("sealable").ToBoolean().Value();
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0));
  if (fd < 0) return Errno(env, errno);
  if (ftruncate(fd, static_cast<off_t>(size)) < 0) {
    int err = errno;
    close(fd);
    return Errno(env, err);
  }
  return Napi::Number::New(env, fd);
}

static void FinalizeMapping(napi_env /*env*/, void* /*data*/, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  if (m->creating) {
    m->refused = true;
    return;
  }
  if (m->mapped) munmap(m->ptr, m->size);
  if (m->table != nullptr) m->table->Remove(m);
  delete m;
}

// mmapShared(fd, size, offset) -> ArrayBuffer | -errno. MAP_SHARED, read-write.
// -EFBIG when Node refuses an ArrayBuffer that large (over 4 GiB in Node 20):
// the mapping is undone, once, and no exception is left pending.
static Napi::Value MmapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, size, offset;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 1, INT64_C(1) << 40, &size) ||
      !ArgInt(info, 2, 0, INT64_C(1) << 50, &offset))
    return env.Undefined();
  void* p = mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd),
                 static_cast<off_t>(offset));
  if (p == MAP_FAILED) return Errno(env, errno);
  MappingTable* table = GetMappings(env);
  Mapping* m = new Mapping{p, static_cast<size_t>(size), true, table, true, false};
  table->Add(m);
  napi_value ab;
  napi_status st = napi_create_external_arraybuffer(env, p, m->size, FinalizeMapping, m, &ab);
  m->creating = false;
  if (st != napi_ok || m->refused) {
    // Invariant: Node either made the buffer (and owns m through the finalizer) or refused it; here it refused.
    bool pending = false;
    napi_value ignored;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &ignored);
    munmap(p, m->size);
    table->Remove(m);
    delete m;
    return Errno(env, EFBIG);
  }
  return Napi::Value(env, ab);
}

// unmap(arrayBuffer) -> 0 | -EINVAL. Detaches the buffer first, so that every
// view of it reads as empty, then unmaps: no JavaScript access can reach it.
static Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) {
    Napi::TypeError::New(env, "unmap expects the ArrayBuffer mmapShared returned").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  void* p = nullptr;
  size_t len = 0;
  if (napi_get_arraybuffer_info(env, info[0], &p, &len) != napi_ok) return Errno(env, EINVAL);
  Mapping* m = p == nullptr ? nullptr : GetMappings(env)->Find(p);
  if (m == nullptr || !m->mapped) return Errno(env, EINVAL);
  if (napi_detach_arraybuffer(env, info[0]) != napi_ok) return Errno(env, EINVAL);
  munmap(m->ptr, m->size);
  m->mapped = false;
  return Napi::Number::New(env, 0);
}

// eventfdCreate({ blocking }?) -> fd | -errno (close-on-exec; non-blocking
// unless asked otherwise, which only tests of a hostile front-end do).
static Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  bool blocking = info.Length() >= 1 && info[0].IsObject() && info[0].As<Napi::Object>().Get("blocking").ToBoolean().Value();
  int fd = eventfd(0, (blocking ? 0 : EFD_NONBLOCK) | EFD_CLOEXEC);
  if (fd < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), fd);
}

// eventfdWrite(fd, value?: bigint) -> 0 | -errno: adds 1 (a kick or a call), or value.
static Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return info.Env().Undefined();
  uint64_t one = 1;
  if (info.Length() >= 2 && info[1].IsBigInt()) {
    bool lossless = false;
    one = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  }
  if (write(static_cast<int>(fd), &one, sizeof one) < 0) return Errno(info.Env(), errno == EWOULDBLOCK ? EAGAIN : errno);
  return Napi::Number::New(info.Env(), 0);
}

// eventfdRead(fd) -> count (at least 1) | 0 at end of file | -errno (-EAGAIN when nothing waits).
// Also reads the 8-byte counts a pipe or socket pair carries instead of an eventfd.
static Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return info.Env().Undefined();
  uint64_t v = 0;
  const ssize_t n = read(static_cast<int>(fd), &v, sizeof v);
  if (n < 0) return Errno(info.Env(), errno == EWOULDBLOCK ? EAGAIN : errno);
  // 0 is end of file (a pipe or socket whose writer is gone); an eventfd never
  // reads 0, and a pipe or socket that gave bytes is at least one kick.
  if (n == 0) return Napi::Number::New(info.Env(), 0);
  return Napi::Number::New(info.Env(), v > 0 ? static_cast<double>(v) : 1);
}

void InitVhost(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept, "unixAccept"));
  exports.Set("recvWithFds", Napi::Function::New(env, RecvWithFds, "recvWithFds"));
  exports.Set("sendWithFds", Napi::Function::New(env, SendWithFds, "sendWithFds"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("mmapShared", Napi::Function::New(env, MmapShared, "mmapShared"));
  exports.Set("unmap", Napi::Function::New(env, Unmap, "unmap"));
  exports.Set("eventfdCreate", Napi::Function::New(env, EventfdCreate, "eventfdCreate"));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite, "eventfdWrite"));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead, "eventfdRead"));
}

}  // namespace vtap
