// What a transmit or receive queue needs from the queue pair that owns it
// (QueuePair, on the device's thread or in a worker).
import type { TapQueue } from '../tap/tap.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import type { RxFilter } from './filter.js';
import type { NetMetrics } from './metrics.js';

export interface NetQueueContext {
  readonly features: bigint;
  readonly metrics: NetMetrics;
  readonly filter: RxFilter;
  /**
   * The device's link is up (config status VIRTIO_NET_S_LINK_UP). While it is
   * down the device transmits nothing: transmit chains are completed
   * without a TAP write and counted as tx_link_down.
   */
  readonly linkUp: boolean;
  /** Raise a used-buffer interrupt for virtqueue `index`. */
  interrupt(index: number): void;
  /** Tier 2: the ring is corrupt. */
  markBroken(fault: number): void;
  /** Tier 3: the TAP failed. */
  hostError(err: Error): void;
  /** The TAP queue's readiness interest changed: the pair decides its watch again. */
  updateWatch(): void;
}

/** DataViews over each region of a guest memory, for header fields. */
export function regionViews(mem: GuestMemory): DataView[] {
  return mem.regions.map((r) => new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength));
}

export type { TapQueue };
