// Link configuration by ioctl on a datagram socket (netdevice(7)), so that
// virtio-tap never runs `ip`: flags, MTU, MAC, IPv4 address, bridges.
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace vtap {

// Runs one ioctl on a fresh AF_INET socket; returns 0 or -errno.
static int SockIoctl(unsigned long request, void* arg) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  int rc = ioctl(s, request, arg);
  int err = errno;
  close(s);
  return rc < 0 ? -err : 0;
}

// Reads the interface name argument into ifr; throws on a bad name.
static bool IfreqFor(const Napi::CallbackInfo& info, struct ifreq* ifr) {
  std::string name;
  if (!ArgString(info, 0, &name)) return false;
  // Invariant: the name plus its NUL fits IFNAMSIZ.
  if (name.empty() || name.size() >= IFNAMSIZ) {
    Napi::RangeError::New(info.Env(), "interface name must be 1 to " + std::to_string(IFNAMSIZ - 1) + " bytes")
        .ThrowAsJavaScriptException();
    return false;
  }
  memset(ifr, 0, sizeof *ifr);
  memcpy(ifr->ifr_name, name.data(), name.size());
  return true;
}

// Argument 1 as exactly 6 bytes of a typed array.
static bool MacArg(const Napi::CallbackInfo& info, uint8_t** mac) {
  size_t len = 0;
  // Invariant: the copy below moves exactly 6 bytes, so the view must hold exactly 6.
  if (info.Length() < 2 || !ViewBytes(info.Env(), info[1], mac, &len) || len != 6) {
    Napi::TypeError::New(info.Env(), "argument 1 must be a 6-byte Uint8Array").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

static Napi::Value Result(Napi::Env env, int rc, double value) {
  return Napi::Number::New(env, rc < 0 ? rc : value);
}

static Napi::Value GetFlags(const Napi::CallbackInfo& info) {
  struct ifreq ifr;
  if (!IfreqFor(info, &ifr)) return info.Env().Undefined();
  int rc = SockIoctl(SIOCGIFFLAGS, &ifr);
  return Result(info.Env(), rc, static_cast<unsigned short>(ifr.ifr_flags));
}

static Napi::Value SetFlags(const Napi::CallbackInfo& info) {
  struct ifreq ifr;
  int64_t flags;
  if (!IfreqFor(info, &ifr) || !ArgInt(info, 1, 0, 0xffff, &flags)) return info.Env().Undefined();
  ifr.ifr_flags = static_cast<short>(flags);
  return Result(info.Env(), SockIoctl(SIOCSIFFLAGS, &ifr), 0);
}

static Napi::Value GetMtu(const Napi::CallbackInfo& info) {
  struct ifreq ifr;
  if (!IfreqFor(info, &ifr)) return info.Env().Undefined();
  int rc = SockIoctl(SIOCGIFMTU, &ifr);
  return Result(info.Env(), rc, ifr.ifr_mtu);
}

static Napi::Value SetMtu(const Napi::CallbackInfo& info) {
  struct ifreq ifr;
  int64_t mtu;
  if (!IfreqFor(info, &ifr) || !ArgInt(info, 1, 0, INT32_MAX, &mtu)) return info.Env().Undefined();
  ifr.ifr_mtu = static_cast<int>(mtu);
  return Result(info.Env(), SockIoctl(SIOCSIFMTU, &ifr), 0);
}

static Napi::Value GetIndex(const Napi::CallbackInfo& info) {
  struct ifreq ifr;
  if (!IfreqFor(info, &ifr)) return info.Env().Undefined();
  int rc = SockIoctl(SIOCGIFINDEX, &ifr);
  return Result(info.Env(), rc, ifr.ifr_ifindex);
}

// linkGetMac(name, out: Uint8Array(6)) -> 0 | -errno.
static Napi::Value GetMac(const Napi::CallbackInfo& info) {
  struct ifreq ifr;
  if (!IfreqFor(info, &ifr)) return info.Env().Undefined();
  uint8_t* out = nullptr;
  if (!MacArg(info, &out)) return info.Env().Undefined();
  int rc = SockIoctl(SIOCGIFHWADDR, &ifr);
  if (rc == 0) memcpy(out, ifr.ifr_hwaddr.sa_data, 6);
  return Result(info.Env(), rc, 0);
}

// linkSetMac(name, mac: Uint8Array(6)) -> 0 | -errno.
static Napi::Value SetMac(const Napi::CallbackInfo& info) {
  struct ifreq ifr;
  if (!IfreqFor(info, &ifr)) return info.Env().Undefined();
  uint8_t* mac = nullptr;
  if (!MacArg(info, &mac)) return info.Env().Undefined();
  ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
  return Result(info.Env(), SockIoctl(SIOCSIFHWADDR, &ifr), 0);
}

// linkSetIpv4(name, address: u32 host order, prefixLength) -> 0 | -errno.
static Napi::Value SetIpv4(const Napi::CallbackInfo& info) {
  struct ifreq ifr;
  int64_t addr, prefix;
  if (!IfreqFor(info, &ifr) || !ArgInt(info, 1, 0, UINT32_MAX, &addr) || !ArgInt(info, 2, 0, 32, &prefix))
    return info.Env().Undefined();
  struct sockaddr_in* sin = reinterpret_cast<struct sockaddr_in*>(&ifr.ifr_addr);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(static_cast<uint32_t>(addr));
  int rc = SockIoctl(SIOCSIFADDR, &ifr);
  if (rc < 0) return Result(info.Env(), rc, 0);
  uint32_t mask = prefix == 0 ? 0 : (0xffffffffu << (32 - prefix));
  sin = reinterpret_cast<struct sockaddr_in*>(&ifr.ifr_netmask);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(mask);
  return Result(info.Env(), SockIoctl(SIOCSIFNETMASK, &ifr), 0);
}

// bridgeCreate(name) / bridgeDelete(name) -> 0 | -errno.
static Napi::Value BridgeNameIoctl(const Napi::CallbackInfo& info, unsigned long request) {
  struct ifreq ifr;
  if (!IfreqFor(info, &ifr)) return info.Env().Undefined();
  return Result(info.Env(), SockIoctl(request, ifr.ifr_name), 0);
}
static Napi::Value BridgeCreate(const Napi::CallbackInfo& info) { return BridgeNameIoctl(info, SIOCBRADDBR); }
static Napi::Value BridgeDelete(const Napi::CallbackInfo& info) { return BridgeNameIoctl(info, SIOCBRDELBR); }

// bridgeAddIf(bridge, ifindex) / bridgeDelIf(bridge, ifindex) -> 0 | -errno.
static Napi::Value BridgeIfIoctl(const Napi::CallbackInfo& info, unsigned long request) {
  struct ifreq ifr;
  int64_t index;
  if (!IfreqFor(info, &ifr) || !ArgInt(info, 1, 1, INT32_MAX, &index)) return info.Env().Undefined();
  ifr.ifr_ifindex = static_cast<int>(index);
  return Result(info.Env(), SockIoctl(request, &ifr), 0);
}
static Napi::Value BridgeAddIf(const Napi::CallbackInfo& info) { return BridgeIfIoctl(info, SIOCBRADDIF); }
static Napi::Value BridgeDelIf(const Napi::CallbackInfo& info) { return BridgeIfIoctl(info, SIOCBRDELIF); }

void InitLink(Napi::Env env, Napi::Object exports) {
  exports.Set("linkGetFlags", Napi::Function::New(env, GetFlags, "linkGetFlags"));
  exports.Set("linkSetFlags", Napi::Function::New(env, SetFlags, "linkSetFlags"));
  exports.Set("linkGetMtu", Napi::Function::New(env, GetMtu, "linkGetMtu"));
  exports.Set("linkSetMtu", Napi::Function::New(env, SetMtu, "linkSetMtu"));
  exports.Set("linkGetIndex", Napi::Function::New(env, GetIndex, "linkGetIndex"));
  exports.Set("linkGetMac", Napi::Function::New(env, GetMac, "linkGetMac"));
  exports.Set("linkSetMac", Napi::Function::New(env, SetMac, "linkSetMac"));
  exports.Set("linkSetIpv4", Napi::Function::New(env, SetIpv4, "linkSetIpv4"));
  exports.Set("bridgeCreate", Napi::Function::New(env, BridgeCreate, "bridgeCreate"));
  exports.Set("bridgeDelete", Napi::Function::New(env, BridgeDelete, "bridgeDelete"));
  exports.Set("bridgeAddIf", Napi::Function::New(env, BridgeAddIf, "bridgeAddIf"));
  exports.Set("bridgeDelIf", Napi::Function::New(env, BridgeDelIf, "bridgeDelIf"));
  Napi::Object c = exports.Get("constants").As<Napi::Object>();
  c.Set("IFF_UP", static_cast<int>(IFF_UP));
  c.Set("IFF_RUNNING", static_cast<int>(IFF_RUNNING));
  c.Set("IFF_PROMISC", static_cast<int>(IFF_PROMISC));
}

}  // namespace vtap
