// The receive buffers of one queue pair, driver side (VIRTIO 1.2 §5.1.6.3):
// allocated once, then posted, used by the device, reaped and posted again.
import type { DriverQueue } from './driver-queue.js';
import type { GuestAllocator } from './layout.js';

export class RxBuffers {
  /** Guest address of each buffer, by index: the token of the chain that carries it. */
  readonly addr: number[];
  /** Bytes per buffer. */
  readonly size: number;
  /**
   * Buffers not in the receive ring, a FIFO of indices: buffers go back into
   * the ring in the order they came out, so buffers next to each other in
   * memory stay next to each other in the ring, as Linux's page-fragment
   * buffers are. The device then reads a frame that spans them as one run.
   */
  private readonly free: Uint16Array;
  private head = 0;
  private count: number;

  constructor(alloc: GuestAllocator, count: number, size: number) {
    this.size = size;
    this.addr = Array.from({ length: count }, () => alloc.alloc(size, 64));
    this.free = new Uint16Array(count).map((_, i) => i);
    this.count = count;
  }

  /** Makes every free buffer available in `rx` while it has room, and publishes them. */
  post(rx: DriverQueue): void {
    let added = false;
    while (rx.numFree > 0) {
      const i = this.addr.length > 0 ? this.take() : -1;
      if (i < 0) break;
      rx.beginChain();
      rx.addSegment(this.addr[i]!, this.size, true);
      if (rx.commitChain(i) < 0) {
        this.release(i);
        break;
      }
      added = true;
    }
    if (added) rx.publish();
  }

  /** The next free buffer, or -1. */
  private take(): number {
    if (this.count === 0) return -1;
    const i = this.free[this.head] as number;
    this.head = this.head + 1 === this.free.length ? 0 : this.head + 1;
    this.count--;
    return i;
  }

  /** Buffer `i` came back from the device: free again. */
  release(i: number): void {
    let at = this.head + this.count;
    if (at >= this.free.length) at -= this.free.length;
    this.free[at] = i;
    this.count++;
  }
}
