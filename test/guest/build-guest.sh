#!/usr/bin/env bash
# Builds the real-guest image for the tests from Debian packages: the cloud
# kernel (unpacked, not installed) and an initramfs with busybox and the
# virtio modules. Prints the directory holding vmlinuz and initramfs.gz.
# Cached: in $VIRTIO_TAP_GUEST_CACHE, default ~/.cache/virtio-tap-guest.
set -euo pipefail
CACHE="${VIRTIO_TAP_GUEST_CACHE:-$HOME/.cache/virtio-tap-guest}"
HERE="$(cd "$(dirname "$0")" && pwd)"
STAMP="$(sha256sum "$HERE/build-guest.sh" "$HERE/initramfs.sh" "$HERE/init" | sha256sum | cut -c1-16)"
# shellcheck source=initramfs.sh
. "$HERE/initramfs.sh"
if [ -f "$CACHE/ready-$STAMP" ]; then echo "$CACHE"; exit 0; fi
for tool in apt-get dpkg-deb depmod cpio busybox iperf3 ethtool ldd; do
  command -v "$tool" >/dev/null || { echo "build-guest: $tool is missing (install kmod, cpio, busybox-static, iperf3, ethtool)" >&2; exit 1; }
done
mkdir -p "$CACHE/dl"
cd "$CACHE/dl"
KPKG="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
[ -n "$KPKG" ] || { echo "build-guest: cannot find the cloud kernel package (run apt-get update)" >&2; exit 1; }
ls "${KPKG}"_*.deb >/dev/null 2>&1 || apt-get download "$KPKG" >&2
VER="${KPKG#linux-image-}"
rm -rf "$CACHE/kernel"
dpkg-deb -x "${KPKG}"_*.deb "$CACHE/kernel"
cp "$CACHE/kernel/boot/vmlinuz-$VER" "$CACHE/vmlinuz"
depmod -b "$CACHE/kernel" "$VER"

ROOT="$CACHE/initramfs"
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,modules}
cp "$(command -v busybox)" "$ROOT/bin/busybox"
MODDIR="$CACHE/kernel/lib/modules/$VER"
# Dependency order (MACHINE-NOTES: these are modules in the cloud kernel).
copy_modules build-guest "$MODDIR" "$ROOT" virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net
copy_tools "$ROOT" iperf3 ethtool
pack_initramfs "$ROOT" "$HERE/init" "$CACHE/initramfs.gz"
rm -f "$CACHE"/ready-*
touch "$CACHE/ready-$STAMP"
echo "$CACHE"
