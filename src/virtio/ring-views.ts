// Typed-array views of a queue's rings, built once when a queue is set up;
// shared by the device side and the driver side of each layout.
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from './constants.js';
import type { GuestMemory } from './guest-memory.js';
import { QueueConfigError, type QueueAddresses } from './queue.js';

/** A view of `len` bytes at guest address `addr`, which must sit in one region, aligned for the element type. */
export function ringView<T extends Uint16Array | Uint32Array>(
  mem: GuestMemory,
  addr: number,
  len: number,
  Kind: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number },
  what: string,
): T {
  const r = mem.regionOf(addr, len);
  if (r < 0) throw new QueueConfigError(`${what} at 0x${addr.toString(16)} (${len} bytes) is not inside one region of guest memory`);
  const reg = mem.regions[r]!;
  const off = reg.bytes.byteOffset + (addr - reg.gpa);
  if (off % Kind.BYTES_PER_ELEMENT !== 0) {
    throw new QueueConfigError(`${what} at 0x${addr.toString(16)} is not ${Kind.BYTES_PER_ELEMENT}-byte aligned in host memory`);
  }
  return new Kind(reg.bytes.buffer, off, len / Kind.BYTES_PER_ELEMENT);
}

export interface SplitViews {
  desc32: Uint32Array;
  desc16: Uint16Array;
  /** flags, idx, ring[n], used_event */
  avail: Uint16Array;
  /** flags, idx, ring[n] of {id, len}, avail_event */
  used16: Uint16Array;
  used32: Uint32Array;
}

/** Views of a split ring (§2.7): descriptor table, available ring, used ring. */
export function splitViews(mem: GuestMemory, a: QueueAddresses): SplitViews {
  const n = a.size;
  const desc32 = ringView(mem, a.desc, 16 * n, Uint32Array, 'descriptor table');
  return {
    desc32,
    desc16: new Uint16Array(desc32.buffer, desc32.byteOffset, 8 * n),
    avail: ringView(mem, a.driver, 2 * (n + 3), Uint16Array, 'available ring'),
    used16: ringView(mem, a.device, 4 + 8 * n + 2, Uint16Array, 'used ring'),
    used32: ringView(mem, a.device, 4 + 8 * n, Uint32Array, 'used ring'),
  };
}

export interface PackedViews {
  desc32: Uint32Array;
  desc16: Uint16Array;
  /** Driver event suppression: off_wrap, flags. */
  driverEvent: Uint16Array;
  /** Device event suppression: off_wrap, flags. */
  deviceEvent: Uint16Array;
}

/** Views of a packed ring (§2.8): descriptor ring and both event suppression areas. */
export function packedViews(mem: GuestMemory, a: QueueAddresses): PackedViews {
  const desc32 = ringView(mem, a.desc, 16 * a.size, Uint32Array, 'descriptor ring');
  return {
    desc32,
    desc16: new Uint16Array(desc32.buffer, desc32.byteOffset, 8 * a.size),
    driverEvent: ringView(mem, a.driver, 4, Uint16Array, 'driver event suppression area'),
    deviceEvent: ringView(mem, a.device, 4, Uint16Array, 'device event suppression area'),
  };
}

/** Stores a guest address as the little-endian u64 at u32 index i (addresses are exact below 2^53). */
export function storeAddress(u32: Uint32Array, i: number, addr: number): void {
  if (addr < 0x1_0000_0000) {
    u32[i] = addr;
    u32[i + 1] = 0;
  } else {
    u32[i] = addr % 0x1_0000_0000;
    u32[i + 1] = Math.floor(addr / 0x1_0000_0000);
  }
}

/**
 * The state of packed descriptor i, read with acquire ordering (§2.8, "Driver
 * and Device Ring Wrap Counters"): 1 available for wrap `wrap`, 2 used for
 * wrap `wrap`, 0 neither.
 */
export function packedDescState(desc16: Uint16Array, i: number, wrap: number): number {
  const flags = Atomics.load(desc16, i * 8 + 7);
  const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0;
  const used = (flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0;
  if (avail === wrap && used !== wrap) return 1;
  if (avail === wrap && used === wrap) return 2;
  return 0;
}
