// The virtio-net device (VIRTIO 1.2 §5.1) over a TAP. Queues: receiveq1,
// transmitq1, ..., receiveqN, transmitqN, then controlq (§5.1.2). Pair i is
// served by TAP queue i (IFF_MULTI_QUEUE for N > 1).
import { Worker } from 'node:worker_threads';

import type { Tap, TapQueue } from '../tap/tap.js';
import { TunOffload } from '../tap/tap.js';
import { parseMac, randomMac } from '../util/addr.js';
import { bit, hasFeature } from '../virtio/constants.js';
import { VirtioDeviceCore, type InterruptKind } from '../virtio/device.js';
import type { DeviceQueue } from '../virtio/queue.js';
import { NetConfig } from './config.js';
import {
  NET_HDR_SIZE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_GUEST_USO4,
  VIRTIO_NET_F_GUEST_USO6,
  VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
} from './constants.js';
import { ControlQueue } from './control-queue.js';
import { featureDependencyError, featureMask, featureNames, NET_FEATURES, type NetFeatureSwitches } from './features.js';
import { RxFilter } from './filter.js';
import { NetMetrics } from './metrics.js';
import { CTRL_BUSY, CTRL_STOP, CTRL_WORDS, type FromWorker, type PairWorkerData } from './pair-protocol.js';
import type { NetQueueContext } from './queue-context.js';
import { RateLimiter, type RateLimit } from './rate-limiter.js';
import { RxQueue } from './rx.js';
import { TxQueue } from './tx.js';
import { FrameObserver } from './observer.js';
import type { PcapWriter } from './pcap.js';
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

interface PairWorker {
  worker: Worker;
  control: Int32Array;
  metrics: NetMetrics;
}

interface Pair {
  tap: TapQueue;
  rx: RxQueue | null;
  tx: TxQueue | null;
  onReadable: () => void;
  onWritable: () => void;
  onError: (e: Error) => void;
}

export class NetDevice extends VirtioDeviceCore {
  readonly tap: Tap;
  readonly config: NetConfig;
  readonly filter = new RxFilter();
  readonly metrics = new NetMetrics();
  readonly pairs: number;
  /** Pairs in use (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET); 1 until the driver says more. */
  activePairs = 1;
  private readonly pairState: Pair[];
  private interruptFn: (kind: InterruptKind, queue: number) => void;
  private readonly limits: { tx?: RateLimit; rx?: RateLimit };
  private readonly batch: number;
  private readonly txTimerMs: number;
  private readonly defaultMac: Uint8Array;
  private control: ControlQueue | null = null;
  private readonly workerPairs: Set<number>;
  private readonly controlElsewhere: boolean;
  private readonly workers = new Map<number, PairWorker>();
  private readonly layoutPacked: () => boolean;
  private guestOffloads = 0n;
  private closed = false;
  private capture: PcapWriter | null;

  constructor(o: NetDeviceOptions) {
    const pairs = o.tap.queues.length;
    const switches: NetFeatureSwitches = { ...o.features };
    if (pairs < 2) switches.MQ = false;
    if (o.controlElsewhere === true) {
      for (const k of ['CTRL_VQ', 'CTRL_RX', 'CTRL_VLAN', 'CTRL_RX_EXTRA', 'CTRL_MAC_ADDR', 'CTRL_GUEST_OFFLOADS'] as const) switches[k] = false;
    }
    const features = featureMask(switches);
    const ctrl = hasFeature(features, NET_FEATURES.CTRL_VQ);
    super({ features, numQueues: 2 * pairs + (ctrl ? 1 : 0), interrupt: (k, q) => this.raiseInterrupt(k, q), featureNames, ...(o.trace ? { trace: o.trace } : {}) });
    this.capture = o.capture ?? null;
    if (o.tap.vnetHdrSize !== NET_HDR_SIZE) {
      throw new TypeError(`NetDevice needs a TAP opened with vnetHdr (a ${NET_HDR_SIZE}-byte header), not ${o.tap.vnetHdrSize}`);
    }
    this.tap = o.tap;
    this.pairs = pairs;
    this.interruptFn = o.interrupt ?? (() => {});
    this.limits = o.rateLimit ?? {};
    this.batch = o.batch ?? 64;
    const txTimer = o.txTimerMs ?? 0;
    if (!Number.isInteger(txTimer) || txTimer < 0 || txTimer > 1000) {
      throw new RangeError(`txTimerMs must be an integer number of milliseconds from 0 to 1000, not ${txTimer}`);
    }
    this.txTimerMs = txTimer;
    this.workerPairs = new Set(o.workers ?? []);
    this.controlElsewhere = o.controlElsewhere === true;
    this.layoutPacked = () => hasFeature(this.features, NET_FEATURES.RING_PACKED);
    this.defaultMac = o.mac === undefined ? randomMac() : typeof o.mac === 'string' ? parseMac(o.mac) : o.mac.slice(0, 6);
    this.config = new NetConfig(this.defaultMac, pairs, o.mtu ?? o.tap.mtu);
    this.filter.reset(this.defaultMac);
    this.pairState = o.tap.queues.map((tap, i) => {
      const p: Pair = {
        tap,
        rx: null,
        tx: null,
        onReadable: () => p.rx?.process(),
        onWritable: () => p.tx?.onWritable(),
        onError: (e) => this.hostError(e),
      };
      tap.on('readable', p.onReadable);
      tap.on('writable', p.onWritable);
      tap.on('error', p.onError);
      void i;
      return p;
    });
  }

  /** Where interrupts go from now on (counted in metrics first). */
  override setInterruptSink(fn: (kind: InterruptKind, queue: number) => void): void {
    this.interruptFn = fn;
  }

  /** Virtqueue index of the control queue, or -1. */
  get controlQueueIndex(): number {
    return this.queues.length % 2 === 1 ? this.queues.length - 1 : -1;
  }

  get mac(): Uint8Array {
    return this.config.mac;
  }

  /** A driver read of the device-specific configuration (§5.1.4). */
  readConfig(offset: number, size: number): number {
    return this.config.read(offset, size);
  }

  /** Link state as the driver sees it (with STATUS); raises a config interrupt. */
  setLinkUp(up: boolean): void {
    const s = this.config.status;
    this.config.status = up ? s | VIRTIO_NET_S_LINK_UP : s & ~VIRTIO_NET_S_LINK_UP;
    if (this.running) this.raise('config', -1);
  }

  /** Asks the guest to announce itself after a migration (GUEST_ANNOUNCE). */
  requestAnnounce(): void {
    if (!hasFeature(this.features, NET_FEATURES.GUEST_ANNOUNCE)) return;
    this.config.status = this.config.status | VIRTIO_NET_S_ANNOUNCE;
    this.raise('config', -1);
  }

  /** Stops serving and detaches from the TAP's events. The TAP stays open: it is the caller's. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopQueues();
    for (const p of this.pairState) {
      p.tap.off('readable', p.onReadable);
      p.tap.off('writable', p.onWritable);
      p.tap.off('error', p.onError);
    }
  }

  protected override acceptFeatures(f: bigint): boolean {
    return featureDependencyError(f, this.controlElsewhere) === null;
  }

  protected override onDriverOk(): void {
    if (this.closed) return;
    const f = this.features;
    this.guestOffloads = f & this.guestOffloadMask();
    this.programOffloads();
    if (hasFeature(f, VIRTIO_NET_F_CTRL_VLAN)) this.filter.vlanFiltering = true;
    for (let i = 0; i < this.pairs; i++) this.servePair(i);
    const ci = this.controlQueueIndex;
    const cq = ci >= 0 ? this.queues[ci] : null;
    if (cq) {
      this.control = new ControlQueue(ci, cq, f, this.filter, {
        setGuestOffloads: (o) => this.setGuestOffloads(o),
        setQueuePairs: (n) => this.setQueuePairs(n),
        setMac: (mac) => {
          this.config.mac = mac;
          this.filter.setMac(mac);
        },
        announceAck: () => {
          this.config.status = this.config.status & ~VIRTIO_NET_S_ANNOUNCE;
        },
      }, this.pairs);
    }
    this.setQueuePairs(1);
    for (let i = 0; i < this.pairs; i++) this.pairState[i]!.tx?.process();
  }

  /**
   * Serves pair i's activated queues. Called for every pair at DRIVER_OK, and
   * by a transport whose front-end starts a pair later (vhost-user enables a
   * pair's rings when the guest asks for more pairs). Does nothing for a pair
   * already served or whose queues are not activated.
   */
  servePair(i: number): void {
    const p = this.pairState[i];
    if (p === undefined || !this.running || p.rx !== null || p.tx !== null || this.workers.has(i)) return;
    const rxq = this.queues[2 * i];
    const txq = this.queues[2 * i + 1];
    const observed = this.tracer !== null || this.capture !== null;
    if (rxq && txq && this.workerPairs.has(i) && !observed && this.startWorker(i, rxq, txq)) return;
    const ctx = this.context()(i);
    if (rxq) {
      rxq.mem.registerIo();
      p.rx = new RxQueue(2 * i, rxq, p.tap, ctx, new RateLimiter(this.limits.rx), this.config.mtu, this.batch);
      rxq.disableNotifications();
    }
    if (txq) {
      txq.mem.registerIo();
      p.tx = new TxQueue(2 * i + 1, txq, p.tap, ctx, new RateLimiter(this.limits.tx), this.batch, this.txTimerMs);
      txq.enableNotifications();
    }
    this.observePair(p);
    if (p.tx !== null && this.activePairs > i) p.tx.process();
    this.updateWatch(i);
  }

  /** Starts (a PcapWriter) or stops (null) capturing frames. The writer stays the caller's to close. */
  setCapture(capture: PcapWriter | null): void {
    this.capture = capture;
    for (const p of this.pairState) this.observePair(p);
  }

  protected override onTracer(): void {
    for (const p of this.pairState) this.observePair(p);
  }

  private observePair(p: Pair): void {
    const on = this.tracer !== null || this.capture !== null;
    if (p.rx !== null) p.rx.observer = on ? new FrameObserver(this.tracer, this.capture) : null;
    if (p.tx !== null) p.tx.observer = on ? new FrameObserver(this.tracer, this.capture) : null;
  }

  /** Pairs in use (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, or a vhost-user front-end's enabled rings). */
  useQueuePairs(n: number): boolean {
    return this.setQueuePairs(n);
  }

  protected processQueue(index: number, q: DeviceQueue): void {
    this.metrics.kicks++;
    if (index === this.controlQueueIndex) {
      const r = this.control?.process() ?? false;
      if (r === 'broken') this.markBroken(q.brokenReason);
      else if (r) this.raise('vring', index);
      // Queue pairs in workers keep their own copy of the filter.
      if (this.workers.size > 0) {
        const state = this.filter.state();
        for (const w of this.workers.values()) w.worker.postMessage({ filter: state });
      }
      return;
    }
    const w = this.workers.get(index >>> 1);
    if (w !== undefined) {
      w.worker.postMessage({ kick: index });
      return;
    }
    const p = this.pairState[index >>> 1];
    if (p === undefined) return;
    if (index % 2 === 0) p.rx?.onKick();
    else p.tx?.process();
  }

  protected override onBroken(): void {
    this.stopQueues();
  }

  protected override onReset(): void {
    this.stopQueues();
    this.control = null;
    this.activePairs = 1;
    this.config.mac = this.defaultMac;
    this.config.status = this.config.status & ~VIRTIO_NET_S_ANNOUNCE;
    this.filter.reset(this.defaultMac);
  }

  /** Counters of the main thread and of every queue pair in a worker, summed. */
  totalMetrics(): NetMetrics {
    const total = new NetMetrics();
    total.add(this.metrics);
    for (const w of this.workers.values()) total.add(w.metrics);
    return total;
  }

  // Serves pair i in a worker thread; false (and an 'error') when guest memory is not shared.
  private startWorker(i: number, rxq: DeviceQueue, txq: DeviceQueue): boolean {
    const regions = rxq.mem.regions;
    if (!regions.every((r) => r.bytes.buffer instanceof SharedArrayBuffer)) {
      this.hostError(new Error(`queue pair ${i} cannot run in a worker: guest memory is not a SharedArrayBuffer; serving it on this thread`));
      return false;
    }
    const control = new Int32Array(new SharedArrayBuffer(4 * CTRL_WORDS));
    const metricsBuf = new SharedArrayBuffer(8 * NetMetrics.SIZE);
    const data: PairWorkerData = {
      pair: i,
      fd: this.pairState[i]!.tap.fd,
      tapName: this.tap.name,
      regions: regions.map((r) => ({ gpa: r.gpa, buffer: r.bytes.buffer as SharedArrayBuffer, byteOffset: r.bytes.byteOffset, byteLength: r.bytes.byteLength })),
      layout: this.layoutPacked() ? 'packed' : 'split',
      rx: { index: 2 * i, addresses: { ...rxq.addresses } },
      tx: { index: 2 * i + 1, addresses: { ...txq.addresses } },
      features: this.features.toString(),
      mtu: this.config.mtu,
      batch: this.batch,
      txTimerMs: this.txTimerMs,
      rateLimit: this.limits,
      filter: this.filter.state(),
      control: control.buffer as SharedArrayBuffer,
      metrics: metricsBuf,
    };
    const worker = spawnPairWorker(data);
    worker.on('message', (m: FromWorker) => {
      if ('interrupt' in m) this.raise('vring', m.interrupt);
      else if ('broken' in m) this.markBroken(m.broken);
      else if ('error' in m) this.hostError(new Error(`queue pair ${i}: ${m.error}`));
    });
    worker.on('error', (e) => this.hostError(e));
    this.workers.set(i, { worker, control, metrics: new NetMetrics(new Float64Array(metricsBuf)) });
    return true;
  }

  // Stops a worker before the rings can change under it: STOP, then wait
  // until it is not touching them, then end the thread. Its counts are kept.
  private stopWorkers(): void {
    for (const w of this.workers.values()) {
      Atomics.store(w.control, CTRL_STOP, 1);
      const deadline = Date.now() + 2000;
      while (Atomics.load(w.control, CTRL_BUSY) === 1 && Date.now() < deadline) Atomics.wait(w.control, CTRL_BUSY, 1, 50);
      void w.worker.terminate();
      this.metrics.add(w.metrics);
    }
    this.workers.clear();
  }

  private stopQueues(): void {
    this.stopWorkers();
    for (const p of this.pairState) {
      p.rx?.stop();
      p.tx?.stop();
      p.rx = null;
      p.tx = null;
      if (!p.tap.closed) p.tap.watch({});
    }
  }

  private context(): (pair: number) => NetQueueContext {
    return (pair) => ({
      features: this.features,
      metrics: this.metrics,
      filter: this.filter,
      interrupt: (i) => this.raise('vring', i),
      markBroken: (fault) => this.markBroken(fault),
      hostError: (e) => this.hostError(e),
      updateWatch: () => this.updateWatch(pair),
    });
  }

  private updateWatch(pair: number): void {
    const p = this.pairState[pair];
    if (p === undefined || p.tap.closed || this.workers.has(pair)) return; // a worker watches its own
    const active = pair < this.activePairs && this.running;
    p.tap.watch({ readable: active && p.rx !== null && p.rx.wantsReadable, writable: p.tx !== null && p.tx.waitingWritable });
  }

  private raiseInterrupt(kind: InterruptKind, queue: number): void {
    this.metrics.interrupts++;
    this.interruptFn(kind, queue);
  }

  private hostError(e: Error): void {
    this.metrics.tapErrors++;
    if (this.listenerCount('error') > 0) this.emit('error', e);
  }

  private guestOffloadMask(): bigint {
    return [VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_GUEST_USO4, VIRTIO_NET_F_GUEST_USO6].reduce(
      (m, b) => m | bit(b),
      0n,
    );
  }

  // VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET (§5.1.6.5.6.1): only offloads that were negotiated.
  private setGuestOffloads(offloads: bigint): boolean {
    if ((offloads & ~(this.features & this.guestOffloadMask())) !== 0n) return false;
    if (featureDependencyError(offloads | (this.features & ~this.guestOffloadMask()), this.controlElsewhere) !== null) return false;
    this.guestOffloads = offloads;
    this.programOffloads();
    return true;
  }

  /** TUNSETOFFLOAD from the guest's offloads: what the host may hand the guest. */
  private programOffloads(): void {
    const g = this.guestOffloads;
    let bits = 0;
    if (hasFeature(g, VIRTIO_NET_F_GUEST_CSUM)) {
      bits |= TunOffload.CSUM;
      if (hasFeature(g, VIRTIO_NET_F_GUEST_TSO4)) bits |= TunOffload.TSO4;
      if (hasFeature(g, VIRTIO_NET_F_GUEST_TSO6)) bits |= TunOffload.TSO6;
      if (hasFeature(g, VIRTIO_NET_F_GUEST_ECN)) bits |= TunOffload.TSO_ECN;
      if (hasFeature(g, VIRTIO_NET_F_GUEST_UFO)) bits |= TunOffload.UFO;
      if (hasFeature(g, VIRTIO_NET_F_GUEST_USO4)) bits |= TunOffload.USO4;
      if (hasFeature(g, VIRTIO_NET_F_GUEST_USO6)) bits |= TunOffload.USO6;
    }
    try {
      this.tap.setOffloads(bits); // bits the kernel refuses are left off, not fatal
    } catch (e) {
      this.hostError(e as Error);
    }
  }

  private setQueuePairs(n: number): boolean {
    if (n < 1 || n > this.pairs) return false;
    this.activePairs = n;
    if (this.pairs > 1) {
      try {
        for (let i = 0; i < this.pairs; i++) this.pairState[i]!.tap.setEnabled(i < n);
      } catch (e) {
        this.hostError(e as Error);
        return false;
      }
    }
    for (let i = 0; i < this.pairs; i++) this.updateWatch(i);
    return true;
  }
}

// The worker runs pair-worker.js from dist, or pair-worker.ts through tsx when
// the library itself runs from source (tests, scripts).
function spawnPairWorker(data: PairWorkerData): Worker {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    const tsx = import.meta.resolve('tsx/esm/api');
    const entry = new URL('./pair-worker.ts', here).href;
    const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
    return new Worker(code, { eval: true, workerData: data });
  }
  return new Worker(new URL('./pair-worker.js', here), { workerData: data });
}
