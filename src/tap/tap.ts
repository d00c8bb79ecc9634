// A Linux TAP device: open or attach, link settings, offloads, and its
// queues. Linux include/uapi/linux/if_tun.h, Documentation/networking/tuntap.rst.
// The queue, the offloads, the open sequence and the socket-pair stand-in
// are files of their own; their public names are exported from here too.
import { native, type NativeBinding } from '../host/binding.js';
import { formatMac, randomMac } from '../util/addr.js';
import { errnoError, usageError } from './errors.js';
import { Link, MemoryLink, type LinkOps } from './link.js';
import { negotiateOffloads, TUN_OFFLOAD_ALL, type OffloadResult } from './offload.js';
import { socketPairs, type TapPeer } from './socket-pair.js';
import { openTap, type TapOptions } from './tap-open.js';
import { TapQueue } from './tap-queue.js';

export { TapQueue } from './tap-queue.js';
export { TapPeer } from './socket-pair.js';
export { TunOffload, TUN_OFFLOAD_ALL, offloadNames, type OffloadResult } from './offload.js';
export type { TapOptions } from './tap-open.js';

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
    const name = options.name ?? 'socketpair';
    const { fds, peers } = socketPairs(n, options.queues ?? 1, name);
    const vnetHdrSize = options.vnetHdr === false ? 0 : (options.vnetHdrSize ?? 12);
    const c = n.constants;
    const features = c.IFF_TAP | c.IFF_NO_PI | c.IFF_VNET_HDR | c.IFF_MULTI_QUEUE;
    const tap = new Tap(name, fds, features, vnetHdrSize, new MemoryLink(name, options.mac ?? formatMac(randomMac())));
    return { tap, peers };
  }

  /** Creates a TAP, or attaches to an existing one of that name that this user may use. */
  static open(options: TapOptions = {}): Tap {
    const t = openTap(options);
    return new Tap(t.name, t.fds, t.features, t.vnetHdrSize);
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
    const result = negotiateOffloads(this.n, fd, this.name, wanted);
    this.offloadBits = result.accepted;
    return result;
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
