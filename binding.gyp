{
  "target_defaults": {
    "cflags": ["-Wall", "-Wextra", "-fstack-protector-strong", "-O2"],
    "cflags_cc": ["-Wall", "-Wextra", "-fstack-protector-strong", "-O2", "-std=c++17"],
    "defines": ["_GNU_SOURCE", "_FORTIFY_SOURCE=2"]
  },
  "targets": [
    {
      "target_name": "virtio_tap",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/tun.cc",
        "native/link.cc",
        "native/regions.cc",
        "native/io.cc",
        "native/readv-mergeable.cc",
        "native/poll.cc",
        "native/vhost.cc",
        "native/fds.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"]
    }
  ]
}
