// The device side of a virtqueue for the negotiated features: the layout
// (split or packed, §2.6/§2.7) and the ring features the queue honours.
// Decided here once, for the device and for a queue pair in a worker alike.
import { hasFeature, VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED } from './constants.js';
import type { GuestMemory } from './guest-memory.js';
import { PackedQueue } from './packed-queue.js';
import type { QueueTraceTarget } from './queue-trace.js';
import type { DeviceQueue, QueueAddresses, QueueFeatures } from './queue.js';
import { SplitQueue } from './split-queue.js';
import { TracedPackedQueue, TracedSplitQueue } from './traced-queue.js';

/** The ring features of a negotiated feature set. */
export function queueFeatures(features: bigint): QueueFeatures {
  return {
    eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
    indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC),
    inOrder: hasFeature(features, VIRTIO_F_IN_ORDER),
  };
}

/**
 * A device queue over `mem` at `addresses`, traced to `trace` when given;
 * throws QueueConfigError for a configuration the spec forbids.
 */
export function makeDeviceQueue(features: bigint, mem: GuestMemory, addresses: QueueAddresses, trace: QueueTraceTarget | null = null): DeviceQueue {
  const qf = queueFeatures(features);
  const packed = hasFeature(features, VIRTIO_F_RING_PACKED);
  if (trace === null) return packed ? new PackedQueue(mem, addresses, qf) : new SplitQueue(mem, addresses, qf);
  // Traced from the start: made of the traced class, with no prototype swap (traced-queue.ts).
  const q = packed ? new TracedPackedQueue(mem, addresses, qf) : new TracedSplitQueue(mem, addresses, qf);
  q.traceTarget = trace;
  return q;
}
