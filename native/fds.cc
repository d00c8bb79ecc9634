// What a received fd really is, for checking what a vhost-user front-end
// hands over before anything is installed: its kind, its size and its seals;
// and the few fcntl/ftruncate calls that checking and the tests need.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vtap {

// The kind of an fd: by its mode, and for anonymous inodes by the name the
// kernel gives them in /proc/self/fd ("anon_inode:[eventfd]").
static const char* FdKind(int fd, const struct stat& st) {
  switch (st.st_mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFIFO: return "pipe";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    default: break;
  }
  char path[64];
  char target[128];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  // Invariant: readlink does not terminate; at most sizeof target - 1 bytes are read.
  ssize_t len = readlink(path, target, sizeof target - 1);
  if (len < 0) return "other";
  target[len] = '\0';
  if (strcmp(target, "anon_inode:[eventfd]") == 0) return "eventfd";
  return "other";
}

// fdInfo(fd) -> { kind, size, seals } | -errno. size: st_size (regular files);
// seals: F_GET_SEALS, or -errno where the file cannot be sealed.
static Napi::Value FdInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return env.Undefined();
  struct stat st;
  if (fstat(static_cast<int>(fd), &st) < 0) return Errno(env, errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", Napi::String::New(env, FdKind(static_cast<int>(fd), st)));
  // Invariant: st_size of a regular file is >= 0; as a double it is exact below 2^53 (the caller checks).
  o.Set("size", Napi::Number::New(env, S_ISREG(st.st_mode) ? static_cast<double>(st.st_size) : 0));
  int seals = fcntl(static_cast<int>(fd), F_GET_SEALS);
  o.Set("seals", Napi::Number::New(env, seals < 0 ? -static_cast<double>(errno) : seals));
  return o;
}

// sealShrink(fd) -> 0 | -errno: F_ADD_SEALS F_SEAL_SHRINK, so the file can no longer shrink under a mapping.
static Napi::Value SealShrink(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return info.Env().Undefined();
  if (fcntl(static_cast<int>(fd), F_ADD_SEALS, F_SEAL_SHRINK) < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// setNonBlocking(fd) -> 0 | -errno: O_NONBLOCK on the file description.
static Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return info.Env().Undefined();
  int fl = fcntl(static_cast<int>(fd), F_GETFL);
  if (fl < 0 || fcntl(static_cast<int>(fd), F_SETFL, fl | O_NONBLOCK) < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

// ftruncate(fd, size) -> 0 | -errno (tests: a front-end that shrinks its memory).
static Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  int64_t fd, size;
  if (!ArgInt(info, 0, 0, INT32_MAX, &fd) || !ArgInt(info, 1, 0, INT64_C(1) << 50, &size)) return info.Env().Undefined();
  if (ftruncate(static_cast<int>(fd), static_cast<off_t>(size)) < 0) return Errno(info.Env(), errno);
  return Napi::Number::New(info.Env(), 0);
}

void InitFds(Napi::Env env, Napi::Object exports) {
  exports.Set("fdInfo", Napi::Function::New(env, FdInfo, "fdInfo"));
  exports.Set("sealShrink", Napi::Function::New(env, SealShrink, "sealShrink"));
  exports.Set("setNonBlocking", Napi::Function::New(env, SetNonBlocking, "setNonBlocking"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
}

}  // namespace vtap
