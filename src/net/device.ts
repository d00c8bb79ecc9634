// The virtio-net device (VIRTIO 1.2 §5.1) over a TAP. Queues: receiveq1,
// transmitq1, ..., receiveqN, transmitqN, then controlq (§5.1.2). Pair i is
// served by TAP queue i (IFF_MULTI_QUEUE for N > 1), on this thread or in a
// worker thread of its own; this file is the device itself: features,
// configuration space, the control queue, offloads, pairs in use, link.
//
// Who runs the control queue: the device (the default), a transport's front-
// end (controlElsewhere: QEMU's vhost-user net), or whichever the driver's
// features say (controlIfNegotiated: the device's iff CTRL_VQ is acked). It
// is virtqueue 2N with MQ negotiated and 2 without (§5.1.2).
import type { Tap } from '../tap/tap.js';
import { parseMac, randomMac } from '../util/addr.js';
import { hasFeature } from '../virtio/constants.js';
import { VirtioDeviceCore, type InterruptKind } from '../virtio/device.js';
import type { DeviceQueue } from '../virtio/queue.js';
import { configWriteRefusal, NetConfig } from './config.js';
import {
  NET_HDR_SIZE,
  VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
} from './constants.js';
import { ControlQueue, type ControlHandlers } from './control-queue.js';
import { featureDependencyError, featureNames, GUEST_OFFLOADS, offeredFeatures, tunOffloads, type NetFeatureSwitches } from './features.js';
import { RxFilter } from './filter.js';
import { LINK_POLL_MS, LinkState } from './link-state.js';
import { NetMetrics } from './metrics.js';
import { PairThreads } from './pair-thread.js';
import type { PcapWriter } from './pcap.js';
import { QueuePair, type PairOwner, type PairSettings } from './queue-pair.js';
import type { RateLimit } from './rate-limiter.js';
import type { Tracer } from '../trace/trace.js';

export interface NetDeviceOptions {
  /** Opened with vnetHdr (12-byte header) and one queue per pair. */
  tap: Tap;
  /** The guest's MAC (config space); default a random local one. */
  mac?: string | Uint8Array;
  /** MTU offered in config space; default the TAP's. */
  mtu?: number;
  /** Feature switches over the defaults (everything on). */
  features?: NetFeatureSwitches;
  rateLimit?: { tx?: RateLimit; rx?: RateLimit };
  /**
   * Raised for used buffers (with the virtqueue index) and config changes.
   * Optional when a transport attaches itself later (setInterruptSink).
   */
  interrupt?: (kind: InterruptKind, queue: number) => void;
  /** Frames per native call. */
  batch?: number;
  /**
   * Transmit timer in milliseconds (0, the default: off). After a kick's
   * frames are sent, kicks stay off and the ring is looked at again this
   * much later, until a look finds nothing: a burst costs one wakeup per
   * period instead of one per kick, at up to this much added delay for the
   * frames after the first. Whole milliseconds (the event loop's timers).
   */
  txTimerMs?: number;
  /**
   * The control queue is served elsewhere (a vhost-user front-end such as
   * QEMU runs it and tells the device what follows, e.g. which pairs are in
   * use): no control queue here, and MQ offered without CTRL_VQ.
   */
  controlElsewhere?: boolean;
  /**
   * The control queue is the device's when the driver acks CTRL_VQ and
   * elsewhere when it does not: CTRL_VQ and the features that need it are
   * offered, and a driver without CTRL_VQ may still have MQ and
   * GUEST_ANNOUNCE (a vhost-user front-end such as QEMU runs the control
   * queue and never passes CTRL_VQ on; a whole-device one such as UML's
   * virtio_uml acks it). Overrides controlElsewhere.
   */
  controlIfNegotiated?: boolean;
  /**
   * The link follows the host side of the TAP (IFF_UP), read every this
   * many milliseconds (true: every 250); off by default. setLinkUp() has its
   * say as well: the link is up when both say so.
   */
  followTapLink?: boolean | number;
  /**
   * Queue pairs to serve in worker threads of their own (indices from 0).
   * The driver's guest memory must be SharedArrayBuffer-backed. While tracing
   * or capturing, every pair is served on this thread, so every frame is seen.
   */
  workers?: number[];
  /** Trace every step (see Tracer); off when absent. setTracer() changes it. */
  trace?: Tracer;
  /** Write every frame crossing the device to this capture; setCapture() changes it. */
  capture?: PcapWriter;
}

export class NetDevice extends VirtioDeviceCore {
  readonly tap: Tap;
  readonly config: NetConfig;
  readonly filter = new RxFilter();
  readonly metrics = new NetMetrics();
  readonly pairs: number;
  /** Pairs in use (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET); 1 until the driver says more. */
  activePairs = 1;
  private interruptFn: (kind: InterruptKind, queue: number) => void;
  private readonly defaultMac: Uint8Array;
  private readonly controlElsewhere: boolean;
  private readonly controlIfNegotiated: boolean;
  private readonly link = new LinkState((up) => this.onLinkChange(up));
  private readonly workerPairs: Set<number>;
  private readonly owner: PairOwner = {
    interrupt: (index) => this.raise('vring', index),
    markBroken: (fault) => this.markBroken(fault),
    hostError: (e) => this.hostError(e),
  };
  private readonly queuePairs: QueuePair[];
  private readonly threads = new PairThreads(this.owner);
  private readonly controlHandlers: ControlHandlers = {
    setGuestOffloads: (o) => this.setGuestOffloads(o),
    setQueuePairs: (n) => this.setQueuePairs(n),
    setMac: (mac) => {
      this.config.mac = mac;
      this.filter.setMac(mac);
    },
    announceAck: () => {
      this.config.status = this.config.status & ~VIRTIO_NET_S_ANNOUNCE;
    },
  };
  private control: ControlQueue | null = null;
  private guestOffloads = 0n;
  private closed = false;
  private capture: PcapWriter | null;

  constructor(o: NetDeviceOptions) {
    const pairs = o.tap.queues.length;
    const features = offeredFeatures(o.features, pairs, o.controlElsewhere === true && o.controlIfNegotiated !== true);
    const ctrl = hasFeature(features, VIRTIO_NET_F_CTRL_VQ);
    // Every interrupt, used-buffer or config, is counted once on its way out.
    const interrupt = (kind: InterruptKind, queue: number): void => {
      this.metrics.interrupts++;
      this.interruptFn(kind, queue);
    };
    super({ features, numQueues: 2 * pairs + (ctrl ? 1 : 0), interrupt, featureNames, ...(o.trace ? { trace: o.trace } : {}) });
    if (o.tap.vnetHdrSize !== NET_HDR_SIZE) {
      throw new TypeError(`NetDevice needs a TAP opened with vnetHdr (a ${NET_HDR_SIZE}-byte header), not ${o.tap.vnetHdrSize}`);
    }
    const txTimerMs = o.txTimerMs ?? 0;
    if (!Number.isInteger(txTimerMs) || txTimerMs < 0 || txTimerMs > 1000) {
      throw new RangeError(`txTimerMs must be an integer number of milliseconds from 0 to 1000, not ${txTimerMs}`);
    }
    this.capture = o.capture ?? null;
    this.tap = o.tap;
    this.pairs = pairs;
    this.interruptFn = o.interrupt ?? (() => {});
    this.workerPairs = new Set(o.workers ?? []);
    this.controlElsewhere = o.controlElsewhere === true;
    this.controlIfNegotiated = o.controlIfNegotiated === true;
    this.defaultMac = o.mac === undefined ? randomMac() : typeof o.mac === 'string' ? parseMac(o.mac) : o.mac.slice(0, 6);
    this.config = new NetConfig(this.defaultMac, pairs, o.mtu ?? o.tap.mtu);
    this.filter.reset(this.defaultMac);
    const settings: PairSettings = { mtu: this.config.mtu, batch: o.batch ?? 64, txTimerMs, rateLimit: o.rateLimit ?? {} };
    this.queuePairs = o.tap.queues.map((tap, i) => new QueuePair(i, tap, this.owner, this.metrics, this.filter, settings));
    const follow = o.followTapLink ?? false;
    if (follow !== false) this.link.follow(o.tap.link, follow === true ? LINK_POLL_MS : follow, (e) => this.hostError(e));
  }

  /** Where interrupts go from now on (counted in metrics first). */
  override setInterruptSink(fn: (kind: InterruptKind, queue: number) => void): void {
    this.interruptFn = fn;
  }

  /**
   * Virtqueue index of the control queue the device runs under the features
   * negotiated: 2N with MQ, 2 without (§5.1.2); -1 without CTRL_VQ.
   */
  get controlQueueIndex(): number {
    const f = this.features;
    if (!hasFeature(f, VIRTIO_NET_F_CTRL_VQ)) return -1;
    return hasFeature(f, VIRTIO_NET_F_MQ) ? 2 * this.pairs : 2;
  }

  /** Pairs the driver may use: all of them with MQ, else one (§5.1.2). */
  private get usablePairs(): number {
    return hasFeature(this.features, VIRTIO_NET_F_MQ) ? this.pairs : 1;
  }

  get mac(): Uint8Array {
    return this.config.mac;
  }

  /** A driver read of the device-specific configuration (§5.1.4). */
  readConfig(offset: number, size: number): number {
    return this.config.read(offset, size);
  }

  /** The device-specific configuration space as the driver reads it (§5.1.4). */
  get configSpace(): Uint8Array {
    return this.config.bytes;
  }

  /** A driver write to the config space: refused and counted (read-only to a VERSION_1 driver, §5.1.4); returns why. */
  writeConfig(offset: number, data: Uint8Array): string | null {
    this.metrics.configWritesRefused++;
    return configWriteRefusal(offset, data.length);
  }

  /** Whether the link is up (config status VIRTIO_NET_S_LINK_UP): setLinkUp's say and, when followed, the TAP's. */
  get linkUp(): boolean {
    return this.link.up;
  }

  /** The embedder's say on the link; a change raises a config interrupt, and a link down transmits nothing (tx_link_down). */
  setLinkUp(up: boolean): void {
    this.link.setAdmin(up);
  }

  /**
   * Asks the guest to announce itself after a migration (GUEST_ANNOUNCE,
   * §5.1.6.5.4): sets VIRTIO_NET_S_ANNOUNCE and raises a config interrupt,
   * until the driver's VIRTIO_NET_CTRL_ANNOUNCE_ACK. False (nothing done)
   * unless the device runs, GUEST_ANNOUNCE was negotiated and the control
   * queue, where the ack arrives, is the device's.
   */
  requestAnnounce(): boolean {
    if (!this.running || !hasFeature(this.features, VIRTIO_NET_F_GUEST_ANNOUNCE) || this.controlQueueIndex < 0) return false;
    this.config.status = this.config.status | VIRTIO_NET_S_ANNOUNCE;
    this.raise('config', -1);
    return true;
  }

  /** Stops serving and detaches from the TAP's events. The TAP stays open: it is the caller's. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.link.stop();
    this.stopQueues();
    for (const p of this.queuePairs) p.close();
  }

  /**
   * Serves pair i's activated queues. Called for every pair at DRIVER_OK, and
   * by a transport whose front-end starts a pair later (vhost-user enables a
   * pair's rings when the guest asks for more pairs). Does nothing for a pair
   * already served or whose queues are not activated.
   */
  servePair(i: number): void {
    const p = this.queuePairs[i];
    if (p === undefined || i >= this.usablePairs || !this.running || p.serving || this.threads.has(i)) return;
    const rxq = this.queues[2 * i] ?? null;
    const txq = this.queues[2 * i + 1] ?? null;
    const observed = this.tracer !== null || this.capture !== null;
    p.linkUp = this.link.up;
    if (rxq !== null && txq !== null && this.workerPairs.has(i) && !observed && this.threads.start(p, this.tap.name, rxq, txq, this.features)) return;
    p.setInUse(i < this.activePairs);
    p.observe(this.tracer, this.capture);
    p.start(rxq, txq, this.features);
    if (i < this.activePairs) p.kick(2 * i + 1);
  }

  /**
   * Serves the control queue once it is activated: at DRIVER_OK, or later
   * for a transport whose front-end enables its ring after the data rings.
   */
  serveControl(): void {
    const ci = this.controlQueueIndex;
    const cq = ci >= 0 ? this.queues[ci] : null;
    if (!this.running || this.control !== null || !cq) return;
    this.control = new ControlQueue(ci, cq, this.features, this.filter, this.controlHandlers, this.pairs);
  }

  /** Pairs in use (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, or a vhost-user front-end's enabled rings). */
  useQueuePairs(n: number): boolean {
    return this.setQueuePairs(n);
  }

  /** Starts (a PcapWriter) or stops (null) capturing frames. The writer stays the caller's to close. */
  setCapture(capture: PcapWriter | null): void {
    this.capture = capture;
    for (const p of this.queuePairs) p.observe(this.tracer, capture);
  }

  /** Counters of the main thread and of every queue pair in a worker, summed. */
  totalMetrics(): NetMetrics {
    const total = new NetMetrics();
    total.add(this.metrics);
    this.threads.addMetrics(total);
    return total;
  }

  protected override onTracer(tracer: Tracer | null): void {
    for (const p of this.queuePairs) p.observe(tracer, this.capture);
  }

  protected override acceptFeatures(f: bigint): boolean {
    return featureDependencyError(f, this.controlIsElsewhere(f)) === null;
  }

  // With these features, does someone else run the control queue (so that the dependencies on CTRL_VQ are met there)?
  private controlIsElsewhere(f: bigint): boolean {
    if (this.controlIfNegotiated) return !hasFeature(f, VIRTIO_NET_F_CTRL_VQ);
    return this.controlElsewhere;
  }

  protected override onDriverOk(): void {
    if (this.closed) return;
    const f = this.features;
    this.guestOffloads = f & GUEST_OFFLOADS;
    this.programOffloads();
    if (hasFeature(f, VIRTIO_NET_F_CTRL_VLAN)) this.filter.vlanFiltering = true;
    for (let i = 0; i < this.pairs; i++) this.servePair(i);
    this.serveControl();
    this.setQueuePairs(1);
    for (const p of this.queuePairs) p.kick(2 * p.pair + 1);
  }

  protected processQueue(index: number, q: DeviceQueue): void {
    this.metrics.kicks++;
    if (index === this.controlQueueIndex) {
      const r = this.control?.process() ?? false;
      if (r === 'broken') this.markBroken(q.brokenReason);
      else if (r) this.raise('vring', index);
      this.threads.setFilter(this.filter); // pairs in workers keep their own copy of the filter
      return;
    }
    if (this.threads.kick(index)) return;
    this.queuePairs[index >>> 1]?.kick(index);
  }

  protected override onBroken(): void {
    this.stopQueues();
  }

  protected override onReset(): void {
    this.stopQueues();
    this.activePairs = 1;
    this.config.mac = this.defaultMac;
    this.config.status = this.config.status & ~VIRTIO_NET_S_ANNOUNCE;
    this.filter.reset(this.defaultMac);
  }

  protected override onMemoryMove(before: boolean): void {
    if (before) return this.stopQueues();
    for (let i = 0; i <= this.pairs; i++) if (i < this.pairs) this.servePair(i); else this.serveControl();
  }

  // Worker threads first: they must be off the rings before anything changes.
  private stopQueues(): void {
    this.threads.stopAll(this.metrics);
    for (const p of this.queuePairs) p.stop();
    this.control = null;
  }

  // The link changed: the config status bit, the pairs (a pair whose link is down does not transmit), a config interrupt.
  private onLinkChange(up: boolean): void {
    const s = this.config.status;
    this.config.status = up ? s | VIRTIO_NET_S_LINK_UP : s & ~VIRTIO_NET_S_LINK_UP;
    for (const p of this.queuePairs) p.linkUp = up;
    this.threads.setLinkUp(up);
    if (this.running) this.raise('config', -1);
  }

  private hostError(e: Error): void {
    this.metrics.tapErrors++;
    if (this.listenerCount('error') > 0) this.emit('error', e);
  }

  // VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET (§5.1.6.5.6.1): only offloads that were negotiated.
  private setGuestOffloads(offloads: bigint): boolean {
    if ((offloads & ~(this.features & GUEST_OFFLOADS)) !== 0n) return false;
    const f = offloads | (this.features & ~GUEST_OFFLOADS);
    if (featureDependencyError(f, this.controlIsElsewhere(f)) !== null) return false;
    this.guestOffloads = offloads;
    this.programOffloads();
    return true;
  }

  /** TUNSETOFFLOAD from the guest's offloads: what the host may hand the guest. */
  private programOffloads(): void {
    try {
      this.tap.setOffloads(tunOffloads(this.guestOffloads)); // bits the kernel refuses are left off, not fatal
    } catch (e) {
      this.hostError(e as Error);
    }
  }

  // VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (§5.1.6.5.5): pairs beyond n are detached from the TAP's steering and left unread.
  private setQueuePairs(n: number): boolean {
    if (n < 1 || n > this.pairs) return false;
    this.activePairs = n;
    if (this.pairs > 1) {
      try {
        for (const p of this.queuePairs) p.tap.setEnabled(p.pair < n);
      } catch (e) {
        this.hostError(e as Error);
        return false;
      }
    }
    for (const p of this.queuePairs) p.setInUse(p.pair < n);
    return true;
  }
}
