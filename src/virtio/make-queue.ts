// The device side of a virtqueue for the negotiated features: the layout
// (split or packed, §2.6/§2.7) and the ring features the queue honours.
// Decided here once, for the device and for a queue pair in a worker alike.
import { hasFeature, VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED } from './constants.js';
import type { GuestMemory } from './guest-memory.js';
import { PackedQueue } from './packed-queue.js';
import type { DeviceQueue, QueueAddresses, QueueFeatures } from './queue.js';
import { SplitQueue } from './split-queue.js';

/** The ring features of a negotiated feature set. */
export function queueFeatures(features: bigint): QueueFeatures {
  return {
    eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
    indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC),
    inOrder: hasFeature(features, VIRTIO_F_IN_ORDER),
  };
}

/** A device queue over `mem` at `addresses`; throws QueueConfigError for a configuration the spec forbids. */
export function makeDeviceQueue(features: bigint, mem: GuestMemory, addresses: QueueAddresses): DeviceQueue {
  const qf = queueFeatures(features);
  return hasFeature(features, VIRTIO_F_RING_PACKED) ? new PackedQueue(mem, addresses, qf) : new SplitQueue(mem, addresses, qf);
}
