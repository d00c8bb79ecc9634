// The bookkeeping of one batch of popped chains, in pop order, shared by the
// transmit and receive paths: what to complete, where to rewind to, and which
// plan frame (or drop reason) each chain got.
import type { DescriptorChain } from '../virtio/descriptor-chain.js';
import type { DropReason } from './metrics.js';

export class BatchEntries {
  readonly head: Uint16Array;
  readonly slots: Uint16Array;
  /** The queue position before the pop (restorePosition un-pops from here). */
  readonly pos: Uint32Array;
  /** Writable (receive) or readable (transmit) bytes of the chain. */
  readonly bytes: Uint32Array;
  /** Plan frame index, or -1 when the chain is dropped for `reason`. */
  readonly frame: Int32Array;
  readonly reason: (DropReason | null)[];

  constructor(capacity: number) {
    this.head = new Uint16Array(capacity);
    this.slots = new Uint16Array(capacity);
    this.pos = new Uint32Array(capacity);
    this.bytes = new Uint32Array(capacity);
    this.frame = new Int32Array(capacity);
    this.reason = new Array<DropReason | null>(capacity).fill(null);
  }

  get capacity(): number {
    return this.head.length;
  }

  record(i: number, chain: DescriptorChain, position: number, bytes: number, reason: DropReason | null): void {
    this.head[i] = chain.head;
    this.slots[i] = chain.ringSlots;
    this.pos[i] = position;
    this.bytes[i] = bytes;
    this.reason[i] = reason;
    this.frame[i] = -1;
  }
}
