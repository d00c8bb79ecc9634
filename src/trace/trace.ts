// A trace of what the device does, one structured event per step: feature
// negotiation and status, queue set-up, each chain popped, each used entry,
// each notification decision with the values compared, kicks, interrupts,
// TAP reads and writes, drops. Off by default: every hook is one compare of a
// field against null, and no event object is made unless someone listens.

/** A descriptor as the device walked it. */
export interface TraceDescriptor {
  addr: number;
  len: number;
  flags: number;
}

export type TraceEventBody =
  | { type: 'status'; from: number; to: number }
  | { type: 'features'; offered: bigint; driver: bigint; accepted: boolean; reason?: string; /** The accepted bits by name, when the device knows them. */ names?: string[] }
  | { type: 'reset' }
  | { type: 'broken'; reason: string }
  | {
      type: 'queue_ready';
      queue: number;
      layout: 'split' | 'packed';
      size: number;
      desc: number;
      driver: number;
      device: number;
      eventIdx: boolean;
      indirect: boolean;
      inOrder: boolean;
    }
  | { type: 'kick'; queue: number }
  | {
      type: 'pop';
      queue: number;
      layout: 'split' | 'packed';
      /** Split: the available ring slot read (free-running index). Packed: the descriptor ring index. */
      at: number;
      /** Packed: the driver ring wrap counter at `at`. */
      wrap?: number;
      /** Split: the available index the driver published. */
      availIdx?: number;
      head: number;
      result: 'chain' | 'bad_chain' | 'broken';
      fault?: string;
      indirect: boolean;
      readableBytes: number;
      writableBytes: number;
      descriptors: TraceDescriptor[];
    }
  | { type: 'unpop'; queue: number; to: number; wrap?: number }
  | {
      type: 'used';
      queue: number;
      layout: 'split' | 'packed';
      id: number;
      len: number;
      /** Split: the used ring index written (free-running). Packed: the descriptor ring index. */
      at: number;
      wrap?: number;
    }
  | {
      type: 'notify_decision';
      queue: number;
      layout: 'split' | 'packed';
      /** How the driver asked to be told: its event index, its flags. */
      mode: 'event_idx' | 'flags';
      /** Used index (split) or folded ring position (packed) at the last decision, and now. */
      old: number;
      new: number;
      /** Split, EVENT_IDX: the driver's used_event. */
      usedEvent?: number;
      /** Split without EVENT_IDX: the available ring's flags. Packed: the driver event flags. */
      flags?: number;
      /** Packed: the driver's off_wrap, split into offset and wrap counter. */
      eventOffset?: number;
      eventWrap?: number;
      /** Packed: the device's used wrap counter now. */
      usedWrap?: number;
      send: boolean;
    }
  | {
      type: 'kick_suppression';
      queue: number;
      layout: 'split' | 'packed';
      /** True: the device asks for kicks again; false: it asks for none. */
      enabled: boolean;
      /** EVENT_IDX: kick when the driver makes this index (split avail_event; packed offset) available. */
      availEvent?: number;
      wrap?: number;
    }
  | { type: 'interrupt'; kind: 'vring' | 'config'; queue: number }
  | { type: 'tap_write'; queue: number; bytes: number; result: number }
  | { type: 'tap_read'; queue: number; bytes: number; buffers: number }
  | { type: 'drop'; queue: number; reason: string };

export type TraceEvent = TraceEventBody & {
  /** Position in the trace, from 1. */
  seq: number;
  /** Milliseconds since the tracer was made. */
  t: number;
};

export type TraceListener = (e: TraceEvent) => void;

/**
 * Where trace events go. Give one to a device (`trace` option, or
 * `setTracer`), subscribe, and each step arrives as an event.
 */
export class Tracer {
  private listeners: TraceListener[] = [];
  private seq = 0;
  private readonly start = performance.now();

  /** Adds a listener; the function returned removes it. */
  subscribe(listener: TraceListener): () => void {
    this.listeners = [...this.listeners, listener];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  get listening(): boolean {
    return this.listeners.length > 0;
  }

  emit(body: TraceEventBody): void {
    const ls = this.listeners;
    if (ls.length === 0) return;
    const e = body as TraceEvent;
    e.seq = ++this.seq;
    e.t = Math.round((performance.now() - this.start) * 1000) / 1000;
    for (const l of ls) l(e);
  }
}

/** A trace event as one line of JSON (bigints as hex strings). */
export function traceToJson(e: TraceEvent): string {
  return JSON.stringify(e, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));
}
