// The native surface, typed in one place, and the loader that finds it.
// Native functions return numbers: >= 0 on success, -errno on failure.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativePoller {
  /** Watch for 1 = readable, 2 = writable, 3 = both, 0 = nothing. Returns 0 or a libuv error. */
  start(events: number): number;
  /** Stop watching and close the handle; the fd may be closed afterwards. */
  close(): void;
}

export interface NativeConstants {
  readonly IFF_TUN: number;
  readonly IFF_TAP: number;
  readonly IFF_NO_PI: number;
  readonly IFF_VNET_HDR: number;
  readonly IFF_MULTI_QUEUE: number;
  readonly IFF_NAPI: number;
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_TSO_ECN: number;
  readonly TUN_F_UFO: number;
  readonly TUN_F_USO4: number;
  readonly TUN_F_USO6: number;
  readonly IFNAMSIZ: number;
  readonly IFF_UP: number;
  readonly IFF_RUNNING: number;
  readonly IFF_PROMISC: number;
  readonly IOV_MAX: number;
}

export type FdKind = 'eventfd' | 'file' | 'dir' | 'pipe' | 'socket' | 'char' | 'block' | 'other';

export interface FdInfo {
  kind: FdKind;
  /** st_size for a regular file, else 0. */
  size: number;
  /** F_GET_SEALS, or -errno for a file that cannot be sealed. */
  seals: number;
}

export interface NativeBinding {
  readonly constants: NativeConstants;
  open(path: string): number;
  /** A non-blocking SOCK_SEQPACKET socket pair: [fd, fd], or -errno. */
  socketPair(): [number, number] | number;
  close(fd: number): number;
  tunSetIff(fd: number, name: string, flags: number): number;
  tunGetIff(fd: number): { name: string; flags: number } | number;
  tunGetFeatures(fd: number): number;
  tunSetOffload(fd: number, flags: number): number;
  tunSetPersist(fd: number, on: 0 | 1): number;
  tunSetOwner(fd: number, uid: number): number;
  tunSetGroup(fd: number, gid: number): number;
  tunSetVnetHdrSz(fd: number, size: number): number;
  tunSetQueue(fd: number, attach: 0 | 1): number;
  linkGetFlags(name: string): number;
  linkSetFlags(name: string, flags: number): number;
  linkGetMtu(name: string): number;
  linkSetMtu(name: string, mtu: number): number;
  linkGetIndex(name: string): number;
  linkGetMac(name: string, out: Uint8Array): number;
  linkSetMac(name: string, mac: Uint8Array): number;
  /** address in host byte order */
  linkSetIpv4(name: string, address: number, prefixLength: number): number;
  bridgeCreate(name: string): number;
  bridgeDelete(name: string): number;
  bridgeAddIf(bridge: string, ifindex: number): number;
  bridgeDelIf(bridge: string, ifindex: number): number;
  registerRegion(view: ArrayBufferView): number;
  unregisterRegion(index: number): number;
  /**
   * One writev per frame of the plan (see IoPlan). Returns how many frames got
   * a result; processing stops after a frame whose result is -EAGAIN (nothing
   * was written for it) or -EINVAL (malformed plan).
   */
  writevBatch(fd: number, plan: Float64Array, frames: number, results: Int32Array): number;
  /** As writevBatch, with one readv per frame. */
  readvBatch(fd: number, plan: Float64Array, frames: number, results: Int32Array): number;
  /**
   * Mergeable receive: frames read one read each from a cursor over `groups`
   * groups of segments (plan layout as for frames); a frame consumes whole
   * groups. results[2i] = bytes or -errno, results[2i+1] = groups consumed.
   * A frame larger than the groups left is kept in `hold` (over maxRoom
   * bytes; state[0] = its length, else 0) and placed first by a later call.
   * A frame larger than maxRoom: -EMSGSIZE, no group consumed, reading goes
   * on. Stops after EAGAIN, when fewer than minRoom bytes of groups are left, or
   * when the held frame does not fit.
   */
  readvMergeable(
    fd: number,
    plan: Float64Array,
    groups: number,
    minRoom: number,
    maxRoom: number,
    results: Int32Array,
    hold: Uint8Array,
    state: Int32Array,
  ): number;
  /**
   * Copies `count` frames out of registered memory in one call: per frame,
   * `jobs` holds (at, skip, want, dstOffset): `want` bytes of the plan's
   * segments from position `at` on (into the following entries, for a merged
   * frame), after `skip` bytes, to dst[dstOffset...], never past dst's end.
   * Returns count, or -EFAULT for a segment outside its region.
   */
  gatherFrames(plan: Float64Array, jobs: Float64Array, count: number, dst: ArrayBufferView): number;
  writeFrame(fd: number, frame: ArrayBufferView): number;
  readFrame(fd: number, into: ArrayBufferView): number;
  Poller: new (fd: number, callback: (status: number, events: number) => void) => NativePoller;
  // For vhost-user: Unix sockets with fd passing, shared memory, eventfds.
  unixListen(path: string): number;
  unixConnect(path: string): number;
  /** -EAGAIN when nobody is waiting. */
  unixAccept(fd: number): number;
  /** Bytes or -errno; fds[0] = fds received (-1: more than fit, all closed), fds[1..] the fds. */
  recvWithFds(fd: number, buf: Uint8Array, fds: Int32Array): number;
  sendWithFds(fd: number, buf: Uint8Array, fds?: Int32Array): number;
  /** sealable: MFD_ALLOW_SEALING (as QEMU's memory-backend-memfd). */
  memfdCreate(name: string, size: number, options?: { sealable?: boolean }): number;
  /** A MAP_SHARED read-write mapping as an ArrayBuffer, or -errno. */
  mmapShared(fd: number, size: number, offset: number): ArrayBuffer | number;
  /** Detaches the buffer (every view reads as empty), then unmaps it. */
  unmap(buffer: ArrayBuffer): number;
  /** Non-blocking unless `blocking` (tests of a hostile front-end). */
  eventfdCreate(options?: { blocking?: boolean }): number;
  /** Adds 1, or `value`. */
  eventfdWrite(fd: number, value?: bigint): number;
  /** The counter (reset to 0), or -EAGAIN when it was 0. */
  eventfdRead(fd: number): number;
  /** What an fd is: kind ('eventfd', 'file', 'dir', 'pipe', 'socket', 'char', 'block', 'other'), st_size, F_GET_SEALS (or -errno). */
  fdInfo(fd: number): FdInfo | number;
  /** F_ADD_SEALS F_SEAL_SHRINK: 0 or -errno. */
  sealShrink(fd: number): number;
  /** O_NONBLOCK on the file description: 0 or -errno. */
  setNonBlocking(fd: number): number;
  ftruncate(fd: number, size: number): number;
}

function packageRoot(): string {
  // src/host/binding.ts and dist/host/binding.js both sit two levels below the root.
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

let cached: NativeBinding | undefined;
let loadedFrom: string | undefined;

/**
 * The addon's candidates, in order: $VIRTIO_TAP_ADDON, then what node-gyp-build
 * picks under the package root (a source build in build/Release or
 * build/Debug, else the prebuild in prebuilds/linux-ARCH/ that fits this
 * machine), or why it picked nothing.
 */
function candidates(root: string, require: NodeJS.Require): { paths: string[]; notes: string[] } {
  const paths: string[] = [];
  const notes: string[] = [];
  const fromEnv = process.env['VIRTIO_TAP_ADDON'];
  if (fromEnv !== undefined && fromEnv.length > 0) paths.push(fromEnv);
  try {
    const gypBuild = require('node-gyp-build') as { path(dir: string): string };
    paths.push(gypBuild.path(root));
  } catch (err) {
    notes.push(`${root}: ${(err as Error).message.trim().split('\n')[0]}`);
  }
  return { paths, notes };
}

/** Loads the addon once; on failure the error lists every path tried and what to run. */
export function native(): NativeBinding {
  if (cached !== undefined) return cached;
  const require = createRequire(import.meta.url);
  const root = packageRoot();
  const { paths, notes: tried } = candidates(root, require);
  for (const path of paths) {
    if (!existsSync(path)) {
      tried.push(`${path}: not found`);
      continue;
    }
    try {
      cached = require(path) as NativeBinding;
      loadedFrom = path;
      return cached;
    } catch (err) {
      tried.push(`${path}: ${(err as Error).message}`);
    }
  }
  throw new Error(
    `virtio-tap: cannot load the native addon (prebuilt for linux-x64 and linux-arm64 with glibc; built from source elsewhere).\n` +
      `tried:\n  ${tried.join('\n  ')}\n` +
      'to build it: `npm rebuild virtio-tap` (needs python3, make and g++); with install scripts blocked, ' +
      'allow this package\'s first (`pnpm approve-builds`, or npm\'s allowScripts), or in a checkout: `npm run build`',
  );
}

/** The file the addon was loaded from (loading it first). */
export function nativeAddonPath(): string {
  native();
  return loadedFrom!;
}
