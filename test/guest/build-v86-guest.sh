#!/usr/bin/env bash
# Builds the guest that test/v86.test.ts and `virtio-tap v86` boot in v86:
# Debian 12's i386 686 kernel (unpacked, not installed) and an initramfs with
# busybox-static, ethtool (with its libraries) and the virtio modules, all
# i386 packages from Debian. Prints the directory holding vmlinuz and
# initramfs.gz. Cached in $VIRTIO_TAP_V86_CACHE, default ~/.cache/virtio-tap-v86.
#
# The i386 packages come through a private apt configuration (its own lists
# and cache under the cache directory): i386 is never added to the machine's
# architectures, so later `apt-get update` runs on the machine are unaffected,
# and an index that fails to download (a mirror mid-sync) is ignored as long
# as the packages are found in the others.
set -euo pipefail
CACHE="${VIRTIO_TAP_V86_CACHE:-$HOME/.cache/virtio-tap-v86}"
HERE="$(cd "$(dirname "$0")" && pwd)"
STAMP="$(sha256sum "$HERE/build-v86-guest.sh" "$HERE/initramfs.sh" "$HERE/v86-init" | sha256sum | cut -c1-16)"
# shellcheck source=initramfs.sh
. "$HERE/initramfs.sh"
if [ -f "$CACHE/ready-$STAMP" ]; then echo "$CACHE"; exit 0; fi
for tool in apt-get apt-cache dpkg-deb depmod cpio gzip; do
  command -v "$tool" >/dev/null || { echo "build-v86-guest: $tool is missing (install apt, dpkg, kmod, cpio, gzip)" >&2; exit 1; }
done
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$CACHE/dl"
cat > "$APT/sources.list" <<SOURCES
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
OPTS=(-o APT::Architecture=i386 -o APT::Architectures=i386
  -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache"
  -o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
# One failing index must not fail the build: what the others hold is enough
# when the packages below are found in them.
apt-get "${OPTS[@]}" -qq update >&2 || echo "build-v86-guest: some i386 indexes failed to download; going on with the rest" >&2
KPKG="$(apt-cache "${OPTS[@]}" depends linux-image-686 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
[ -n "$KPKG" ] || { echo "build-v86-guest: no i386 686 kernel package in the indexes ($APT/lists)" >&2; exit 1; }
cd "$CACHE/dl"
for p in "$KPKG" busybox-static ethtool libmnl0 libc6; do
  ls "${p}"_*_i386.deb >/dev/null 2>&1 || apt-get "${OPTS[@]}" -qq download "$p" >&2
done
VER="${KPKG#linux-image-}"
rm -rf "$CACHE/unpacked"
mkdir -p "$CACHE/unpacked"
for d in "${KPKG}"_*_i386.deb busybox-static_*_i386.deb ethtool_*_i386.deb libmnl0_*_i386.deb libc6_*_i386.deb; do
  dpkg-deb -x "$d" "$CACHE/unpacked"
done
U="$CACHE/unpacked"
cp "$U/boot/vmlinuz-$VER" "$CACHE/vmlinuz"
depmod -b "$U" "$VER"

ROOT="$CACHE/initramfs"
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,modules,usr/sbin,lib/i386-linux-gnu}
cp "$U/bin/busybox" "$ROOT/bin/busybox"
MODDIR="$U/lib/modules/$VER"
# Dependency order (these are modules in Debian's 686 kernel, as in its cloud kernel).
copy_modules build-v86-guest "$MODDIR" "$ROOT" virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net
# ethtool, and the libraries it loads, at the paths the i386 loader searches.
cp "$(find "$U/sbin" "$U/usr/sbin" -name ethtool 2>/dev/null | head -1)" "$ROOT/usr/sbin/ethtool"
cp -L "$U/lib/i386-linux-gnu/ld-linux.so.2" "$ROOT/lib/ld-linux.so.2"
for lib in libc.so.6 libm.so.6 libmnl.so.0; do
  cp -L "$(find "$U/lib/i386-linux-gnu" "$U/usr/lib/i386-linux-gnu" -name "$lib" 2>/dev/null | head -1)" "$ROOT/lib/i386-linux-gnu/$lib"
done
pack_initramfs "$ROOT" "$HERE/v86-init" "$CACHE/initramfs.gz" 6
rm -f "$CACHE"/ready-*
touch "$CACHE/ready-$STAMP"
echo "$CACHE"
