// One call to lay out a queue in fresh guest memory with the driver of either
// layout: what tests, benchmarks, the demo and the fuzzers build rings with.
import { GuestMemory } from '../virtio/guest-memory.js';
import type { QueueAddresses, QueueFeatures } from '../virtio/queue.js';
import type { DriverQueue } from './driver-queue.js';
import { GuestAllocator, packedLayout, splitLayout } from './layout.js';
import { PackedDriver } from './packed-driver.js';
import { SplitDriver } from './split-driver.js';

export type RingLayout = 'split' | 'packed';

export interface QueueRigOptions extends Partial<QueueFeatures> {
  layout: RingLayout;
  size: number;
  /** Guest memory to use; default a fresh one of `memSize` bytes at gpa 0. */
  mem?: GuestMemory;
  memSize?: number;
  /** Where the rings go; default the start of an allocator over all of memory. */
  alloc?: GuestAllocator;
  /** Indirect table entries per buffer id (0: no indirect area). */
  indirectEntries?: number;
  onKick?: () => void;
}

export interface QueueRig {
  mem: GuestMemory;
  alloc: GuestAllocator;
  addresses: QueueAddresses;
  driver: DriverQueue;
  features: QueueFeatures;
}

export function makeQueueRig(o: QueueRigOptions): QueueRig {
  const mem = o.mem ?? GuestMemory.create(o.memSize ?? 1 << 20);
  const first = mem.regions[0]!;
  const alloc = o.alloc ?? new GuestAllocator(first.gpa, first.gpa + first.size);
  const size = o.size;
  const span = o.layout === 'split' ? splitLayout(0, size).end : packedLayout(0, size).end;
  const base = alloc.alloc(span, 16);
  const addresses = o.layout === 'split' ? splitLayout(base, size) : packedLayout(base, size);
  const features: QueueFeatures = { eventIdx: o.eventIdx ?? false, indirect: o.indirect ?? false, inOrder: o.inOrder ?? false };
  const entries = o.indirectEntries ?? (features.indirect ? 8 : 0);
  const indirectArea = entries > 0 ? { addr: alloc.alloc(size * entries * 16, 16), entries } : undefined;
  const opts = {
    ...features,
    ...(indirectArea !== undefined ? { indirectArea } : {}),
    ...(o.onKick !== undefined ? { onKick: o.onKick } : {}),
  };
  const driver = o.layout === 'split' ? new SplitDriver(mem, addresses, opts) : new PackedDriver(mem, addresses, opts);
  return { mem, alloc, addresses: { size, desc: addresses.desc, driver: addresses.driver, device: addresses.device }, driver, features };
}
