// The transport-independent core of a virtio device: feature negotiation,
// the status machine (VIRTIO 1.2 §2.1, §3.1.1), queue activation, and the
// three tiers of failure. A concrete device (net) supplies processQueue.
import { EventEmitter } from 'node:events';

import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  hasFeature,
} from './constants.js';
import { chainFaultName } from './descriptor-chain.js';
import type { GuestMemory } from './guest-memory.js';
import { makeDeviceQueue } from './make-queue.js';
import { PackedQueue } from './packed-queue.js';
import { QueueConfigError, type DeviceQueue, type QueueAddresses } from './queue.js';
import { coreSnapshot, loadQueues, type CoreSnapshot } from './queue-snapshot.js';
import { SplitQueue } from './split-queue.js';
import { traceQueue } from './traced-queue.js';
import type { Tracer } from '../trace/trace.js';

export type InterruptKind = 'vring' | 'config';

export interface DeviceCoreStats {
  /** Kicks that arrived while the device needed a reset or was not running. */
  kicksIgnored: number;
  /** Tier-2 faults (the device needed a reset). */
  broken: number;
  resets: number;
}

export interface DeviceCoreOptions {
  /** Feature bits the device offers. */
  features: bigint;
  numQueues: number;
  /** Raised for used buffers (vring, with the queue) and for config changes. */
  interrupt: (kind: InterruptKind, queue: number) => void;
  /** Where trace events go (see Tracer); off when absent. */
  trace?: Tracer;
  /** Names of feature bits, for trace events (the device type knows them). */
  featureNames?: (bits: bigint) => string[];
}

/**
 * Emits 'error' (tier 3: a host failure such as the TAP going away) with an
 * Error; the device stops using what failed but the process goes on.
 */
export abstract class VirtioDeviceCore extends EventEmitter {
  readonly deviceFeatures: bigint;
  driverFeatures = 0n;
  status = 0;
  readonly queues: (DeviceQueue | null)[];
  readonly coreStats: DeviceCoreStats = { kicksIgnored: 0, broken: 0, resets: 0 };
  /** Why the device last needed a reset (a ChainFault name), or ''. */
  brokenReason = '';
  /** Where trace events go, or null. */
  protected tracer: Tracer | null;
  private raiseFn: (kind: InterruptKind, queue: number) => void;
  private readonly featureNames: ((bits: bigint) => string[]) | null;

  constructor(o: DeviceCoreOptions) {
    super();
    this.deviceFeatures = o.features;
    this.queues = Array.from({ length: o.numQueues }, () => null);
    this.raiseFn = o.interrupt;
    this.tracer = o.trace ?? null;
    this.featureNames = o.featureNames ?? null;
  }

  /**
   * Where interrupts go from now on. A transport that is handed a device
   * (vhost-user: the call eventfds) attaches itself here.
   */
  setInterruptSink(fn: (kind: InterruptKind, queue: number) => void): void {
    this.raiseFn = fn;
  }

  /** Raises an interrupt (traced). */
  protected raise(kind: InterruptKind, queue: number): void {
    if (this.tracer !== null) this.tracer.emit({ type: 'interrupt', kind, queue });
    this.raiseFn(kind, queue);
  }

  /** Starts (a Tracer) or stops (null) tracing, active queues included. */
  setTracer(tracer: Tracer | null): void {
    this.tracer = tracer;
    this.queues.forEach((q, i) => {
      if (q !== null) traceQueue(q, tracer === null ? null : { tracer, queue: i });
    });
    this.onTracer(tracer);
  }

  /** The tracer in use, or null. */
  get trace(): Tracer | null {
    return this.tracer;
  }

  /** The negotiated features (offered and accepted). */
  get features(): bigint {
    return this.deviceFeatures & this.driverFeatures;
  }

  get running(): boolean {
    return (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 && (this.status & VIRTIO_CONFIG_S_NEEDS_RESET) === 0;
  }

  /** Driver feature bits; ignored once FEATURES_OK is set (§3.1.1). */
  setDriverFeatures(features: bigint): void {
    if ((this.status & VIRTIO_CONFIG_S_FEATURES_OK) !== 0) return;
    this.driverFeatures = features;
  }

  /**
   * A status write. 0 resets the device. FEATURES_OK stays set only when the
   * driver accepted a subset of the offer including VERSION_1 (§2.2, §3.1.1),
   * and the driver must read it back to see whether it did.
   */
  setStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    let v = value & 0xff;
    if ((v & VIRTIO_CONFIG_S_FEATURES_OK) !== 0 && (this.status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
      const why = this.featuresRefusal(this.driverFeatures);
      if (why !== null) v &= ~VIRTIO_CONFIG_S_FEATURES_OK;
      if (this.tracer !== null) this.traceFeatures(this.tracer, why);
    }
    const wasRunning = (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    const from = this.status;
    this.status = v | (this.status & VIRTIO_CONFIG_S_NEEDS_RESET);
    if (this.tracer !== null) this.tracer.emit({ type: 'status', from, to: this.status });
    if (!wasRunning && (v & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 && (v & VIRTIO_CONFIG_S_FAILED) === 0) this.onDriverOk();
  }

  // Why the driver's features cannot be accepted at FEATURES_OK, or null.
  private featuresRefusal(f: bigint): string | null {
    if ((f & ~this.deviceFeatures) !== 0n) return 'bits the device did not offer';
    if (!hasFeature(f, VIRTIO_F_VERSION_1)) return 'VERSION_1 not accepted';
    if (!this.acceptFeatures(f)) return 'a feature without the features it depends on';
    return null;
  }

  /** A device may refuse a feature combination here (checked at FEATURES_OK). */
  protected acceptFeatures(_features: bigint): boolean {
    return true;
  }

  /**
   * Makes queue i ready: validated once here, served from cached views after.
   * Throws QueueConfigError for a configuration the spec does not allow.
   */
  activateQueue(i: number, mem: GuestMemory, addresses: QueueAddresses): DeviceQueue {
    if (i < 0 || i >= this.queues.length) throw new QueueConfigError(`queue ${i} does not exist (the device has ${this.queues.length})`);
    const tracer = this.tracer;
    const q = makeDeviceQueue(this.features, mem, addresses, tracer === null ? null : { tracer, queue: i });
    this.queues[i] = q;
    if (tracer !== null) this.traceQueueReady(tracer, q, i);
    return q;
  }

  private traceFeatures(tracer: Tracer, why: string | null): void {
    const accepted = this.driverFeatures & this.deviceFeatures;
    tracer.emit({
      type: 'features',
      offered: this.deviceFeatures,
      driver: this.driverFeatures,
      accepted: why === null,
      ...(why === null ? {} : { reason: why }),
      ...(this.featureNames !== null ? { names: this.featureNames(accepted) } : {}),
    });
  }

  private traceQueueReady(tracer: Tracer, q: DeviceQueue, i: number): void {
    const { eventIdx, indirect, inOrder } = q instanceof SplitQueue || q instanceof PackedQueue ? q.features : { eventIdx: false, indirect: false, inOrder: false };
    tracer.emit({ type: 'queue_ready', queue: i, layout: q.layout, ...q.addresses, eventIdx, indirect, inOrder });
  }

  /** A driver notification for queue i. Ignored (and counted) unless running. */
  kick(i: number): void {
    if (this.tracer !== null) this.tracer.emit({ type: 'kick', queue: i });
    const q = this.queues[i];
    if (!this.running || q === null || q === undefined) {
      this.coreStats.kicksIgnored++;
      return;
    }
    this.processQueue(i, q);
  }

  /**
   * Tier 2: the ring is corrupt. Set DEVICE_NEEDS_RESET and raise a config
   * interrupt (§2.1.2); kicks are ignored until the driver resets the device.
   */
  markBroken(reason: number | string): void {
    if ((this.status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0) return;
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    this.brokenReason = typeof reason === 'number' ? chainFaultName(reason) : reason;
    this.coreStats.broken++;
    if (this.tracer !== null) this.tracer.emit({ type: 'broken', reason: this.brokenReason });
    this.onBroken();
    this.raise('config', -1);
  }

  /**
   * Guest memory moved (a VMM replaced the buffer under its RAM, as v86 does
   * when its wasm memory grows): every active queue is rebuilt over `mem` at
   * the same addresses, resuming where it was (getBase/setBase). The device
   * stops serving its queues first and serves them again after.
   */
  moveMemory(mem: GuestMemory): void {
    this.onMemoryMove(true);
    const old = new Set<GuestMemory>();
    this.queues.forEach((q, i) => {
      if (q === null) return;
      const base = q.getBase();
      old.add(q.mem);
      this.activateQueue(i, mem, q.addresses).setBase(base);
    });
    for (const m of old) if (m !== mem) m.unregisterIo();
    if (this.running) this.onMemoryMove(false);
  }

  /** Back to the initial state: status 0, no features, no queues. */
  reset(): void {
    if (this.tracer !== null) this.tracer.emit({ type: 'reset' });
    this.status = 0;
    this.driverFeatures = 0n;
    this.brokenReason = '';
    for (let i = 0; i < this.queues.length; i++) this.queues[i] = null;
    this.coreStats.resets++;
    this.onReset();
  }

  /** The core's state for a snapshot (queue-snapshot.ts): features, status, every queue. */
  protected snapshotCore(): CoreSnapshot {
    return coreSnapshot(this.driverFeatures, this.status, this.brokenReason, this.queues, this.coreStats);
  }

  /**
   * Takes on a snapshot's core state, its queues made by buildQueues (which
   * checked them): no status change runs, so nothing starts here.
   */
  protected restoreCore(s: CoreSnapshot, queues: readonly (DeviceQueue | null)[]): void {
    this.driverFeatures = BigInt(s.driverFeatures);
    this.status = s.status;
    this.brokenReason = s.brokenReason;
    Object.assign(this.coreStats, s.stats);
    loadQueues(s, queues);
    queues.forEach((q, i) => (this.queues[i] = q));
  }

  protected abstract processQueue(index: number, queue: DeviceQueue): void;
  protected onDriverOk(): void {}
  protected onBroken(): void {}
  protected onReset(): void {}
  /** Before (true) and after (false) moveMemory rebuilds the queues: stop serving them, serve them again. */
  protected onMemoryMove(_before: boolean): void {}
  protected onTracer(_tracer: Tracer | null): void {}
}
