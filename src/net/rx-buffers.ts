// The receive buffers a receive queue has in hand (VIRTIO 1.2 §5.1.6.3):
// chains popped from the ring and planned for reading but not yet filled,
// the "pending chains". They are entries [0, pending) of the batch entries,
// plan frame i for entry i, and stay pending across reads until a frame
// fills them or they go back to the ring (un-popped, in order).
//
// With MRG_RXBUF a frame may be read ahead into the holding buffer and wait
// there, held, until the pending chains can take it (readv-mergeable.cc).
//
// A frame read into them is completed here, one way for every read strategy:
// its bytes split over the chains it filled, a used entry for each, and its
// header as the guest must see it (num_buffers, flags).
import { IoPlan } from '../host/io-plan.js';
import { DescriptorChain, Pop } from '../virtio/descriptor-chain.js';
import type { DeviceQueue } from '../virtio/queue.js';
import { NET_HDR_SIZE } from './constants.js';
import type { DropReason } from './metrics.js';
import { BatchEntries } from './batch-entries.js';
import { setRxHeader } from './net-header.js';
import { regionViews, type NetQueueContext } from './queue-context.js';

/** What pop() found. */
export const RxPop = {
  /** A chain to read into, recorded in its entry. */
  USABLE: 1,
  /** A chain no frame may go into: recorded with its drop reason, to be completed empty. */
  REFUSED: 0,
  /** Nothing available. */
  EMPTY: -1,
  /** The ring is corrupt (reported to the context). */
  BROKEN: -2,
} as const;

/** Where the buffers report a chain completed empty. */
export interface RxDropSink {
  drop(reason: DropReason): void;
}

export class RxBuffers {
  /** Pending chains: entries [0, pending), kept across reads. */
  pending = 0;
  readonly entries: BatchEntries;
  /** Plan frame i: the segments of entry i (a read strategy may plan otherwise with no chain pending). */
  readonly plan: IoPlan;
  private readonly q: DeviceQueue;
  private readonly ctx: NetQueueContext;
  private readonly sink: RxDropSink;
  private readonly chain: DescriptorChain;
  private readonly views: DataView[];
  private readonly guestCsum: boolean;
  /** Per pending chain during a read: 1 while it stays pending, 0 once a frame filled it. */
  private readonly keep: Uint8Array;
  /** MRG_RXBUF: the native holding buffer, where a frame is read when it may not fit the pending chains; it stays there until it does. */
  readonly heldFrame: Uint8Array;
  /** The held frame's length, 0 when none (readvMergeable's state). */
  readonly heldFrameLen = new Int32Array(1);

  constructor(q: DeviceQueue, ctx: NetQueueContext, sink: RxDropSink, guestCsum: boolean, capacity: number, batch: number, holding = 0) {
    this.q = q;
    this.ctx = ctx;
    this.sink = sink;
    this.guestCsum = guestCsum;
    this.chain = q.newChain();
    this.plan = new IoPlan(batch, Math.max(batch * 4, capacity * 4));
    this.views = regionViews(q.mem);
    this.entries = new BatchEntries(capacity);
    this.keep = new Uint8Array(capacity);
    this.heldFrame = new Uint8Array(holding);
  }

  /**
   * For a snapshot: the pending chains go back to the ring (the next read
   * pops them again); returns a copy of the held frame, or null. The held
   * frame stays held here too.
   */
  quiesce(): Uint8Array | null {
    this.giveBack();
    const n = this.heldFrameLen[0]!;
    return n > 0 ? this.heldFrame.slice(0, n) : null;
  }

  /** For a restore: holds `frame` (its header first) as if read ahead here. False when the holding buffer cannot take it. */
  hold(frame: Uint8Array): boolean {
    if (frame.length === 0 || frame.length > this.heldFrame.length) return false;
    this.heldFrame.set(frame);
    this.heldFrameLen[0] = frame.length;
    return true;
  }

  get capacity(): number {
    return this.entries.capacity;
  }

  /** Pops one chain into entry i, for a frame needing `needBytes` of it (an RxPop). */
  pop(i: number, needBytes: number): number {
    const q = this.q;
    const c = this.chain;
    const position = q.savePosition();
    const r = q.popChain(c);
    if (r === Pop.EMPTY) return RxPop.EMPTY;
    if (r === Pop.BROKEN) {
      this.ctx.markBroken(c.fault);
      return RxPop.BROKEN;
    }
    let reason: DropReason | null = null;
    if (r === Pop.BAD_CHAIN || c.readable > 0) reason = 'rx_bad_chain';
    else if (c.writableBytes < needBytes || c.len[0]! < NET_HDR_SIZE) reason = 'rx_buffer_too_small';
    this.entries.record(i, c, position, c.writableBytes, reason);
    return reason === null ? RxPop.USABLE : RxPop.REFUSED;
  }

  /** Adds the chain popped last to the plan's current frame. */
  planChain(): void {
    const c = this.chain;
    const mem = this.q.mem;
    for (let s = 0; s < c.count; s++) this.plan.addSegment(mem.ioRegion(c.region[s]!), c.offset[s]!, c.len[s]!);
  }

  /** Completes entry i's refused chain empty, counting its drop reason. */
  refuse(i: number): void {
    const e = this.entries;
    this.sink.drop(e.reason[i]!);
    this.q.addUsed(e.head[i]!, 0, e.slots[i]!);
  }

  /**
   * Pops chains behind the pending ones until the entries or the plan are
   * full, one plan frame each. A refused chain is completed at once when it
   * is first (so used entries keep the available order, VIRTIO_F_IN_ORDER),
   * else un-popped to be first next time. Returns false when the ring is broken.
   */
  fill(perChain: number): boolean {
    const e = this.entries;
    const plan = this.plan;
    while (this.pending < e.capacity) {
      const n = this.pending;
      const p = this.pop(n, perChain);
      if (p === RxPop.BROKEN) return false;
      if (p === RxPop.EMPTY) break;
      if (p === RxPop.REFUSED) {
        if (n > 0) {
          this.q.restorePosition(e.pos[n]!);
          break;
        }
        this.refuse(0);
        continue;
      }
      if (!plan.beginFrame()) {
        this.q.restorePosition(e.pos[n]!);
        break;
      }
      this.planChain();
      e.frame[n] = plan.frames - 1;
      this.pending = n + 1;
    }
    return true;
  }

  /** Gives every pending chain back to the ring (un-pops them, in order). */
  giveBack(): void {
    if (this.pending > 0) this.q.restorePosition(this.entries.pos[0]!);
    this.pending = 0;
    this.plan.reset();
  }

  /** Un-pops entry i and every entry popped after it. */
  unpopFrom(i: number): void {
    this.q.restorePosition(this.entries.pos[i]!);
  }

  /** A read into the pending chains begins: each stays pending unless markUsed fills it. */
  beginRead(): void {
    this.keep.fill(1, 0, this.pending);
  }

  /** The read is done: the chains frames filled leave the pending ones (and their plan frames). */
  endRead(): void {
    this.plan.keepFrames(this.keep);
    this.pending = this.entries.keep(this.keep, this.pending);
  }

  /** How many chains from entry `first` (at most `most`) a frame of `bytes` fills: at least one. */
  chainsFor(first: number, bytes: number, most: number): number {
    const e = this.entries;
    let used = 1;
    let left = bytes - e.bytes[first]!;
    while (used < most && left > 0) left -= e.bytes[first + used++]!;
    return used;
  }

  /**
   * A frame of `bytes` filled `chains` chains from entry `first`: its header
   * gets num_buffers and its flags, and each chain a used entry with the
   * bytes it holds.
   */
  markUsed(first: number, bytes: number, chains: number): void {
    const e = this.entries;
    // §5.1.6.4: num_buffers; §5.1.6.4.1: flags zero without GUEST_CSUM.
    setRxHeader(this.views[e.firstRegion[first]!]!, e.firstOffset[first]!, chains, this.guestCsum);
    let left = bytes;
    for (let j = first; j < first + chains; j++) {
      const take = Math.min(left, e.bytes[j]!);
      this.q.addUsed(e.head[j]!, take, e.slots[j]!);
      this.keep[j] = 0;
      left -= take;
    }
  }

  /**
   * True when no more buffers can come before some are completed: the
   * pending chains hold every descriptor of the ring, or fill the entries.
   */
  exhausted(): boolean {
    if (this.pending >= this.entries.capacity) return true;
    let descs = 0;
    for (let i = 0; i < this.pending; i++) descs += this.entries.descs[i]!;
    return descs >= this.q.size;
  }
}
