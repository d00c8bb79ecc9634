// Guest memory as a list of regions at guest-physical addresses. Ranges
// resolve to views over the regions, bounds-checked and never copied.
// Guest addresses are 64-bit; JavaScript numbers are exact to 2^53, so an
// address past that is refused (it cannot name any region here anyway).
import { registerIoRegion, unregisterIoRegion } from '../host/io-plan.js';

/** Largest exact integer: guest addresses at or beyond it are refused. */
export const MAX_GUEST_ADDRESS = Number.MAX_SAFE_INTEGER;

/** Why a guest memory set-up or access was refused (set-up: thrown; hot path: return codes). */
export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * The one overflow-checked add for guest addresses: a + b, or -1 when the sum
 * is not below 2^53 (where it could be inexact) or an input is negative.
 * Inputs are integers by construction (u32 lengths, u64() addresses); a sum
 * of two integers that is <= 2^53 - 1 is exact.
 */
export function checkedAdd(a: number, b: number): number {
  const s = a + b;
  return s <= MAX_GUEST_ADDRESS && a >= 0 && b >= 0 ? s : -1;
}

/** Reads a little-endian u64 from two u32 halves; -1 when it exceeds 2^53. */
export function u64(lo: number, hi: number): number {
  return hi < 0x200000 ? hi * 0x1_0000_0000 + lo : -1;
}

export interface MemoryRegion {
  /** Guest-physical address of the first byte. */
  readonly gpa: number;
  readonly size: number;
  /** The bytes, over an ArrayBuffer, a SharedArrayBuffer or an mmap. */
  readonly bytes: Uint8Array;
}

export interface RegionSpec {
  gpa: number;
  bytes: Uint8Array;
}

export class GuestMemory {
  readonly regions: readonly MemoryRegion[];
  /** Native I/O region index per region, or -1 before registerIo(). */
  private ioIndex: number[];
  // The last region regionOf found, as plain numbers: most lookups hit it.
  private hitIndex = 0;
  private hitStart = 0;
  private hitEnd = -1;

  constructor(regions: RegionSpec[]) {
    if (regions.length === 0) throw new GuestMemoryError('ERR_GUEST_MEMORY_EMPTY', 'guest memory needs at least one region');
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    let end = 0;
    for (const r of sorted) {
      if (!Number.isSafeInteger(r.gpa) || r.gpa < 0) {
        throw new GuestMemoryError('ERR_GUEST_MEMORY_ADDRESS', `region address ${r.gpa} is not an integer in [0, 2^53)`);
      }
      if (r.bytes.byteLength === 0) throw new GuestMemoryError('ERR_GUEST_MEMORY_EMPTY', `region at 0x${r.gpa.toString(16)} is empty`);
      if (checkedAdd(r.gpa, r.bytes.byteLength) < 0) {
        throw new GuestMemoryError('ERR_GUEST_MEMORY_ADDRESS', `region at 0x${r.gpa.toString(16)} ends past 2^53`);
      }
      if (r.gpa < end) {
        throw new GuestMemoryError('ERR_GUEST_MEMORY_OVERLAP', `region at 0x${r.gpa.toString(16)} overlaps the one before it (which ends at 0x${end.toString(16)})`);
      }
      end = r.gpa + r.bytes.byteLength;
    }
    this.regions = sorted.map((r) => ({ gpa: r.gpa, size: r.bytes.byteLength, bytes: r.bytes }));
    this.ioIndex = sorted.map(() => -1);
  }

  /** One region of `size` bytes at `gpa`, over a fresh (Shared)ArrayBuffer. */
  static create(size: number, options: { gpa?: number; shared?: boolean } = {}): GuestMemory {
    const buf = options.shared === true ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
    return new GuestMemory([{ gpa: options.gpa ?? 0, bytes: new Uint8Array(buf) }]);
  }

  /**
   * The region holding all of [addr, addr + len), or -1 (outside memory, or
   * crossing a region boundary). Hot path: no allocation, no throw.
   */
  regionOf(addr: number, len: number): number {
    const end = checkedAdd(addr, len);
    if (end < 0) return -1;
    if (addr >= this.hitStart && end <= this.hitEnd) return this.hitIndex;
    const regions = this.regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i] as MemoryRegion;
      if (addr >= r.gpa && end <= r.gpa + r.size) {
        this.hitIndex = i;
        this.hitStart = r.gpa;
        this.hitEnd = r.gpa + r.size;
        return i;
      }
    }
    return -1;
  }

  /** The region containing addr (at least one byte), or -1. */
  regionAt(addr: number): number {
    if (!(addr >= 0 && addr < MAX_GUEST_ADDRESS)) return -1;
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i] as MemoryRegion;
      if (addr >= r.gpa && addr < r.gpa + r.size) return i;
    }
    return -1;
  }

  /** True when every byte of [addr, addr + len) is guest memory (regions may be crossed). */
  contains(addr: number, len: number): boolean {
    if (checkedAdd(addr, len) < 0) return false;
    let a = addr;
    let left = len;
    while (left > 0) {
      const i = this.regionAt(a);
      if (i < 0) return false;
      const r = this.regions[i] as MemoryRegion;
      const n = Math.min(left, r.gpa + r.size - a);
      a += n;
      left -= n;
    }
    return len >= 0;
  }

  /**
   * Views over [addr, addr + len): one per region crossed. Throws
   * GuestMemoryError when any byte lies outside guest memory (cold path).
   */
  resolve(addr: number, len: number): Uint8Array[] {
    if (!this.contains(addr, len)) {
      throw new GuestMemoryError('ERR_GUEST_MEMORY_RANGE', `guest range 0x${addr.toString(16)}+${len} is not inside guest memory`);
    }
    const out: Uint8Array[] = [];
    let a = addr;
    let left = len;
    while (left > 0) {
      const r = this.regions[this.regionAt(a)] as MemoryRegion;
      const off = a - r.gpa;
      const n = Math.min(left, r.size - off);
      out.push(r.bytes.subarray(off, off + n));
      a += n;
      left -= n;
    }
    return out;
  }

  /** A view of [addr, addr + len) inside one region; throws otherwise. For ring set-up. */
  view(addr: number, len: number): Uint8Array {
    const i = this.regionOf(addr, len);
    if (i < 0) {
      throw new GuestMemoryError('ERR_GUEST_MEMORY_RANGE', `guest range 0x${addr.toString(16)}+${len} is not inside one region of guest memory`);
    }
    const r = this.regions[i] as MemoryRegion;
    return r.bytes.subarray(addr - r.gpa, addr - r.gpa + len);
  }

  /**
   * The little-endian u16 at addr, or -1 when [addr, addr + 2) is not inside
   * one region. Hot path: no view is made.
   */
  u16le(addr: number): number {
    const i = this.regionOf(addr, 2);
    if (i < 0) return -1;
    const r = this.regions[i] as MemoryRegion;
    const o = addr - r.gpa;
    return r.bytes[o]! | (r.bytes[o + 1]! << 8);
  }

  /** Copies bytes out of guest memory (tests, tools; not the hot path). */
  read(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    let o = 0;
    for (const v of this.resolve(addr, len)) {
      out.set(v, o);
      o += v.length;
    }
    return out;
  }

  /** Copies bytes into guest memory (tests, tools, the driver's buffers). */
  write(addr: number, data: Uint8Array): void {
    let o = 0;
    for (const v of this.resolve(addr, data.length)) {
      v.set(data.subarray(o, o + v.length));
      o += v.length;
    }
  }

  /** Registers every region for native batched I/O (once); returns the indices. */
  registerIo(): readonly number[] {
    this.ioIndex = this.regions.map((r, i) => (this.ioIndex[i] ?? -1) >= 0 ? (this.ioIndex[i] as number) : registerIoRegion(r.bytes));
    return this.ioIndex;
  }

  /** The native I/O index of region i (after registerIo), or -1. */
  ioRegion(i: number): number {
    return this.ioIndex[i] ?? -1;
  }

  unregisterIo(): void {
    for (const idx of this.ioIndex) if (idx >= 0) unregisterIoRegion(idx);
    this.ioIndex = this.regions.map(() => -1);
  }
}
