// A descriptor chain as the device sees it (VIRTIO 1.2 §2.7, §2.8),
// preallocated per queue and refilled by each pop: segments already resolved
// to (guest memory region, offset, length), readable ones first.
import type { GuestMemory } from './guest-memory.js';

/**
 * Why a chain or a ring was refused. Each reason has a tier (DESIGN.md):
 * tier 1, the chain is completed with length 0 and counted, and the queue
 * goes on; tier 2, the ring is corrupt: the device needs a reset.
 */
export const ChainFault = {
  NONE: 0,
  // Tier 1: this chain is bad; its head goes back with length 0.
  /** A buffer (or indirect table) lies outside guest memory. */
  BUFFER_OUT_OF_MEMORY: 1,
  /** A device-readable descriptor follows a device-writable one (§2.7, "The Virtqueue Descriptor Table"). */
  READABLE_AFTER_WRITABLE: 2,
  /** The chain's total length exceeds 2^32 - 1 bytes. */
  TOTAL_LENGTH_OVERFLOW: 3,
  /** More segments than the chain can hold (a buffer crossing many regions). */
  TOO_MANY_SEGMENTS: 4,
  // Tier 2: the ring itself is corrupt.
  /** The walk visited more descriptors than the queue size: a loop (§2.7, "Indirect Descriptors"). */
  LOOP: 16,
  /** A head or next index at or past the queue size. */
  INDEX_OUT_OF_RANGE: 17,
  /** An indirect descriptor inside an indirect table (§2.7, "Indirect Descriptors"). */
  NESTED_INDIRECT: 18,
  /** An indirect table whose length is zero, not a multiple of 16, or over maxIndirectEntries. */
  INDIRECT_BAD_LENGTH: 19,
  /** The available index moved by more than the queue size (§2.7, "The Virtqueue Available Ring"). */
  AVAIL_INDEX_JUMP: 20,
  /** INDIRECT and NEXT together on one descriptor (§2.7, "Indirect Descriptors"). */
  INDIRECT_WITH_NEXT: 21,
  /** Packed: a buffer id at or past the queue size. */
  BUFFER_ID_OUT_OF_RANGE: 22,
  /** INDIRECT used without VIRTIO_F_INDIRECT_DESC negotiated. */
  INDIRECT_NOT_NEGOTIATED: 23,
} as const;

export type ChainFaultCode = (typeof ChainFault)[keyof typeof ChainFault];

const NAMES = new Map<number, string>(Object.entries(ChainFault).map(([k, v]) => [v, k]));

/**
 * Most entries an indirect table may hold: the queue size, but at least 1024,
 * since drivers may hand a small queue a longer indirect table.
 */
export function maxIndirectEntries(queueSize: number): number {
  return Math.max(queueSize, 1024);
}

/** Segments a chain of a queue of this size can hold (descriptors crossing regions split in two). */
export function chainCapacity(queueSize: number): number {
  return 2 * (queueSize + maxIndirectEntries(queueSize)) + 8;
}

export function chainFaultName(code: number): string {
  return NAMES.get(code) ?? `UNKNOWN_${code}`;
}

/** 1: complete with length 0 and count; 2: mark the device broken. */
export function chainFaultTier(code: number): 1 | 2 {
  return code >= 16 ? 2 : 1;
}

/** What popChain returns. */
export const Pop = {
  /** A good chain is in `chain`. */
  CHAIN: 1,
  /** Nothing available. */
  EMPTY: 0,
  /** Tier 1: `chain.head` is valid and must be completed with length 0; `chain.fault` says why. */
  BAD_CHAIN: -1,
  /** Tier 2: the ring is corrupt; the queue is now broken until reset; `chain.fault` says why. */
  BROKEN: -2,
} as const;

export class DescriptorChain {
  /** Split: index of the head descriptor. Packed: the buffer id. Both: what addUsed takes. */
  head = 0;
  /** Ring slots this chain occupied (packed: how far the used index moves). */
  ringSlots = 0;
  /** Number of segments. */
  count = 0;
  /** Segments [0, readable) are device-readable, [readable, count) device-writable. */
  readable = 0;
  readableBytes = 0;
  writableBytes = 0;
  /** Descriptors walked, indirect entries included. */
  descriptors = 0;
  /** True when the chain came through an indirect table. */
  indirect = false;
  fault: number = ChainFault.NONE;
  private sawWritable = false;
  readonly capacity: number;
  /** Per segment: guest-physical address, memory region, offset in it, length. */
  readonly addr: Float64Array;
  readonly region: Int32Array;
  readonly offset: Float64Array;
  readonly len: Uint32Array;
  /** When true, each descriptor walked is recorded in descAddr/descLen/descFlags (for traces; off costs nothing). */
  recordDescriptors = false;
  /** Per descriptor as walked, when recordDescriptors: address, length, flags. */
  readonly descAddr: Float64Array;
  readonly descLen: Uint32Array;
  readonly descFlags: Uint16Array;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.addr = new Float64Array(capacity);
    this.region = new Int32Array(capacity);
    this.offset = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
    this.descAddr = new Float64Array(capacity);
    this.descLen = new Uint32Array(capacity);
    this.descFlags = new Uint16Array(capacity);
  }

  reset(head: number): void {
    this.head = head;
    this.ringSlots = 0;
    this.count = 0;
    this.readable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.descriptors = 0;
    this.indirect = false;
    this.fault = ChainFault.NONE;
    this.sawWritable = false;
  }

  /**
   * Adds one descriptor's buffer, split at region boundaries. Returns a tier-1
   * fault code, or NONE. Enforces readable-before-writable and the 2^32 cap.
   */
  addBuffer(mem: GuestMemory, addr: number, len: number, writable: boolean, flags: number): number {
    const d = this.descriptors;
    if (this.recordDescriptors && d < this.capacity) {
      this.descAddr[d] = addr;
      this.descLen[d] = len;
      this.descFlags[d] = flags;
    }
    this.descriptors = d + 1;
    if (!writable && this.sawWritable) return ChainFault.READABLE_AFTER_WRITABLE;
    if (writable) {
      this.sawWritable = true;
      this.writableBytes += len;
      if (this.writableBytes + this.readableBytes > 0xffffffff) return ChainFault.TOTAL_LENGTH_OVERFLOW;
    } else {
      this.readableBytes += len;
      if (this.writableBytes + this.readableBytes > 0xffffffff) return ChainFault.TOTAL_LENGTH_OVERFLOW;
    }
    if (addr < 0) return ChainFault.BUFFER_OUT_OF_MEMORY;
    if (len === 0) return ChainFault.NONE; // an empty buffer carries nothing: no segment
    let a = addr;
    let left = len;
    while (left > 0) {
      let r = mem.regionOf(a, left);
      let n = left;
      if (r < 0) {
        // Crossing into the next region, or outside memory.
        r = mem.regionAt(a);
        if (r < 0) return ChainFault.BUFFER_OUT_OF_MEMORY;
        const reg = mem.regions[r]!;
        n = reg.gpa + reg.size - a;
      }
      const i = this.count;
      if (i >= this.capacity) return ChainFault.TOO_MANY_SEGMENTS;
      const reg = mem.regions[r]!;
      this.addr[i] = a;
      this.region[i] = r;
      this.offset[i] = a - reg.gpa;
      this.len[i] = n;
      this.count = i + 1;
      if (!writable) this.readable = i + 1;
      a += n;
      left -= n;
    }
    return ChainFault.NONE;
  }
}
