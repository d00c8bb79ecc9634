// The virtio core's part of a snapshot (docs/snapshot.md): the negotiated
// features, the status, and each queue's layout, addresses and positions.
// Reading one checks every field; building the queues from it checks them
// against the guest memory they are handed, as activation does, and changes
// nothing until every queue is made.
import { MAX_QUEUE_SIZE } from './constants.js';
import { ChainFault, chainFaultName } from './descriptor-chain.js';
import type { GuestMemory } from './guest-memory.js';
import { makeDeviceQueue } from './make-queue.js';
import type { QueueTraceTarget } from './queue-trace.js';
import { QueueConfigError, type DeviceQueue, type RingPositions } from './queue.js';
import { maskText, SnapshotError, SnapshotFields } from './snapshot-fields.js';

/** One activated queue, as a snapshot carries it. */
export interface QueueSnapshot extends RingPositions {
  /** The ring layout the features chose (§2.7 split, §2.8 packed); restore checks it against them. */
  layout: 'split' | 'packed';
  /** Queue size and the guest addresses of its three areas (§4.2.2: QueueDesc, QueueDriver, QueueDevice). */
  size: number;
  desc: number;
  driver: number;
  device: number;
  /** The tier-2 fault that broke the ring (a ChainFault name), or '' for a sound ring. */
  fault: string;
}

/** The device core's state (VirtioDeviceCore). */
export interface CoreSnapshot {
  /** The driver's feature bits, "0x" and hex; the negotiated ones are these and the device's offer. */
  driverFeatures: string;
  /** The device status byte (§2.1), DEVICE_NEEDS_RESET included. */
  status: number;
  /** Why the device last needed a reset (a ChainFault name), or ''. */
  brokenReason: string;
  /** Every virtqueue by index: its state when activated, else null. */
  queues: (QueueSnapshot | null)[];
  /** The core's counters: kicks ignored, tier-2 faults, resets. */
  stats: { kicksIgnored: number; broken: number; resets: number };
}

const FAULTS = new Map<string, number>(Object.entries(ChainFault).filter(([, v]) => v !== ChainFault.NONE));

/** A queue's state for a snapshot. */
export function snapshotQueue(q: DeviceQueue): QueueSnapshot {
  const a = q.addresses;
  const fault = q.broken ? chainFaultName(q.brokenReason) : '';
  return { layout: q.layout, size: a.size, desc: a.desc, driver: a.driver, device: a.device, ...q.positions(), fault };
}

/** Reads and checks one queue's state (the ranges each layout allows; the addresses are checked when it is built). */
export function readQueueSnapshot(f: SnapshotFields): QueueSnapshot {
  const layout = f.string('layout', ['split', 'packed']) as 'split' | 'packed';
  const size = f.int('size', 1, MAX_QUEUE_SIZE);
  const addr = (key: string): number => f.int(key, 0, Number.MAX_SAFE_INTEGER);
  const split = layout === 'split';
  // Split indices run free over 16 bits (§2.7); packed ones stay below the size, with a wrap counter (§2.8).
  const index = (key: string): number => f.int(key, 0, split ? 0xffff : size - 1);
  const wrap = (key: string): number => f.int(key, split ? 1 : 0, 1);
  const s: QueueSnapshot = {
    layout,
    size,
    desc: addr('desc'),
    driver: addr('driver'),
    device: addr('device'),
    nextAvail: index('nextAvail'),
    availWrap: wrap('availWrap'),
    usedIdx: index('usedIdx'),
    usedWrap: wrap('usedWrap'),
    signalled: f.int('signalled', 0, split ? 0xffff : 2 * size - 1),
    suppressFlags: f.int('suppressFlags', 0, 0xffff),
    suppressEvent: f.int('suppressEvent', 0, 0xffff),
    fault: f.string('fault'),
  };
  if (s.fault !== '' && !FAULTS.has(s.fault)) f.refuse('fault', `${JSON.stringify(s.fault)} is no chain fault`);
  // The device cannot hold more chains than the ring has entries.
  if (split && ((s.nextAvail - s.usedIdx) & 0xffff) > size) f.refuse('nextAvail', `${s.nextAvail} is more than the queue size (${size}) past usedIdx ${s.usedIdx}`);
  return s;
}

/** Reads and checks the core's state for a device with `numQueues` virtqueues. */
export function readCoreSnapshot(f: SnapshotFields, numQueues: number): CoreSnapshot {
  f.mask('driverFeatures');
  const stats = f.obj('stats');
  const count = (k: string): number => stats.int(k, 0, Number.MAX_SAFE_INTEGER);
  const list = f.list('queues', numQueues, numQueues);
  const queues = list.map((q, i) => (q === null ? null : readQueueSnapshot(SnapshotFields.of(q, f.at('queues') + `[${i}]`))));
  return {
    driverFeatures: f.string('driverFeatures'),
    status: f.int('status', 0, 0xff),
    brokenReason: f.string('brokenReason'),
    queues,
    stats: { kicksIgnored: count('kicksIgnored'), broken: count('broken'), resets: count('resets') },
  };
}

/** The core's state: the masks as hex text. */
export function coreSnapshot(driverFeatures: bigint, status: number, brokenReason: string, queues: readonly (DeviceQueue | null)[], stats: CoreSnapshot['stats']): CoreSnapshot {
  return { driverFeatures: maskText(driverFeatures), status, brokenReason, queues: queues.map((q) => (q === null ? null : snapshotQueue(q))), stats: { ...stats } };
}

/**
 * Makes the snapshot's queues over `mem` under the negotiated `features`, as
 * activation would (sizes, alignment, rings inside guest memory), without
 * touching guest memory: a queue that cannot be made is refused by its
 * field path (`${path}[i]`). loadQueues() then sets their positions.
 */
export function buildQueues(s: CoreSnapshot, features: bigint, mem: GuestMemory, path: string, trace: ((i: number) => QueueTraceTarget) | null): (DeviceQueue | null)[] {
  return s.queues.map((qs, i) => {
    if (qs === null) return null;
    let q: DeviceQueue;
    try {
      q = makeDeviceQueue(features, mem, { size: qs.size, desc: qs.desc, driver: qs.driver, device: qs.device }, trace === null ? null : trace(i));
    } catch (e) {
      if (e instanceof QueueConfigError) throw new SnapshotError('ERR_SNAPSHOT_MISMATCH', e.message, `${path}[${i}]`);
      throw e;
    }
    if (q.layout !== qs.layout) throw new SnapshotError('ERR_SNAPSHOT_FIELD', `${qs.layout}, but the negotiated features make it ${q.layout}`, `${path}[${i}].layout`);
    return q;
  });
}

/** Sets the positions (and broken state) of queues made by buildQueues: from here on guest memory is written. */
export function loadQueues(s: CoreSnapshot, queues: readonly (DeviceQueue | null)[]): void {
  s.queues.forEach((qs, i) => {
    const q = queues[i];
    if (qs === null || q === null || q === undefined) return;
    q.setPositions(qs);
    if (qs.fault !== '') q.markBroken(FAULTS.get(qs.fault)!);
  });
}
