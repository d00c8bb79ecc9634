// Where a driver puts its rings and buffers in guest memory.
import type { QueueAddresses } from '../virtio/queue.js';

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Split ring areas at `base` (§2.7): descriptor table, available ring, used ring. */
export function splitLayout(base: number, size: number): QueueAddresses & { end: number } {
  const desc = alignUp(base, 16);
  const driver = desc + 16 * size;
  const device = alignUp(driver + 2 * (size + 3), 4);
  return { size, desc, driver, device, end: device + 4 + 8 * size + 2 };
}

/** Packed ring areas at `base` (§2.8): descriptor ring, driver and device event suppression. */
export function packedLayout(base: number, size: number): QueueAddresses & { end: number } {
  const desc = alignUp(base, 16);
  const driver = desc + 16 * size;
  const device = driver + 4;
  return { size, desc, driver, device, end: device + 4 };
}

/** A bump allocator over a span of guest-physical addresses. */
export class GuestAllocator {
  private next: number;
  readonly end: number;

  constructor(start: number, end: number) {
    this.next = start;
    this.end = end;
  }

  alloc(len: number, align = 16): number {
    const at = alignUp(this.next, align);
    if (at + len > this.end) {
      throw new RangeError(`guest allocator: ${len} bytes do not fit (0x${at.toString(16)}..0x${this.end.toString(16)})`);
    }
    this.next = at + len;
    return at;
  }

  get used(): number {
    return this.next;
  }
}
