// What the guest side of a virtqueue offers, whatever its layout.
import type { QueueAddresses } from '../virtio/queue.js';

/** The driver found the device breaking the ring's rules (a used id it never gave out, say). */
export class DriverError extends Error {
  override readonly name = 'DriverError';
  readonly code = 'ERR_VIRTIO_DRIVER';
}

export interface DriverQueueOptions {
  eventIdx?: boolean;
  indirect?: boolean;
  inOrder?: boolean;
  /** Where indirect tables go: one table of `entries` descriptors per buffer id. */
  indirectArea?: { addr: number; entries: number };
  /** Called when publish() decides the device must be notified. */
  onKick?: () => void;
}

export interface DriverStats {
  added: number;
  reaped: number;
  kicks: number;
  kicksSuppressed: number;
}

export interface DriverQueue {
  readonly layout: 'split' | 'packed';
  readonly size: number;
  readonly addresses: QueueAddresses;
  readonly stats: DriverStats;
  /** Descriptors (split) or ring slots (packed) free for new chains. */
  readonly numFree: number;
  /** Starts a chain; segments follow with addSegment. */
  beginChain(): void;
  /** Adds a buffer to the chain being built: readable ones first, then writable. */
  addSegment(addr: number, len: number, writable: boolean): boolean;
  /** Makes the chain available, returning its head/id, or -1 when there is no room. */
  commitChain(token: number, indirect?: boolean): number;
  /** Publishes what was added and kicks (onKick) if the device asked for it; true if it kicked. */
  publish(): boolean;
  /** Token of the next used chain, or -1; its length is in usedLen. */
  popUsed(): number;
  readonly usedLen: number;
  /** Asks for no interrupts. */
  disableInterrupts(): void;
  /** Asks for interrupts again; true when used chains are already waiting. */
  enableInterrupts(): boolean;
  /** Back to the freshly laid out state (with the device reset too). */
  reset(): void;
}
