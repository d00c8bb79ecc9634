#!/usr/bin/env bash
# Builds the User-Mode Linux guest for the tests from Debian packages: testing's
# user-mode-linux (the `linux` binary and its modules) and testing's libc6, both
# unpacked, not installed, and an initramfs with busybox, the virtio-net and
# 802.1Q modules, iperf3, ethtool and iproute2's ip as /usr/bin/ip (busybox's
# has no maddr, allmulticast or VLAN links, and busybox's sh runs its own
# applet for a bare `ip`). Prints the directory holding `linux` and
# `initramfs.gz`. Cached: in $VIRTIO_TAP_UML_CACHE, default
# ~/.cache/virtio-tap-uml; the .debs stay in its dl/ and are reused.
#
# Why testing's: Debian 12's and 13's UML die at the first user process on CPUs
# with AMX (MACHINE-NOTES). Testing's needs glibc >= 2.38, so `linux` is
# patchelf'd to the unpacked libc6's loader and libraries (running it through
# ld.so directly does not work). The download uses a private apt configuration
# under the cache (suite forky, mirror $VIRTIO_TAP_UML_MIRROR, default
# http://deb.debian.org/debian); the machine's sources are not touched.
#
# Running it (see test/guest/uml-init), stdin from /dev/null:
#   DIR/linux mem=256M initrd=DIR/initramfs.gz con=null con0=fd:0,fd:1 quiet \
#     ubd0=EMPTYFILE virtio_uml.device=SOCKET:1 vt.dir=HOSTDIR
# (an empty ubd0 of its own silences "Failed to initialize ubd device 0"; UML
# locks that file, so two guests cannot share /dev/null for it.) The guest
# mounts host directory HOSTDIR on /host (hostfs), runs `sh /host/run.sh` with
# its output on the console (stdout), prints "VT-DONE <status>" and powers off
# (linux exits 0); the script may leave result files in /host. Without vt.dir:
# a shell on the console. `linux` is patched with absolute paths into the
# cache: move the cache and it must be rebuilt (delete its ready-* file).
set -euo pipefail
CACHE="${VIRTIO_TAP_UML_CACHE:-$HOME/.cache/virtio-tap-uml}"
MIRROR="${VIRTIO_TAP_UML_MIRROR:-http://deb.debian.org/debian}"
HERE="$(cd "$(dirname "$0")" && pwd)"
STAMP="$(sha256sum "$HERE/build-uml.sh" "$HERE/initramfs.sh" "$HERE/uml-init" | sha256sum | cut -c1-16)"
# shellcheck source=initramfs.sh
. "$HERE/initramfs.sh"
if [ -f "$CACHE/ready-$STAMP" ]; then echo "$CACHE"; exit 0; fi
for tool in apt-get dpkg-deb cpio busybox iperf3 ethtool ip ldd gzip; do
  command -v "$tool" >/dev/null || { echo "build-uml: $tool is missing (install cpio, busybox-static, iperf3, ethtool, iproute2)" >&2; exit 1; }
done
if ! command -v patchelf >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "build-uml: patchelf is missing (apt-get install patchelf, as root)" >&2; exit 1; }
  apt-get install -y patchelf >&2 || { echo "build-uml: cannot install patchelf (apt-get update first?)" >&2; exit 1; }
fi
if ldd "$(command -v busybox)" >/dev/null 2>&1; then
  echo "build-uml: $(command -v busybox) is dynamically linked (install busybox-static)" >&2; exit 1
fi

# Private apt configuration: its own sources list, lists and cache; only run
# when a .deb is missing. One failing index must not fail the run: the update's
# status is ignored and what matters is whether the download then works.
mkdir -p "$CACHE/dl" "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/apt/parts"
APT=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o "Dir::Etc::SourceParts=$CACHE/apt/parts"
  -o "Dir::Etc::PreferencesParts=$CACHE/apt/parts" -o "Dir::Etc::Preferences=$CACHE/apt/preferences"
  -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache=$CACHE/apt/cache"
  -o "APT::Architecture=amd64" -o "APT::Architectures=amd64" -o "APT::Sandbox::User=root"
  -o "Acquire::Languages=none" -o "APT::Get::List-Cleanup=false")
cd "$CACHE/dl"
if ! ls user-mode-linux_*.deb >/dev/null 2>&1 || ! ls libc6_*.deb >/dev/null 2>&1; then
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR forky main" > "$CACHE/apt/sources.list"
  : > "$CACHE/apt/preferences"
  apt-get "${APT[@]}" -q update >&2 || echo "build-uml: apt-get update reported an error; trying the download anyway" >&2
  apt-get "${APT[@]}" -q download user-mode-linux/forky libc6/forky >&2 ||
    { echo "build-uml: cannot download user-mode-linux and libc6 from $MIRROR forky (network? mirror? keyring?)" >&2; exit 1; }
  rm -rf "$CACHE/apt/lists" "$CACHE/apt/cache" # 20+ MB of indexes, no use once the .debs are here
fi
UMLDEB="$(ls user-mode-linux_*.deb | sort -V | tail -1)"
LIBCDEB="$(ls libc6_*.deb | sort -V | tail -1)"

# Unpack both into one tree; point `linux` at that tree's loader and libraries.
rm -rf "$CACHE/root"
dpkg-deb -x "$UMLDEB" "$CACHE/root"
dpkg-deb -x "$LIBCDEB" "$CACHE/root"
LIBDIR="$CACHE/root/usr/lib/x86_64-linux-gnu"
[ -x "$CACHE/root/usr/bin/linux.uml" ] && [ -f "$LIBDIR/ld-linux-x86-64.so.2" ] ||
  { echo "build-uml: unexpected package layout (no usr/bin/linux.uml or ld-linux-x86-64.so.2)" >&2; exit 1; }
cp "$CACHE/root/usr/bin/linux.uml" "$CACHE/linux.tmp"
patchelf --set-interpreter "$LIBDIR/ld-linux-x86-64.so.2" --set-rpath "$LIBDIR" "$CACHE/linux.tmp"
mv "$CACHE/linux.tmp" "$CACHE/linux"
VER="$(ls "$CACHE/root/usr/lib/uml/modules" | sort -V | tail -1)"
MODDIR="$CACHE/root/usr/lib/uml/modules/$VER"
"$CACHE/linux" --version >/dev/null 2>&1 || { echo "build-uml: the patched $CACHE/linux does not run" >&2; exit 1; }

ROOT="$CACHE/initramfs"
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,host,modules}
cp "$(command -v busybox)" "$ROOT/bin/busybox"
# Dependency order (modinfo -F depends): the init loads them in this order.
copy_modules build-uml "$MODDIR" "$ROOT" failover net_failover virtio_net llc stp garp mrp 8021q
copy_tools "$ROOT" iperf3 ethtool ip
pack_initramfs "$ROOT" "$HERE/uml-init" "$CACHE/initramfs.gz"
rm -rf "$ROOT" "$CACHE/root/usr/share" "$CACHE/root/usr/lib/uml" # the modules needed are in the initramfs
rm -f "$CACHE"/ready-*
touch "$CACHE/ready-$STAMP"
echo "$CACHE"
