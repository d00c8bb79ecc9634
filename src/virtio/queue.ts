// What the device side of a virtqueue offers, whatever its layout.
import type { DescriptorChain } from './descriptor-chain.js';
import type { GuestMemory } from './guest-memory.js';

/** Thrown when a queue's configuration cannot be used (VIRTIO 1.2 §2.7, §2.8). */
export class QueueConfigError extends Error {
  override readonly name = 'QueueConfigError';
  readonly code = 'ERR_VIRTQUEUE_CONFIG';
}

export interface QueueFeatures {
  /** VIRTIO_F_EVENT_IDX */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC */
  indirect: boolean;
  /** VIRTIO_F_IN_ORDER */
  inOrder: boolean;
}

/** Guest addresses of a queue's three areas (§4.2.2: QueueDesc, QueueDriver, QueueDevice). */
export interface QueueAddresses {
  size: number;
  /** Descriptor table (split) or descriptor ring (packed). */
  desc: number;
  /** Available ring (split) or driver event suppression area (packed). */
  driver: number;
  /** Used ring (split) or device event suppression area (packed). */
  device: number;
}

/**
 * Where a ring stands on the device side, whatever its layout: what a
 * snapshot carries beside the addresses (docs/snapshot.md). Split: indices
 * free-running over 16 bits, wrap counters 1. Packed: indices below the size,
 * wrap counters 0 or 1.
 */
export interface RingPositions {
  /** Next available entry (split: last_avail_idx) or ring slot (packed) to read. */
  nextAvail: number;
  availWrap: number;
  /** Next used entry (split: the used index) or ring slot (packed) to write. */
  usedIdx: number;
  usedWrap: number;
  /** Where the used side stood at the last notification decision (split: the used index; packed: the folded position, below 2 * size). */
  signalled: number;
  /** The device's own event suppression as it is in guest memory: split, the used ring's flags; packed, the device area's flags. */
  suppressFlags: number;
  /** Split: avail_event; packed: the device area's off_wrap. */
  suppressEvent: number;
}

export interface QueueStats {
  chains: number;
  badChains: number;
  notificationsSent: number;
  notificationsSuppressed: number;
}

/** Device side of a virtqueue. Hot-path methods return numbers and never throw. */
export interface DeviceQueue {
  readonly layout: 'split' | 'packed';
  readonly size: number;
  readonly mem: GuestMemory;
  /** Where the queue's areas are in guest memory. */
  readonly addresses: QueueAddresses;
  readonly stats: QueueStats;
  /** Set by a tier-2 fault; cleared by reset(). */
  readonly broken: boolean;
  readonly brokenReason: number;
  /** A chain sized for this queue, to pass to popChain. */
  newChain(): DescriptorChain;
  /** Fills `chain` with the next available chain; see Pop. */
  popChain(chain: DescriptorChain): number;
  /** Queues a used entry; `slots` is the chain's ring slots (packed; ignored by split). */
  addUsed(id: number, len: number, slots: number): void;
  /** Publishes used entries; true when the driver wants an interrupt now. */
  flushUsed(): boolean;
  /** True when a chain is available. */
  hasAvailable(): boolean;
  /** Ask the driver not to kick. */
  disableNotifications(): void;
  /** Ask the driver to kick again; true when chains arrived meanwhile (pop them). */
  enableNotifications(): boolean;
  /** Where the next pop will read; restorePosition(p) un-pops every chain popped since (on EAGAIN, say). */
  savePosition(): number;
  restorePosition(position: number): void;
  /**
   * Where the device resumes (vhost-user SET_VRING_BASE). Split: the next
   * available index; the used index is read back from the ring. Packed: bits
   * 0-14 the next available index and bit 15 its wrap counter; bits 16-30
   * and 31 the same for the used side (0 there: all that was available was used).
   */
  setBase(base: number): void;
  /** The same, to hand back (vhost-user GET_VRING_BASE). */
  getBase(): number;
  /** Where the ring stands, for a snapshot (cold path). */
  positions(): RingPositions;
  /** Takes on positions from a snapshot, the device's event suppression written back to guest memory (cold path). */
  setPositions(p: RingPositions): void;
  /** A ring a snapshot carried broken by `fault` (tier 2): it pops nothing until reset (cold path). */
  markBroken(fault: number): void;
  /**
   * Packed only: where the device's used writes stand, read from the ring in
   * guest memory (bits 0-14 the index, bit 15 the wrap counter), or null when
   * the ring does not show it unambiguously (see PackedQueue).
   */
  usedPositionInRing?(): number | null;
  /** Back to the state after activation. */
  reset(): void;
}
