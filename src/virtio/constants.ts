// Wire constants of VIRTIO 1.2 (virtio-v1.2-cs01), names as in the spec.

/** Descriptor flags, both layouts (§2.7, §2.8). */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Packed ring only (§2.8). */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
export const VIRTQ_DESC_F_USED = 1 << 15;

/** Split ring flags (§2.7). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Packed ring event suppression flags (§2.8, "Event Suppression Structure Format"). */
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;

/** Reserved feature bits (§6). */
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;

/** Device status bits (§2.1). */
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

/** Largest queue size either layout allows (§2.7, §2.8). */
export const MAX_QUEUE_SIZE = 32768;

/** Sizes in bytes. */
export const SPLIT_DESC_SIZE = 16;
export const PACKED_DESC_SIZE = 16;

/** Feature bit as a bigint mask. */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

export function hasFeature(features: bigint, n: number): boolean {
  return (features & bit(n)) !== 0n;
}

// Rings are read through typed arrays, which use the host's byte order; virtio
// is little-endian (§2.4), so the host must be too. Said once, checked once.
if (new Uint8Array(Uint16Array.of(1).buffer)[0] !== 1) {
  throw new Error('virtio-tap needs a little-endian host: rings are read through typed arrays');
}
