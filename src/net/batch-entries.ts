// The bookkeeping of one batch of popped chains, in pop order, shared by the
// transmit and receive paths: what to complete, where to rewind to, and which
// plan frame (or drop reason) each chain got.
import type { DescriptorChain } from '../virtio/descriptor-chain.js';
import type { DropReason } from './metrics.js';

export class BatchEntries {
  readonly head: Uint16Array;
  readonly slots: Uint16Array;
  /** Descriptors the chain holds (indirect entries included). */
  readonly descs: Uint16Array;
  /** The queue position before the pop (restorePosition un-pops from here). */
  readonly pos: Uint32Array;
  /** Writable (receive) or readable (transmit) bytes of the chain. */
  readonly bytes: Uint32Array;
  /** Plan frame index, or -1 when the chain is dropped for `reason`. */
  readonly frame: Int32Array;
  readonly reason: (DropReason | null)[];
  /** Where the chain's first segment sits (the virtio_net_hdr): region and offset. */
  readonly firstRegion: Int32Array;
  readonly firstOffset: Float64Array;

  constructor(capacity: number) {
    this.firstRegion = new Int32Array(capacity);
    this.firstOffset = new Float64Array(capacity);
    this.head = new Uint16Array(capacity);
    this.slots = new Uint16Array(capacity);
    this.descs = new Uint16Array(capacity);
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
    this.descs[i] = chain.descriptors;
    this.pos[i] = position;
    this.bytes[i] = bytes;
    this.reason[i] = reason;
    this.frame[i] = -1;
    this.firstRegion[i] = chain.count > 0 ? chain.region[0]! : -1;
    this.firstOffset[i] = chain.count > 0 ? chain.offset[0]! : 0;
  }

  /** Keeps entries [0, total) whose flag is 1, in order; returns how many remain. */
  keep(flags: Uint8Array, total: number): number {
    let w = 0;
    for (let i = 0; i < total; i++) {
      if (flags[i] !== 1) continue;
      if (w !== i) {
        this.head[w] = this.head[i]!;
        this.slots[w] = this.slots[i]!;
        this.descs[w] = this.descs[i]!;
        this.pos[w] = this.pos[i]!;
        this.bytes[w] = this.bytes[i]!;
        this.frame[w] = this.frame[i]!;
        this.firstRegion[w] = this.firstRegion[i]!;
        this.firstOffset[w] = this.firstOffset[i]!;
        this.reason[w] = this.reason[i]!;
      }
      w++;
    }
    return w;
  }
}
