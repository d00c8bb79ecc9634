// TUN/TAP character-device ioctls (Linux include/uapi/linux/if_tun.h).
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

// Older system headers lack the UDP segmentation offload bits (Linux 6.2).
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

namespace vtap {

static bool CopyName(Napi::Env env, const std::string& name, char (&dst)[IFNAMSIZ]) {
  // Invariant: the name plus its NUL fits IFNAMSIZ; TypeScript checks first, this is the backstop.
  if (name.size() >= IFNAMSIZ) {
    Napi::RangeError::New(env, "interface name longer than " + std::to_string(IFNAMSIZ - 1) + " bytes")
        .ThrowAsJavaScriptException();
    return false;
  }
  memset(dst, 0, IFNAMSIZ);
  memcpy(dst, name.data(), name.size());
  return true;
}

// open(path) -> fd | -errno. Non-blocking and close-on-exec.
static Napi::Value Open(const Napi::CallbackInfo& info) {
  std::string path;
  if (!ArgString(info, 0, &path)) return info.Env().Undefined();
  int fd = open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), fd);
}

// close(fd) -> 0 | -errno.
static Napi::Value Close(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return info.Env().Undefined();
  if (close(static_cast<int>(fd)) < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// tunSetIff(fd, name, flags) -> 0 | -errno. The kernel-chosen name is read back with tunGetIff.
static Napi::Value SetIff(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, flags;
  std::string name;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgString(info, 1, &name) || !ArgInt(info, 2, 0, 0xffff, &flags))
    return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!CopyName(env, name, ifr.ifr_name)) return env.Undefined();
  ifr.ifr_flags = static_cast<short>(flags);
  if (ioctl(static_cast<int>(fd), TUNSETIFF, &ifr) < 0) return Errno(env, errno);
  return Napi::Number::New(env, 0);
}

// tunGetIff(fd) -> { name, flags } | -errno.
static Napi::Value GetIff(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(static_cast<int>(fd), TUNGETIFF, &ifr) < 0) return Errno(env, errno);
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  Napi::Object out = Napi::Object::New(env);
  out.Set("name", Napi::String::New(env, ifr.ifr_name));
  out.Set("flags", Napi::Number::New(env, static_cast<unsigned short>(ifr.ifr_flags)));
  return out;
}

// tunGetFeatures(fd) -> flags the driver supports | -errno.
static Napi::Value GetFeatures(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return info.Env().Undefined();
  unsigned int features = 0;
  if (ioctl(static_cast<int>(fd), TUNGETFEATURES, &features) < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), features);
}

// Requests whose argument is an unsigned long passed by value.
static Napi::Value ValueIoctl(const Napi::CallbackInfo& info, unsigned long request, int64_t max) {
  int64_t fd, value;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 0, max, &value)) return info.Env().Undefined();
  if (ioctl(static_cast<int>(fd), request, static_cast<unsigned long>(value)) < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

static Napi::Value SetOffload(const Napi::CallbackInfo& info) { return ValueIoctl(info, TUNSETOFFLOAD, 0xffff); }
static Napi::Value SetPersist(const Napi::CallbackInfo& info) { return ValueIoctl(info, TUNSETPERSIST, 1); }
static Napi::Value SetOwner(const Napi::CallbackInfo& info) { return ValueIoctl(info, TUNSETOWNER, UINT32_MAX); }
static Napi::Value SetGroup(const Napi::CallbackInfo& info) { return ValueIoctl(info, TUNSETGROUP, UINT32_MAX); }

// Requests whose argument is a pointer to an int.
static Napi::Value IntPtrIoctl(const Napi::CallbackInfo& info, unsigned long request) {
  int64_t fd, value;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, INT32_MIN, INT32_MAX, &value))
    return info.Env().Undefined();
  int v = static_cast<int>(value);
  if (ioctl(static_cast<int>(fd), request, &v) < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

static Napi::Value SetVnetHdrSz(const Napi::CallbackInfo& info) { return IntPtrIoctl(info, TUNSETVNETHDRSZ); }

// tunSetQueue(fd, attach) -> 0 | -errno. Enables or disables one queue of a multi-queue TAP.
static Napi::Value SetQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, attach;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 0, 1, &attach)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = attach ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
  if (ioctl(static_cast<int>(fd), TUNSETQUEUE, &ifr) < 0) return Errno(env, errno);
  return Napi::Number::New(env, 0);
}

// socketPair() -> [fd, fd] | -errno. A SOCK_SEQPACKET pair keeps message
// boundaries as a TAP keeps frame boundaries: a stand-in TAP for tests and
// tools that need no privileges. Non-blocking and close-on-exec, as open().
static Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) return Errno(env, errno);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, sv[0]));
  out.Set(1u, Napi::Number::New(env, sv[1]));
  return out;
}

void InitTun(Napi::Env env, Napi::Object exports) {
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("tunSetIff", Napi::Function::New(env, SetIff, "tunSetIff"));
  exports.Set("tunGetIff", Napi::Function::New(env, GetIff, "tunGetIff"));
  exports.Set("tunGetFeatures", Napi::Function::New(env, GetFeatures, "tunGetFeatures"));
  exports.Set("tunSetOffload", Napi::Function::New(env, SetOffload, "tunSetOffload"));
  exports.Set("tunSetPersist", Napi::Function::New(env, SetPersist, "tunSetPersist"));
  exports.Set("tunSetOwner", Napi::Function::New(env, SetOwner, "tunSetOwner"));
  exports.Set("tunSetGroup", Napi::Function::New(env, SetGroup, "tunSetGroup"));
  exports.Set("tunSetVnetHdrSz", Napi::Function::New(env, SetVnetHdrSz, "tunSetVnetHdrSz"));
  exports.Set("tunSetQueue", Napi::Function::New(env, SetQueue, "tunSetQueue"));

  Napi::Object c = Napi::Object::New(env);
  c.Set("IFF_TUN", IFF_TUN);
  c.Set("IFF_TAP", IFF_TAP);
  c.Set("IFF_NO_PI", IFF_NO_PI);
  c.Set("IFF_VNET_HDR", IFF_VNET_HDR);
  c.Set("IFF_MULTI_QUEUE", IFF_MULTI_QUEUE);
  c.Set("IFF_NAPI", IFF_NAPI);
  c.Set("TUN_F_CSUM", TUN_F_CSUM);
  c.Set("TUN_F_TSO4", TUN_F_TSO4);
  c.Set("TUN_F_TSO6", TUN_F_TSO6);
  c.Set("TUN_F_TSO_ECN", TUN_F_TSO_ECN);
  c.Set("TUN_F_UFO", TUN_F_UFO);
  c.Set("TUN_F_USO4", TUN_F_USO4);
  c.Set("TUN_F_USO6", TUN_F_USO6);
  c.Set("IFNAMSIZ", IFNAMSIZ);
  exports.Set("constants", c);
}

}  // namespace vtap
