// A Linux TAP device: open or attach, link settings, offloads, readiness
// events and batched I/O per queue. Linux include/uapi/linux/if_tun.h,
// Documentation/networking/tuntap.rst.
import { EventEmitter } from 'node:events';
import { constants as osConstants } from 'node:os';

import { native, type NativeBinding, type NativePoller } from '../host/binding.js';
import { errnoError, permissionHint, TapError, usageError } from './errors.js';
import type { IoPlan } from '../host/io-plan.js';
import { Link, MemoryLink, type LinkOps } from './link.js';
import { formatMac, randomMac } from '../util/addr.js';

/** TUNSETOFFLOAD bits (if_tun.h). USO4/USO6 are missing from older headers. */
export const TunOffload = {
  CSUM: 0x01,
  TSO4: 0x02,
  TSO6: 0x04,
  TSO_ECN: 0x08,
  UFO: 0x10,
  USO4: 0x20,
  USO6: 0x40,
} as const;

export const TUN_OFFLOAD_ALL = 0x7f;

/** Names of offload bits, for messages and metrics. */
export function offloadNames(flags: number): string[] {
  return Object.entries(TunOffload)
    .filter(([, bit]) => (flags & bit) !== 0)
    .map(([name]) => name);
}

export interface TapOptions {
  /** Interface name; empty or absent lets the kernel choose (tap0, tap1, ...). May hold "%d". */
  name?: string;
  /** IFF_VNET_HDR: each frame is preceded by a virtio_net_hdr. Default false. */
  vnetHdr?: boolean;
  /** TUNSETVNETHDRSZ, with vnetHdr. Default 12 (virtio 1.x header with num_buffers). */
  vnetHdrSize?: number;
  /** Queues (fds); more than one sets IFF_MULTI_QUEUE. Default 1. */
  queues?: number;
  /** Set IFF_MULTI_QUEUE even with one queue (to match a persistent multi-queue TAP). */
  multiQueue?: boolean;
  /** TUNSETPERSIST: the TAP outlives its fds. */
  persist?: boolean;
  /** TUNSETOWNER / TUNSETGROUP: who may attach without CAP_NET_ADMIN. */
  owner?: number;
  group?: number;
  /** Only attach to an existing TAP; never create one. */
  mustExist?: boolean;
  /** Path of the clone device. Default /dev/net/tun. */
  devicePath?: string;
}

export interface OffloadResult {
  /** Bits the kernel took. */
  accepted: number;
  /** Bits asked for that the kernel refused (reported, not fatal). */
  refused: number;
}

const MAX_NAME_BYTES = 15; // IFNAMSIZ - 1

function checkName(name: string): void {
  const bytes = Buffer.byteLength(name);
  if (bytes > MAX_NAME_BYTES) {
    throw usageError(
      'ERR_TAP_NAME_TOO_LONG',
      `interface name "${name}" is ${bytes} bytes; Linux allows at most ${MAX_NAME_BYTES} (IFNAMSIZ - 1)`,
      name,
    );
  }
  if (/[\s/:]/.test(name) || name === '.' || name === '..') {
    throw usageError(
      'ERR_TAP_NAME_INVALID',
      `interface name "${name}" is not valid: no spaces, "/" or ":", and not "." or ".."`,
      name,
    );
  }
}

/** One queue of a TAP: an fd with its readiness events and batched I/O. */
export class TapQueue extends EventEmitter<{ readable: []; writable: []; error: [TapError] }> {
  readonly index: number;
  private fdValue: number;
  private poller: NativePoller | undefined;
  private watching = 0;
  private isEnabled = true;
  private readonly tap: Tap | { readonly name: string };
  private readonly n: NativeBinding;

  /** Whether close() closes the fd (false for a queue borrowed by a worker thread). */
  private readonly ownsFd: boolean;

  constructor(tap: Tap | { readonly name: string }, index: number, fd: number, ownsFd = true) {
    super();
    this.tap = tap;
    this.index = index;
    this.fdValue = fd;
    this.ownsFd = ownsFd;
    this.n = native();
  }

  /**
   * A queue over an fd that another thread's Tap owns (fds are process-wide):
   * a worker thread polls and serves it on its own loop; close() only stops
   * polling, and the owner closes the fd.
   */
  static borrow(fd: number, tapName: string, index: number): TapQueue {
    return new TapQueue({ name: tapName }, index, fd, false);
  }

  get fd(): number {
    if (this.fdValue < 0) throw this.closedError('fd');
    return this.fdValue;
  }

  get closed(): boolean {
    return this.fdValue < 0;
  }

  /** Chooses which readiness events are delivered; the process stays alive while any is watched. */
  watch(events: { readable?: boolean; writable?: boolean }): void {
    if (this.fdValue < 0) throw this.closedError('watch');
    const mask = (events.readable === true ? 1 : 0) | (events.writable === true ? 2 : 0);
    if (mask === this.watching) return;
    if (this.poller === undefined) {
      if (mask === 0) return;
      this.poller = new this.n.Poller(this.fdValue, (status, ev) => this.onPoll(status, ev));
    }
    const rc = this.poller.start(mask);
    if (rc < 0) throw errnoError(rc, 'uv_poll_start', this.tap.name, 'watching the TAP');
    this.watching = mask;
  }

  /** Bytes written, or -errno (-EAGAIN when the TAP's queue is full). Frames include the vnet header if enabled. */
  write(frame: ArrayBufferView): number {
    if (this.fdValue < 0) return -osConstants.errno.EBADF;
    return this.n.writeFrame(this.fdValue, frame);
  }

  /** Bytes read, or -errno (-EAGAIN when nothing is waiting). */
  read(into: ArrayBufferView): number {
    if (this.fdValue < 0) return -osConstants.errno.EBADF;
    return this.n.readFrame(this.fdValue, into);
  }

  /** One writev per planned frame; see NativeBinding.writevBatch. */
  writeBatch(plan: IoPlan): number {
    if (this.fdValue < 0) return this.closedBatch(plan);
    return this.n.writevBatch(this.fdValue, plan.plan, plan.frames, plan.results);
  }

  /** One readv per planned frame; see NativeBinding.readvBatch. */
  readBatch(plan: IoPlan): number {
    if (this.fdValue < 0) return this.closedBatch(plan);
    return this.n.readvBatch(this.fdValue, plan.plan, plan.frames, plan.results);
  }

  /** TUNSETQUEUE: attach (true) or detach (false) this queue of a multi-queue TAP from the kernel's steering. */
  setEnabled(enabled: boolean): void {
    if (this.fdValue < 0) throw this.closedError('setEnabled');
    if (enabled === this.isEnabled) return; // tun refuses attaching an attached queue (EINVAL)
    if ('isSocketPair' in this.tap && this.tap.isSocketPair) {
      this.isEnabled = enabled;
      return;
    }
    const rc = this.n.tunSetQueue(this.fdValue, enabled ? 1 : 0);
    if (rc < 0) throw errnoError(rc, 'TUNSETQUEUE', this.tap.name, `${enabled ? 'attaching' : 'detaching'} queue ${this.index}`);
    this.isEnabled = enabled;
  }

  /** Whether the kernel steers frames to this queue (a new queue is attached). */
  get enabled(): boolean {
    return this.isEnabled;
  }

  /** Mergeable receive over the groups (frames) of `plan`; see NativeBinding.readvMergeable. */
  readMergeable(plan: IoPlan, minRoom: number, maxRoom: number, results: Int32Array, hold: Uint8Array, state: Int32Array): number {
    if (this.fdValue < 0) {
      results[0] = -osConstants.errno.EBADF;
      return 1;
    }
    return this.n.readvMergeable(this.fdValue, plan.plan, plan.frames, minRoom, maxRoom, results, hold, state);
  }

  /** Stops the poller before the fd closes, so the loop never watches a stale fd. */
  close(): void {
    if (this.fdValue < 0) return;
    this.poller?.close();
    this.poller = undefined;
    this.watching = 0;
    if (this.ownsFd) this.n.close(this.fdValue);
    this.fdValue = -1;
  }

  private closedBatch(plan: IoPlan): number {
    if (plan.frames > 0) plan.results[0] = -osConstants.errno.EBADF;
    return plan.frames > 0 ? 1 : 0;
  }

  private closedError(what: string): TapError {
    return usageError('ERR_TAP_CLOSED', `TAP "${this.tap.name}" queue ${this.index} is closed (${what})`, this.tap.name);
  }

  private onPoll(status: number, events: number): void {
    if (status < 0) {
      this.emit('error', errnoError(status, 'epoll', this.tap.name, `polling queue ${this.index}`));
      return;
    }
    if ((events & 1) !== 0 && (this.watching & 1) !== 0) this.emit('readable');
    if ((events & 2) !== 0 && (this.watching & 2) !== 0 && this.fdValue >= 0) this.emit('writable');
  }
}

/** A TAP interface with one or more queues. */
export class Tap {
  readonly name: string;
  readonly queues: readonly TapQueue[];
  /** TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports. */
  readonly kernelFeatures: number;
  /** Bytes of virtio_net_hdr before each frame, or 0 without IFF_VNET_HDR. */
  readonly vnetHdrSize: number;
  /** The host side of the TAP as a network interface. */
  readonly link: LinkOps;
  /** True for a stand-in made by Tap.socketPair(). */
  readonly isSocketPair: boolean;
  private readonly n: NativeBinding;
  private offloadBits = 0;
  private isClosed = false;

  private constructor(name: string, fds: number[], features: number, vnetHdrSize: number, link?: LinkOps) {
    this.n = native();
    this.name = name;
    this.kernelFeatures = features;
    this.vnetHdrSize = vnetHdrSize;
    this.queues = fds.map((fd, i) => new TapQueue(this, i, fd));
    this.isSocketPair = link !== undefined;
    this.link = link ?? new Link(name, () => !this.isClosed);
  }

  /**
   * A stand-in TAP with no kernel interface and no privileges needed: each
   * queue is one end of a SOCK_SEQPACKET socket pair, which keeps frame
   * boundaries as a TAP does, so the same native batched I/O and readiness
   * run on it. The other ends are returned as peers to write frames into and
   * read frames from (with the vnet header, as through IFF_VNET_HDR).
   */
  static socketPair(options: { name?: string; queues?: number; vnetHdr?: boolean; vnetHdrSize?: number; mac?: string } = {}): {
    tap: Tap;
    peers: TapPeer[];
  } {
    const n = native();
    const queues = options.queues ?? 1;
    const fds: number[] = [];
    const peers: TapPeer[] = [];
    for (let q = 0; q < queues; q++) {
      const pair = n.socketPair();
      if (typeof pair === 'number') {
        for (const fd of fds) n.close(fd);
        for (const p of peers) p.close();
        throw errnoError(pair, 'socketpair', options.name ?? 'socketpair', 'making a stand-in TAP queue');
      }
      fds.push(pair[0]);
      peers.push(new TapPeer(pair[1]));
    }
    const name = options.name ?? 'socketpair';
    const vnetHdrSize = options.vnetHdr === false ? 0 : (options.vnetHdrSize ?? 12);
    const c = n.constants;
    const features = c.IFF_TAP | c.IFF_NO_PI | c.IFF_VNET_HDR | c.IFF_MULTI_QUEUE;
    const tap = new Tap(name, fds, features, vnetHdrSize, new MemoryLink(name, options.mac ?? formatMac(randomMac())));
    return { tap, peers };
  }

  /** Creates a TAP, or attaches to an existing one of that name that this user may use. */
  static open(options: TapOptions = {}): Tap {
    const n = native();
    const c = n.constants;
    const requested = options.name ?? '';
    checkName(requested);
    const queues = options.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 256) {
      throw usageError('ERR_TAP_QUEUES', `queues must be an integer from 1 to 256, got ${queues}`, requested);
    }
    const vnetHdrSize = options.vnetHdr === true ? (options.vnetHdrSize ?? 12) : 0;
    if (options.vnetHdr === true && (!Number.isInteger(vnetHdrSize) || vnetHdrSize < 10)) {
      throw usageError('ERR_TAP_VNET_HDR_SIZE', `vnetHdrSize must be an integer >= 10, got ${vnetHdrSize}`, requested);
    }
    if (options.mustExist === true) {
      if (requested === '' || requested.includes('%')) {
        throw usageError('ERR_TAP_NAME_INVALID', 'attaching needs the exact name of an existing TAP', requested);
      }
      const index = n.linkGetIndex(requested);
      if (index < 0) {
        throw new TapError(
          `no interface named "${requested}" to attach to; create it first, for example with ` +
            `\`sudo ip tuntap add dev ${requested} mode tap user ${process.env['USER'] ?? 'USER'}\``,
          'ERR_TAP_NOT_FOUND',
          index,
          'SIOCGIFINDEX',
          requested,
        );
      }
    }
    let flags = c.IFF_TAP | c.IFF_NO_PI;
    if (vnetHdrSize > 0) flags |= c.IFF_VNET_HDR;
    if (queues > 1 || options.multiQueue === true) flags |= c.IFF_MULTI_QUEUE;

    const devicePath = options.devicePath ?? '/dev/net/tun';
    const fds: number[] = [];
    const fail = (err: TapError): never => {
      for (const fd of fds) n.close(fd);
      throw err;
    };
    let name = requested;
    for (let q = 0; q < queues; q++) {
      const fd = n.open(devicePath);
      if (fd < 0) {
        const hint =
          fd === -osConstants.errno.ENOENT
            ? `${devicePath} is missing: load the tun module (\`modprobe tun\`)`
            : fd === -osConstants.errno.EACCES || fd === -osConstants.errno.EPERM
              ? permissionHint(requested)
              : undefined;
        fail(errnoError(fd, 'open', requested, `opening ${devicePath}`, hint));
      }
      fds.push(fd);
      const rc = n.tunSetIff(fd, name, flags);
      if (rc < 0) fail(setIffError(rc, name, q));
      if (q === 0) {
        const info = n.tunGetIff(fd);
        if (typeof info === 'number') fail(errnoError(info, 'TUNGETIFF', name, 'reading the TAP name'));
        else name = info.name;
      }
      if (vnetHdrSize > 0) {
        const hrc = n.tunSetVnetHdrSz(fd, vnetHdrSize);
        if (hrc < 0) fail(errnoError(hrc, 'TUNSETVNETHDRSZ', name, `setting the vnet header size to ${vnetHdrSize}`));
      }
    }
    const first = fds[0] as number;
    const features = n.tunGetFeatures(first);
    if (options.owner !== undefined) {
      const rc = n.tunSetOwner(first, options.owner);
      if (rc < 0) fail(errnoError(rc, 'TUNSETOWNER', name, `setting the owner to ${options.owner}`));
    }
    if (options.group !== undefined) {
      const rc = n.tunSetGroup(first, options.group);
      if (rc < 0) fail(errnoError(rc, 'TUNSETGROUP', name, `setting the group to ${options.group}`));
    }
    if (options.persist === true) {
      const rc = n.tunSetPersist(first, 1);
      if (rc < 0) fail(errnoError(rc, 'TUNSETPERSIST', name, 'making the TAP persistent'));
    }
    return new Tap(name, fds, features < 0 ? 0 : features, vnetHdrSize);
  }

  /** Attaches to an existing TAP (for example one made by `ip tuntap add ... user USER`); never creates one. */
  static attach(name: string, options: Omit<TapOptions, 'name' | 'mustExist'> = {}): Tap {
    return Tap.open({ ...options, name, mustExist: true });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Queue 0, for the common single-queue case. */
  get queue(): TapQueue {
    return this.queues[0] as TapQueue;
  }

  // Link settings of the host side, delegated to `link`.
  get ifindex(): number {
    return this.link.ifindex;
  }
  get mtu(): number {
    return this.link.mtu;
  }
  setMtu(mtu: number): void {
    this.link.setMtu(mtu);
  }
  get mac(): string {
    return this.link.mac;
  }
  setMac(mac: string | Uint8Array): void {
    this.link.setMac(mac);
  }
  get isUp(): boolean {
    return this.link.isUp;
  }
  setUp(up = true): void {
    this.link.setUp(up);
  }
  setIpv4(address: string | number, prefixLength: number): void {
    this.link.setIpv4(address, prefixLength);
  }
  addToBridge(bridge: string): void {
    this.link.addToBridge(bridge);
  }

  /** The offload bits last accepted by TUNSETOFFLOAD. */
  get offloads(): number {
    return this.offloadBits;
  }

  /**
   * TUNSETOFFLOAD: what the host stack may hand this TAP (checksum-partial
   * frames, TSO/UFO/USO super-frames). Bits the kernel refuses are reported in
   * `refused` instead of failing; only an error unrelated to the bits throws.
   */
  setOffloads(wanted: number): OffloadResult {
    const fd = this.queue.fd;
    // Bits beyond TUN_OFFLOAD_ALL are passed on: a newer kernel may know them,
    // and an older one refuses them, which is reported below.
    if (!Number.isInteger(wanted) || wanted < 0 || wanted > 0xffff) {
      throw usageError('ERR_TAP_OFFLOAD', `offload flags must be an integer from 0 to 0xffff, got ${wanted}`, this.name);
    }
    if (this.isSocketPair) {
      // A socket pair carries whatever it is given: it takes the known bits.
      this.offloadBits = wanted & TUN_OFFLOAD_ALL;
      return { accepted: this.offloadBits, refused: wanted & ~TUN_OFFLOAD_ALL };
    }
    let rc = this.n.tunSetOffload(fd, wanted);
    if (rc === 0) {
      this.offloadBits = wanted;
      return { accepted: wanted, refused: 0 };
    }
    if (rc !== -osConstants.errno.EINVAL) throw errnoError(rc, 'TUNSETOFFLOAD', this.name, 'setting offloads');
    // Some bit is unknown to this kernel: add the bits one at a time, CSUM first
    // (the segmentation offloads depend on it), keeping those it takes.
    let accepted = 0;
    for (let bit = 1; bit <= 0x8000; bit <<= 1) {
      if ((wanted & bit) === 0) continue;
      rc = this.n.tunSetOffload(fd, accepted | bit);
      if (rc === 0) accepted |= bit;
    }
    rc = this.n.tunSetOffload(fd, accepted);
    if (rc < 0) throw errnoError(rc, 'TUNSETOFFLOAD', this.name, 'setting offloads');
    this.offloadBits = accepted;
    return { accepted, refused: wanted & ~accepted };
  }

  /** TUNSETPERSIST: keep the TAP after the last fd closes (or stop keeping it). */
  setPersistent(persist: boolean): void {
    if (this.isSocketPair) throw usageError('ERR_TAP_NOT_KERNEL', `"${this.name}" is a socket pair: it cannot persist`, this.name);
    const rc = this.n.tunSetPersist(this.queue.fd, persist ? 1 : 0);
    if (rc < 0) throw errnoError(rc, 'TUNSETPERSIST', this.name, persist ? 'making the TAP persistent' : 'clearing persistence');
  }

  /** Closes every queue. A persistent TAP stays; others disappear. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const q of this.queues) q.close();
  }

}

function setIffError(rc: number, name: string, queue: number): TapError {
  const e = osConstants.errno;
  let hint: string | undefined;
  if (rc === -e.EPERM || rc === -e.EACCES) hint = permissionHint(name);
  else if (rc === -e.EBUSY) {
    hint = `"${name}" is in use: another process holds it (a TAP without IFF_MULTI_QUEUE takes one fd), or it is already attached`;
  } else if (rc === -e.EINVAL) {
    hint = `"${name}" exists but is not a TAP with these flags (a TUN device, another kind of link, or a multi-queue mismatch)`;
  }
  const what = queue === 0 ? 'creating or attaching the TAP' : `attaching queue ${queue}`;
  return errnoError(rc, 'TUNSETIFF', name, what, hint);
}


/** The far end of a stand-in TAP queue: what the host kernel would be for a real TAP. */
export class TapPeer {
  private fd: number;
  private readonly n = native();

  constructor(fd: number) {
    this.fd = fd;
  }

  /** Writes one frame (vnet header first, when the Tap has one): bytes or -errno. */
  write(frame: ArrayBufferView): number {
    return this.fd < 0 ? -osConstants.errno.EBADF : this.n.writeFrame(this.fd, frame);
  }

  /** Reads one frame: bytes, or -errno (-EAGAIN when nothing waits). */
  read(into: ArrayBufferView): number {
    return this.fd < 0 ? -osConstants.errno.EBADF : this.n.readFrame(this.fd, into);
  }

  close(): void {
    if (this.fd >= 0) this.n.close(this.fd);
    this.fd = -1;
  }
}
