// Readiness with uv_poll_t on the loop of the calling environment, so that a
// TAP queue can be served from the main thread or from a worker thread.
#include "common.h"

#include <uv.h>

namespace vtap {

class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {InstanceMethod<&Poller::Start>("start"), InstanceMethod<&Poller::Close>("close")});
  }

  // new Poller(fd, callback(status, events))
  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    int64_t fd;
    if (!ArgInt(info, 0, 0, INT32_MAX, &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "Poller expects (fd, callback)").ThrowAsJavaScriptException();
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "no event loop for this environment").ThrowAsJavaScriptException();
      return;
    }
    handle_ = new uv_poll_t;
    int rc = uv_poll_init(loop, handle_, static_cast<int>(fd));
    if (rc != 0) {
      delete handle_;
      handle_ = nullptr;
      Napi::Error err = Napi::Error::New(env, std::string("uv_poll_init failed: ") + uv_strerror(rc));
      err.Set("errno", Napi::Number::New(env, rc));
      err.ThrowAsJavaScriptException();
      return;
    }
    handle_->data = this;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    env_ = env;
    GetData(env)->pollers.insert(this);
  }

  ~Poller() override { CloseHandle(); }

  // Stops watching and closes the handle; safe to call more than once. After
  // this returns the fd is out of the loop's epoll set and may be closed.
  void CloseHandle() {
    if (handle_ == nullptr) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
    if (!callback_.IsEmpty()) callback_.Reset();
    if (env_ != nullptr) GetData(env_)->pollers.erase(this);
  }

 private:
  // start(events: 1 readable | 2 writable) -> 0 | -errno. events 0 stops.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t events;
    if (!ArgInt(info, 0, 0, 3, &events)) return env.Undefined();
    if (handle_ == nullptr) return Errno(env, EBADF);
    int uvEvents = (events & 1 ? UV_READABLE : 0) | (events & 2 ? UV_WRITABLE : 0);
    int rc = uvEvents == 0 ? uv_poll_stop(handle_) : uv_poll_start(handle_, uvEvents, OnEvent);
    if (rc != 0) {
      // Keep the ref'd state consistent with what the loop watches.
      return Napi::Number::New(env, rc);
    }
    // An idle poller must not keep the process alive; an active one must.
    return Napi::Number::New(env, 0);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    return info.Env().Undefined();
  }

  static void OnEvent(uv_poll_t* handle, int status, int events) {
    Poller* self = static_cast<Poller*>(handle->data);
    if (self == nullptr || self->callback_.IsEmpty()) return;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    int out = (events & UV_READABLE ? 1 : 0) | (events & UV_WRITABLE ? 2 : 0);
    // MakeCallback runs the microtask queue afterwards, as Node's own handles do.
    self->callback_.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Number::New(env, out)});
  }

  uv_poll_t* handle_ = nullptr;
  Napi::FunctionReference callback_;
  napi_env env_ = nullptr;
};

static void CloseAll(void* arg) {
  AddonData* data = static_cast<AddonData*>(arg);
  auto pollers = data->pollers;
  for (Poller* p : pollers) p->CloseHandle();
}

void InitPoll(Napi::Env env, Napi::Object exports) {
  exports.Set("Poller", Poller::Define(env));
  // Close every handle before the environment (a worker, say) tears its loop down.
  napi_add_env_cleanup_hook(env, CloseAll, GetData(env));
}

}  // namespace vtap
