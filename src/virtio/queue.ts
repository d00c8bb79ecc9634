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
  /**
   * Packed only: where the device's used writes stand, read from the ring in
   * guest memory (bits 0-14 the index, bit 15 the wrap counter), or null when
   * the ring does not show it unambiguously (see PackedQueue).
   */
  usedPositionInRing?(): number | null;
  /** Back to the state after activation. */
  reset(): void;
}
