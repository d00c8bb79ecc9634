// Ring tracing beside the rings. A traced queue is the plain queue with the
// methods that have something to tell overridden: each calls the plain one and
// emits what it did (src/trace/trace.ts), from what the plain queue read. A
// live queue is switched both ways by changing its prototype (traceQueue), so
// whoever holds the queue object (the device, RxQueue, TxQueue) keeps it, and
// a queue never traced runs no trace code at all: not even a compare.
//
// The trade-off: a prototype change gives the object another hidden class,
// and so does the change back, so a queue traced and untraced again no longer
// shares the hidden class of queues never traced, and call sites that see
// both become polymorphic. That costs a little, and only after tracing was
// used; queues never traced are never touched.
import { Pop, type DescriptorChain } from './descriptor-chain.js';
import { PackedQueue } from './packed-queue.js';
import { emitPop, type QueueTraceTarget } from './queue-trace.js';
import type { DeviceQueue } from './queue.js';
import { SplitQueue } from './split-queue.js';

/** A split queue that traces: made by makeDeviceQueue, or by traceQueue from a live SplitQueue. */
export class TracedSplitQueue extends SplitQueue {
  /** Where events go; set by whoever makes the queue traced (no constructor runs on a prototype swap). */
  declare traceTarget: QueueTraceTarget;

  override popChain(chain: DescriptorChain): number {
    const at = this.nextAvail;
    chain.reset(0);
    chain.recordDescriptors = true;
    const r = super.popChain(chain);
    chain.recordDescriptors = false;
    if (r !== Pop.EMPTY) emitPop(this.traceTarget, 'split', chain, r, at, { availIdx: this.avail[1]! });
    return r;
  }

  override addUsed(id: number, len: number, slots: number): void {
    const t = this.traceTarget;
    t.tracer.emit({ type: 'used', queue: t.queue, layout: 'split', id, len, at: this.usedIdx });
    super.addUsed(id, len, slots);
  }

  override flushUsed(): boolean {
    const old = this.signalledUsed;
    const send = super.flushUsed();
    if (this.signalledUsed === old) return send; // nothing new published: no decision was made
    const t = this.traceTarget;
    const e = this.features.eventIdx;
    t.tracer.emit({
      type: 'notify_decision',
      queue: t.queue,
      layout: 'split',
      mode: e ? 'event_idx' : 'flags',
      old,
      new: this.signalledUsed,
      ...(e ? { usedEvent: this.decidedOn } : { flags: this.decidedOn }),
      send,
    });
    return send;
  }

  // What the device asked of the driver's kicks. Disabling with EVENT_IDX writes nothing: no event.
  override disableNotifications(): void {
    super.disableNotifications();
    const t = this.traceTarget;
    if (!this.features.eventIdx) t.tracer.emit({ type: 'kick_suppression', queue: t.queue, layout: 'split', enabled: false });
  }

  override enableNotifications(): boolean {
    const more = super.enableNotifications();
    const t = this.traceTarget;
    const ev = this.features.eventIdx ? { availEvent: this.nextAvail } : {};
    t.tracer.emit({ type: 'kick_suppression', queue: t.queue, layout: 'split', enabled: true, ...ev });
    return more;
  }

  override restorePosition(position: number): void {
    const to = position & 0xffff;
    const t = this.traceTarget;
    if (to !== this.nextAvail) t.tracer.emit({ type: 'unpop', queue: t.queue, to });
    super.restorePosition(position);
  }
}

/** A packed queue that traces: made by makeDeviceQueue, or by traceQueue from a live PackedQueue. */
export class TracedPackedQueue extends PackedQueue {
  /** Where events go; set by whoever makes the queue traced (no constructor runs on a prototype swap). */
  declare traceTarget: QueueTraceTarget;

  override popChain(chain: DescriptorChain): number {
    const at = this.nextAvail;
    const wrap = this.availWrap;
    chain.reset(0);
    chain.recordDescriptors = true;
    const r = super.popChain(chain);
    chain.recordDescriptors = false;
    if (r !== Pop.EMPTY) emitPop(this.traceTarget, 'packed', chain, r, at, { wrap });
    return r;
  }

  override addUsed(id: number, len: number, slots: number): void {
    const t = this.traceTarget;
    t.tracer.emit({ type: 'used', queue: t.queue, layout: 'packed', id, len, at: this.usedIdx, wrap: this.usedWrap });
    super.addUsed(id, len, slots);
  }

  override flushUsed(): boolean {
    const s = this.signal;
    const old = s.last;
    const send = super.flushUsed();
    if (s.last === old) return send; // nothing new published: no decision was made
    const t = this.traceTarget;
    const offWrap = s.offWrap;
    const byIndex = offWrap >= 0;
    t.tracer.emit({
      type: 'notify_decision',
      queue: t.queue,
      layout: 'packed',
      mode: byIndex ? 'event_idx' : 'flags',
      old,
      new: s.last,
      flags: s.flags,
      ...(byIndex ? { eventOffset: offWrap & 0x7fff, eventWrap: offWrap >>> 15 } : {}),
      usedWrap: this.usedWrap,
      send,
    });
    return send;
  }

  override disableNotifications(): void {
    super.disableNotifications();
    const t = this.traceTarget;
    t.tracer.emit({ type: 'kick_suppression', queue: t.queue, layout: 'packed', enabled: false });
  }

  override enableNotifications(): boolean {
    const more = super.enableNotifications();
    const t = this.traceTarget;
    const ev = this.features.eventIdx ? { availEvent: this.nextAvail, wrap: this.availWrap } : {};
    t.tracer.emit({ type: 'kick_suppression', queue: t.queue, layout: 'packed', enabled: true, ...ev });
    return more;
  }

  override restorePosition(position: number): void {
    const to = position & 0xffff;
    const wrap = (position >>> 16) & 1;
    const t = this.traceTarget;
    if (to !== this.nextAvail || wrap !== this.availWrap) t.tracer.emit({ type: 'unpop', queue: t.queue, to, wrap });
    super.restorePosition(position);
  }
}

/** What a traced queue holds while untraced: the target is dropped so the tracer is not kept alive. */
type Untraced = { traceTarget: QueueTraceTarget | null };

/**
 * Starts (a target) or stops (null) tracing a live queue by swapping its
 * prototype. A queue that is not traced is left as it is when asked to stop;
 * a queue of another kind is never traced.
 */
export function traceQueue(q: DeviceQueue, target: QueueTraceTarget | null): void {
  const traced = q instanceof TracedSplitQueue || q instanceof TracedPackedQueue;
  if (target === null) {
    if (!traced) return;
    (q as unknown as Untraced).traceTarget = null;
    Object.setPrototypeOf(q, q instanceof SplitQueue ? SplitQueue.prototype : PackedQueue.prototype);
    return;
  }
  if (traced) {
    q.traceTarget = target;
    return;
  }
  if (q instanceof SplitQueue) Object.setPrototypeOf(q, TracedSplitQueue.prototype);
  else if (q instanceof PackedQueue) Object.setPrototypeOf(q, TracedPackedQueue.prototype);
  else return;
  (q as TracedSplitQueue | TracedPackedQueue).traceTarget = target;
}
