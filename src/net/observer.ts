// What a transmit or receive queue reports about each frame when someone is
// looking: a trace event per TAP read or write and per drop, and the frame
// itself into a capture. The queues hold null here unless tracing or capture
// is on, and test that one field per batch.
import type { IoPlan } from '../host/io-plan.js';
import type { PcapWriter } from './pcap.js';
import type { Tracer } from '../trace/trace.js';

export class FrameObserver {
  readonly tracer: Tracer | null;
  readonly capture: PcapWriter | null;

  constructor(tracer: Tracer | null, capture: PcapWriter | null) {
    this.tracer = tracer;
    this.capture = capture;
  }

  /**
   * A frame sent (outbound) or received, whose segments start at plan
   * position `at` and may run on into the following frames of the plan (a
   * merged frame's groups). `bytes` is what the TAP took or gave (header included),
   * or -errno for a failed write; `buffers` the chains a received frame filled.
   */
  frame(outbound: boolean, queue: number, plan: IoPlan, at: number, bytes: number, buffers: number): void {
    const t = this.tracer;
    if (t !== null) {
      if (outbound) t.emit({ type: 'tap_write', queue, bytes: bytes < 0 ? 0 : bytes, result: bytes });
      else t.emit({ type: 'tap_read', queue, bytes, buffers });
    }
    // Copied from guest memory at flush(), for the whole batch at once.
    if (this.capture !== null && bytes > 0) this.capture.add(outbound, queue, plan, at, bytes);
  }

  /** The batch's used entries are about to reach the guest: record its frames while their buffers are still ours. */
  flush(): void {
    if (this.capture !== null) this.capture.copyPending();
  }

  /** A batch of I/O is done: its frames share this timestamp. */
  batch(): void {
    if (this.capture !== null) this.capture.stamp();
  }

  drop(queue: number, reason: string): void {
    if (this.tracer !== null) this.tracer.emit({ type: 'drop', queue, reason });
  }
}
