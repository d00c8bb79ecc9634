// The virtio-mmio transport's snapshot (docs/snapshot.md): its registers,
// with the device's own snapshot beside them. MmioTransport.snapshot()
// writes it; MmioTransport.restore() reads it, checked field by field and
// against the restored device it is handed.
import type { DeviceQueue } from '../virtio/queue.js';
import { checkHeader, parsedSnapshot, SnapshotError, SnapshotFields } from '../virtio/snapshot-fields.js';
import { MAX_QUEUE_SIZE } from '../virtio/constants.js';

export const MMIO_SNAPSHOT_FORMAT = 'virtio-tap/mmio';
/** The version this build writes, and the newest it reads. */
export const MMIO_SNAPSHOT_VERSION = 1;

/** One queue's registers (§4.2.2): QueueNum, QueueReady, QueueDesc, QueueDriver, QueueDevice. */
export interface MmioQueueRegs {
  num: number;
  ready: boolean;
  desc: number;
  driver: number;
  device: number;
}

/** The transport's state, as plain JSON; 64-bit masks are "0x" and hex. */
export interface MmioSnapshot {
  /** Always "virtio-tap/mmio". */
  format: typeof MMIO_SNAPSHOT_FORMAT;
  /** 1. */
  version: number;
  /** QueueNumMax, the largest queue size offered. */
  queueNumMax: number;
  /** DeviceFeaturesSel and DriverFeaturesSel: which 32-bit window of the features the driver looks at. */
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  /** The driver's feature bits as written through DriverFeatures so far. */
  driverFeatures: string;
  /** QueueSel: the queue the queue registers address. */
  queueSel: number;
  /** Every queue's registers, by index; a ready queue is the device's activated queue. */
  queues: MmioQueueRegs[];
  /** InterruptStatus (VIRTIO_MMIO_INT_VRING 1, VIRTIO_MMIO_INT_CONFIG 2): the line is up while it is not 0. */
  interruptStatus: number;
  /** ConfigGeneration. */
  configGeneration: number;
  /** The transport's counters: accesses refused, queue set-ups refused. */
  invalidAccesses: number;
  refusedQueues: number;
  /** The device's own snapshot (NetDevice.snapshot()), restored by the device's restore and handed to MmioTransport.restore. */
  device: unknown;
}

const U32 = 0xffffffff;

/** Reads and checks a transport snapshot against the restored device's queues. */
export function readMmioSnapshot(input: unknown, queues: readonly (DeviceQueue | null)[]): MmioSnapshot {
  const f = SnapshotFields.of(parsedSnapshot(input), '');
  checkHeader(f, MMIO_SNAPSHOT_FORMAT, MMIO_SNAPSHOT_VERSION);
  const queueNumMax = f.int('queueNumMax', 1, MAX_QUEUE_SIZE);
  const list = f.list('queues', queues.length, queues.length);
  const regs = list.map((v, i) => readQueueRegs(SnapshotFields.of(v, f.at('queues') + `[${i}]`), queueNumMax, queues[i] ?? null));
  f.mask('driverFeatures');
  return {
    format: MMIO_SNAPSHOT_FORMAT,
    version: MMIO_SNAPSHOT_VERSION,
    queueNumMax,
    deviceFeaturesSel: f.int('deviceFeaturesSel', 0, U32),
    driverFeaturesSel: f.int('driverFeaturesSel', 0, U32),
    driverFeatures: f.string('driverFeatures'),
    queueSel: f.int('queueSel', 0, U32),
    queues: regs,
    interruptStatus: f.int('interruptStatus', 0, 3),
    configGeneration: f.int('configGeneration', 0, U32),
    invalidAccesses: f.int('invalidAccesses', 0, Number.MAX_SAFE_INTEGER),
    refusedQueues: f.int('refusedQueues', 0, Number.MAX_SAFE_INTEGER),
    device: f.value('device'),
  };
}

// A queue's registers; a ready one must be the device's activated queue, at the same size and addresses.
function readQueueRegs(f: SnapshotFields, numMax: number, q: DeviceQueue | null): MmioQueueRegs {
  const addr = (k: string): number => f.int(k, 0, Number.MAX_SAFE_INTEGER);
  const r: MmioQueueRegs = { num: f.int('num', 0, numMax), ready: f.bool('ready'), desc: addr('desc'), driver: addr('driver'), device: addr('device') };
  if (r.ready !== (q !== null)) {
    throw new SnapshotError('ERR_SNAPSHOT_MISMATCH', r.ready ? 'ready, but the device has no such queue activated' : 'not ready, but the device has it activated', f.at('ready'));
  }
  const a = q?.addresses;
  if (a !== undefined && (a.size !== r.num || a.desc !== r.desc || a.driver !== r.driver || a.device !== r.device)) {
    throw new SnapshotError('ERR_SNAPSHOT_MISMATCH', `size ${r.num} at 0x${r.desc.toString(16)}, but the device's queue is size ${a.size} at 0x${a.desc.toString(16)}`, f.path);
  }
  return r;
}
