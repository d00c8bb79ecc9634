// What a transmit or receive queue reports about each frame when someone is
// looking: a trace event per TAP read or write and per drop, and the frame
// itself into a capture. The queues hold null here unless tracing or capture
// is on, and test that one field per batch.
import type { GuestMemory } from '../virtio/guest-memory.js';
import { PcapWriter } from './pcap.js';
import type { Tracer } from './trace.js';

export class FrameObserver {
  readonly tracer: Tracer | null;
  readonly capture: PcapWriter | null;
  private readonly byIo = new Map<number, Uint8Array>();

  constructor(mem: GuestMemory, tracer: Tracer | null, capture: PcapWriter | null) {
    this.tracer = tracer;
    this.capture = capture;
    mem.regions.forEach((r, i) => this.byIo.set(mem.ioRegion(i), r.bytes));
  }

  /**
   * A frame sent (outbound) or received, whose segments start at `at` in
   * `plan` (an IoPlan's layout) and may run on into following entries (a
   * merged frame). `bytes` is what the TAP took or gave (header included),
   * or -errno for a failed write; `buffers` the chains a received frame filled.
   */
  frame(outbound: boolean, queue: number, plan: Float64Array, at: number, bytes: number, buffers: number): void {
    const t = this.tracer;
    if (t !== null) {
      if (outbound) t.emit({ type: 'tap_write', queue, bytes: bytes < 0 ? 0 : bytes, result: bytes });
      else t.emit({ type: 'tap_read', queue, bytes, buffers });
    }
    const c = this.capture;
    if (c === null || bytes <= 0) return;
    const o = c.reserve(bytes);
    if (o < 0) return;
    this.gather(plan, at, Math.min(bytes, PcapWriter.MAX_FRAME), c.bytes, o);
    c.commit(outbound, queue, bytes);
  }

  /** A batch of I/O is done: its frames share this timestamp. */
  batch(): void {
    if (this.capture !== null) this.capture.stamp();
  }

  drop(queue: number, reason: string): void {
    if (this.tracer !== null) this.tracer.emit({ type: 'drop', queue, reason });
  }

  // Copies the frame's first `want` bytes out of guest memory to dst[to...].
  private gather(plan: Float64Array, start: number, want: number, dst: Uint8Array, to: number): void {
    let got = 0;
    let at = start;
    while (got < want && at < plan.length) {
      const count = plan[at]!;
      for (let s = 0; s < count && got < want; s++) {
        const src = this.byIo.get(plan[at + 1 + 3 * s]!);
        const off = plan[at + 2 + 3 * s]!;
        const take = Math.min(plan[at + 3 + 3 * s]!, want - got);
        if (src !== undefined) dst.set(src.subarray(off, off + take), to + got);
        got += take;
      }
      at += 1 + 3 * count;
    }
  }
}
