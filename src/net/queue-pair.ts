// One queue pair (receiveqN and transmitqN, VIRTIO 1.2 §5.1.2) and the TAP
// queue that serves it: the receive and transmit queues, their rate
// limiters and frame observer, the TAP queue's events, and which readiness
// the TAP queue is watched for. The same class runs on the device's thread
// and inside a worker thread (pair-worker.ts); only its owner differs.
import type { TapQueue } from '../tap/tap.js';
import type { DeviceQueue } from '../virtio/queue.js';
import type { RxFilter } from './filter.js';
import type { NetMetrics } from './metrics.js';
import { FrameObserver } from './observer.js';
import type { PcapWriter } from './pcap.js';
import type { NetQueueContext } from './queue-context.js';
import { RateLimiter, type LimiterLevels, type RateLimit } from './rate-limiter.js';
import { RxQueue } from './rx.js';
import { TxQueue } from './tx.js';
import type { Tracer } from '../trace/trace.js';

/** How every pair of a device is served (plain data: a worker is handed it). */
export interface PairSettings {
  mtu: number;
  /** Frames per native call. */
  batch: number;
  txTimerMs: number;
  rateLimit: { tx?: RateLimit; rx?: RateLimit };
}

/** The pair settings a device's options make; throws RangeError for a transmit timer out of range. */
export function pairSettings(o: { batch?: number; txTimerMs?: number; rateLimit?: PairSettings['rateLimit'] }, mtu: number): PairSettings {
  const txTimerMs = o.txTimerMs ?? 0;
  if (!Number.isInteger(txTimerMs) || txTimerMs < 0 || txTimerMs > 1000) {
    throw new RangeError(`txTimerMs must be an integer number of milliseconds from 0 to 1000, not ${txTimerMs}`);
  }
  return { mtu, batch: o.batch ?? 64, txTimerMs, rateLimit: o.rateLimit ?? {} };
}

/** Where a pair's interrupts, ring faults and host errors go: the device, or a worker's messages to it. */
export interface PairOwner {
  /** A used-buffer interrupt for virtqueue `index`. */
  readonly interrupt: (index: number) => void;
  /** Tier 2: a ring is corrupt. */
  readonly markBroken: (fault: number) => void;
  /** Tier 3: the TAP failed. */
  readonly hostError: (err: Error) => void;
}

/**
 * Brackets every touch of the rings (a worker's STOP/BUSY block): nothing is
 * done when enter() says false; leave() follows every enter() that said true.
 */
export interface RingGate {
  enter(): boolean;
  leave(): void;
}

/** What a pair has in hand beyond its rings (a snapshot's part, docs/snapshot.md); null parts: not served. */
export interface PairState {
  /** MRG_RXBUF: the frame read ahead and held for want of buffers, its header first, or null. */
  heldFrame: Uint8Array | null;
  /** The rate limiters' bucket levels each way, or null when the queue is not served. */
  rx: LimiterLevels | null;
  tx: LimiterLevels | null;
}

const enum Work {
  Readable,
  Writable,
  RxKick,
  TxKick,
}

export class QueuePair implements NetQueueContext {
  readonly pair: number;
  readonly tap: TapQueue;
  readonly metrics: NetMetrics;
  readonly filter: RxFilter;
  readonly interrupt: (index: number) => void;
  readonly markBroken: (fault: number) => void;
  readonly hostError: (err: Error) => void;
  /** The features negotiated when the pair was last started. */
  features = 0n;
  /** The device's link is up; set by the device (or a worker's message). See NetQueueContext.linkUp. */
  linkUp = true;
  private rx: RxQueue | null = null;
  private tx: TxQueue | null = null;
  private rxLimiter: RateLimiter | null = null;
  private txLimiter: RateLimiter | null = null;
  /** What the next start() takes on (a restore), or null. */
  private resume: PairState | null = null;
  /** In use (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET): a pair not in use does not read the TAP. */
  private inUse = true;
  private observer: FrameObserver | null = null;
  readonly settings: PairSettings;
  private readonly gate: RingGate | null;
  private readonly onReadable = (): void => this.serve(Work.Readable);
  private readonly onWritable = (): void => this.serve(Work.Writable);
  private readonly onTapError = (e: Error): void => this.hostError(e);

  constructor(pair: number, tap: TapQueue, owner: PairOwner, metrics: NetMetrics, filter: RxFilter, settings: PairSettings, gate: RingGate | null = null) {
    this.pair = pair;
    this.tap = tap;
    this.metrics = metrics;
    this.filter = filter;
    this.interrupt = owner.interrupt;
    this.markBroken = owner.markBroken;
    this.hostError = owner.hostError;
    this.settings = settings;
    this.gate = gate;
    tap.on('readable', this.onReadable);
    tap.on('writable', this.onWritable);
    tap.on('error', this.onTapError);
  }

  /** Whether the pair is being served (it has a receive or transmit queue). */
  get serving(): boolean {
    return this.rx !== null || this.tx !== null;
  }

  /**
   * Serves the activated queues of the pair under the negotiated features:
   * receive reads the TAP until the driver runs out of buffers (its kicks
   * off meanwhile), transmit waits for kicks. The first transmit is kick().
   */
  start(rxq: DeviceQueue | null, txq: DeviceQueue | null, features: bigint): void {
    this.features = features;
    const s = this.settings;
    const resume = this.resume;
    this.resume = null;
    if (rxq !== null) {
      rxq.mem.registerIo();
      this.rxLimiter = new RateLimiter(s.rateLimit.rx);
      if (resume?.rx) this.rxLimiter.setLevels(resume.rx);
      this.rx = new RxQueue(2 * this.pair, rxq, this.tap, this, this.rxLimiter, s.mtu, s.batch);
      if (resume?.heldFrame) this.rx.buffers.hold(resume.heldFrame);
      rxq.disableNotifications();
    }
    if (txq !== null) {
      txq.mem.registerIo();
      this.txLimiter = new RateLimiter(s.rateLimit.tx);
      if (resume?.tx) this.txLimiter.setLevels(resume.tx);
      this.tx = new TxQueue(2 * this.pair + 1, txq, this.tap, this, this.txLimiter, s.batch, s.txTimerMs);
      txq.enableNotifications();
    }
    this.attachObserver();
    this.updateWatch();
  }

  /**
   * For a snapshot: the receive queue gives its pending chains back to the
   * ring (its next read pops them again); returns the held frame (a copy)
   * and the buckets' levels. Serving goes on.
   */
  quiesce(): PairState {
    const rx = this.rx;
    if (!this.serving && this.resume !== null) return this.resume; // restored, not served yet
    return {
      heldFrame: rx !== null ? rx.buffers.quiesce() : null,
      rx: rx !== null && this.rxLimiter !== null ? this.rxLimiter.levels() : null,
      tx: this.tx !== null && this.txLimiter !== null ? this.txLimiter.levels() : null,
    };
  }

  /** What the next start() takes on: a snapshot's held frame and bucket levels (a restore). */
  resumeWith(state: PairState): void {
    this.resume = state;
  }

  /** A driver notification for virtqueue `index` of this pair (receive: even, transmit: odd). */
  kick(index: number): void {
    this.serve((index & 1) === 0 ? Work.RxKick : Work.TxKick);
  }

  /** Stops serving (the rings are about to change or go); the TAP queue's events stay subscribed. */
  stop(): void {
    this.rx?.stop();
    this.tx?.stop();
    this.rx = null;
    this.tx = null;
    this.rxLimiter = null;
    this.txLimiter = null;
    if (!this.tap.closed) this.tap.watch({});
  }

  /** Stops serving and leaves the TAP queue's events. */
  close(): void {
    this.stop();
    this.tap.off('readable', this.onReadable);
    this.tap.off('writable', this.onWritable);
    this.tap.off('error', this.onTapError);
  }

  /** In use or not (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET): a pair not in use leaves the TAP unread. */
  setInUse(inUse: boolean): void {
    this.inUse = inUse;
    this.updateWatch();
  }

  /** Reports every frame to a tracer and/or a capture; both null: to no one. */
  observe(tracer: Tracer | null, capture: PcapWriter | null): void {
    this.observer = tracer !== null || capture !== null ? new FrameObserver(tracer, capture) : null;
    this.attachObserver();
  }

  /** Watches the TAP queue for what the receive and transmit queues wait for. */
  updateWatch(): void {
    const tap = this.tap;
    if (tap.closed) return;
    const rx = this.rx;
    const tx = this.tx;
    tap.watch({ readable: this.inUse && rx !== null && rx.wantsReadable, writable: tx !== null && tx.waitingWritable });
  }

  private attachObserver(): void {
    if (this.rx !== null) this.rx.observer = this.observer;
    if (this.tx !== null) this.tx.observer = this.observer;
  }

  private serve(work: Work): void {
    const gate = this.gate;
    if (gate !== null && !gate.enter()) return;
    try {
      if (work === Work.Readable) this.rx?.process();
      else if (work === Work.Writable) this.tx?.onWritable();
      else if (work === Work.RxKick) this.rx?.onKick();
      else this.tx?.process();
    } finally {
      if (gate !== null) gate.leave();
    }
  }
}
