# Shared by build-guest.sh and build-uml.sh (sourced, not run): the steps of
# packing a busybox initramfs that both guests take.

# copy_modules TAG MODDIR ROOT MODULE...: each module (.ko, .ko.xz or .ko.zst)
# found under MODDIR, uncompressed into ROOT/modules, in the order given (the
# order the guest's init loads them in).
copy_modules() {
  local tag="$1" moddir="$2" root="$3" m f
  shift 3
  for m in "$@"; do
    f="$(find "$moddir" -name "$m.ko*" | head -1)"
    [ -n "$f" ] || { echo "$tag: module $m not found in $moddir" >&2; exit 1; }
    case "$f" in
      *.xz) xz -dc "$f" > "$root/modules/$m.ko" ;;
      *.zst) zstd -dc "$f" > "$root/modules/$m.ko" ;;
      *) cp "$f" "$root/modules/$m.ko" ;;
    esac
  done
}

# copy_tools ROOT TOOL...: each host tool into ROOT/usr/bin, with the shared
# libraries it loads at the same paths.
copy_tools() {
  local root="$1" tool bin lib
  shift
  mkdir -p "$root/usr/bin"
  for tool in "$@"; do
    bin="$(command -v "$tool")"
    cp "$bin" "$root/usr/bin/$tool"
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

# pack_initramfs ROOT INIT OUT [LEVEL]: INIT as ROOT/init, ROOT packed as a
# cpio gzip'd at LEVEL (default 1) at OUT.
pack_initramfs() {
  cp "$2" "$1/init"
  chmod 755 "$1/init"
  (cd "$1" && find . | cpio -o -H newc --quiet | gzip "-${4:-1}") > "$3"
}
