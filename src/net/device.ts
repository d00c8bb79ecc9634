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
import { parseIpv4, parseMac, randomMac } from '../util/addr.js';
import { hasFeature } from '../virtio/constants.js';
import { VirtioDeviceCore, type InterruptKind } from '../virtio/device.js';
import type { DeviceQueue } from '../virtio/queue.js';
import { buildQueues } from '../virtio/queue-snapshot.js';
import { SnapshotError } from '../virtio/snapshot-fields.js';
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
import type { ControlMode, NetDeviceOptions, NetRestoreOptions } from './device-options.js';
import { featureDependencyError, featureNames, GUEST_OFFLOADS, offeredFeatures } from './features.js';
import { guestOffloadsAllowed, programTapOffloads } from './offloads.js';
import { RxFilter } from './filter.js';
import { LINK_POLL_MS, LinkState } from './link-state.js';
import { NetMetrics } from './metrics.js';
import { PairThreads } from './pair-thread.js';
import type { PcapWriter } from './pcap.js';
import { pairSettings, QueuePair, type PairOwner } from './queue-pair.js';
import { netSnapshot, pairState, restoredOptions, sendGratuitousArp, type NetSnapshot } from './snapshot.js';
import { checkRestoreTap, readNetSnapshot } from './snapshot-read.js';
import type { Tracer } from '../trace/trace.js';

export type { NetDeviceOptions, NetRestoreOptions } from './device-options.js';

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
  /** Who runs the control queue (see the top of this file). */
  private readonly control: ControlMode;
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
  private controlQueue: ControlQueue | null = null;
  private guestOffloads = 0n;
  private closed = false;
  private capture: PcapWriter | null;
  /** A restored device not yet resumed: whether to announce, and the guest's IPv4 address for a gratuitous ARP. */
  private pending: { announce: boolean; ip: number } | null = null;

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
    this.capture = o.capture ?? null;
    this.tap = o.tap;
    this.pairs = pairs;
    this.interruptFn = o.interrupt ?? (() => {});
    this.workerPairs = new Set(o.workers ?? []);
    this.control = o.controlIfNegotiated === true ? 'ifNegotiated' : o.controlElsewhere === true ? 'elsewhere' : 'device';
    this.defaultMac = o.mac === undefined ? randomMac() : typeof o.mac === 'string' ? parseMac(o.mac) : o.mac.slice(0, 6);
    this.config = new NetConfig(this.defaultMac, pairs, o.mtu ?? o.tap.mtu);
    this.filter.reset(this.defaultMac);
    const settings = pairSettings(o, this.config.mtu);
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
    if (!this.running || this.controlQueue !== null || !cq) return;
    this.controlQueue = new ControlQueue(ci, cq, this.features, this.filter, this.controlHandlers, this.pairs);
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

  /**
   * The device's state as a versioned JSON object (docs/snapshot.md). The
   * receive queues give their pending chains back to the ring first, and
   * serving goes on: close the device (or keep its guest from running) before
   * the snapshot is restored. Throws SnapshotError, writing nothing, for a
   * state the format cannot carry: closed, or a pair in a worker thread.
   */
  snapshot(): NetSnapshot {
    if (this.closed) throw new SnapshotError('ERR_SNAPSHOT_CLOSED', 'the device is closed');
    if (this.threads.size > 0) throw new SnapshotError('ERR_SNAPSHOT_WORKER', 'queue pairs run in worker threads, whose rings this thread cannot quiesce');
    const pairStates = this.queuePairs.map((p) => p.quiesce()); // before the rings' positions are read
    const { deviceFeatures: offered, control, defaultMac, activePairs, guestOffloads, metrics, link, filter, config, queuePairs } = this;
    return netSnapshot({ offered, control, defaultMac, settings: queuePairs[0]!.settings, core: this.snapshotCore(), config: config.bytes, activePairs, guestOffloads, filter: filter.state(), adminUp: link.adminUp, pairStates, metrics });
  }

  /**
   * A device that goes on from a snapshot (parsed, or JSON text), on `o.tap` over the
   * same guest memory, serving and announcing the guest unless `o.paused`.
   * A malformed, truncated or newer snapshot, or one that does not fit the
   * TAP or the memory, is refused with a SnapshotError naming the field,
   * before any TAP is touched or queue activated.
   */
  static restore(snapshot: unknown, o: NetRestoreOptions): NetDevice {
    const s = readNetSnapshot(snapshot);
    checkRestoreTap(s, o.tap);
    const tracer = o.trace ?? null;
    const features = BigInt(s.device.offeredFeatures) & BigInt(s.core.driverFeatures);
    const queues = buildQueues(s.core, features, o.memory, 'core.queues', tracer === null ? null : (queue) => ({ tracer, queue }));
    const dev = new NetDevice(restoredOptions(s, o));
    dev.link.setAdmin(s.link.adminUp); // before the status says running: no interrupt
    dev.restoreCore(s.core, queues);
    dev.config.bytes.set(Buffer.from(s.config, 'base64'));
    dev.filter.applyState(s.filter);
    dev.activePairs = s.activePairs;
    dev.guestOffloads = BigInt(s.guestOffloads);
    dev.metrics.setCounters(s.metrics.counters, s.metrics.drops);
    s.pairs.forEach((p, i) => dev.queuePairs[i]!.resumeWith(pairState(p)));
    dev.pending = { announce: o.announce !== false, ip: o.guestIpv4 === undefined ? 0 : parseIpv4(o.guestIpv4) };
    if (o.paused !== true) dev.resume();
    return dev;
  }

  /** Starts a restored device (restore() does, unless paused): serves it if it ran, publishes used entries, tells of a link change, announces. */
  resume(): void {
    const r = this.pending;
    this.pending = null;
    if (r === null || this.closed) return;
    if (((this.config.status & VIRTIO_NET_S_LINK_UP) !== 0) !== this.link.up) this.onLinkChange(this.link.up);
    if (!this.running) return;
    this.serveAll(this.activePairs);
    this.queues.forEach((q, i) => {
      if (q !== null && q.flushUsed()) this.raise('vring', i);
    });
    if (r.announce && !this.requestAnnounce()) sendGratuitousArp(this.tap, this.config.mac, r.ip);
  }

  protected override onTracer(tracer: Tracer | null): void {
    for (const p of this.queuePairs) p.observe(tracer, this.capture);
  }

  protected override acceptFeatures(f: bigint): boolean {
    return featureDependencyError(f, this.controlIsElsewhere(f)) === null;
  }

  // With these features, does someone else run the control queue (so that the dependencies on CTRL_VQ are met there)?
  private controlIsElsewhere(f: bigint): boolean {
    return this.control === 'ifNegotiated' ? !hasFeature(f, VIRTIO_NET_F_CTRL_VQ) : this.control === 'elsewhere';
  }

  protected override onDriverOk(): void {
    if (this.closed) return;
    const f = this.features;
    this.guestOffloads = f & GUEST_OFFLOADS;
    if (hasFeature(f, VIRTIO_NET_F_CTRL_VLAN)) this.filter.vlanFiltering = true;
    this.serveAll(1);
  }

  // Serves every pair and the control queue, `inUse` pairs in use, the guest offloads as they are; each transmit ring is looked at.
  private serveAll(inUse: number): void {
    this.programOffloads();
    for (let i = 0; i < this.pairs; i++) this.servePair(i);
    this.serveControl();
    this.setQueuePairs(inUse);
    for (const p of this.queuePairs) p.kick(2 * p.pair + 1);
  }

  protected processQueue(index: number, q: DeviceQueue): void {
    this.metrics.kicks++;
    if (index === this.controlQueueIndex) {
      const r = this.controlQueue?.process() ?? false;
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
    if (before) this.stopQueues();
    else this.serveAll(this.activePairs);
  }

  // Worker threads first: they must be off the rings before anything changes.
  private stopQueues(): void {
    this.threads.stopAll(this.metrics);
    for (const p of this.queuePairs) p.stop();
    this.controlQueue = null;
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

  // VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET (§5.1.6.5.6.1), see offloads.ts.
  private setGuestOffloads(offloads: bigint): boolean {
    if (!guestOffloadsAllowed(offloads, this.features, (f) => featureDependencyError(f, this.controlIsElsewhere(f)) === null)) return false;
    this.guestOffloads = offloads;
    this.programOffloads();
    return true;
  }

  private programOffloads(): void {
    programTapOffloads(this.tap, this.guestOffloads, (e) => this.hostError(e));
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
