// Receive (VIRTIO 1.2 §5.1.6.3, §5.1.6.4): frames are read from the TAP
// straight into the guest's receive buffers, header first (IFF_VNET_HDR).
// Without MRG_RXBUF and without filters, many frames go in one native call,
// one chain each. With MRG_RXBUF a frame may take several chains: enough are
// popped to hold the largest frame, the frame is read, the chains it filled
// are completed (num_buffers set) and the rest stay pending for the next
// frame or go back to the ring. When filters may refuse a frame, frames are
// read one at a time so that a refused frame's buffers are reused. No
// buffers: stop reading; the RX kick resumes. RxBuffers keeps the pending
// chains and completes frames, the same way for every read strategy.
import { constants as osConstants } from 'node:os';

import { HostError, IoAction, ioAction, ioDropReason, NEG_EAGAIN } from '../host/errors.js';
import { type IoPlan, registerIoRegion, unregisterIoRegion } from '../host/io-plan.js';
import type { TapQueue } from '../tap/tap.js';
import { hasFeature, VIRTIO_F_IN_ORDER } from '../virtio/constants.js';
import type { DeviceQueue } from '../virtio/queue.js';
import { NET_HDR_SIZE, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF } from './constants.js';
import { rxFrameRoom } from './features.js';
import type { DropReason } from './metrics.js';
import type { NetQueueContext } from './queue-context.js';
import type { RateLimiter } from './rate-limiter.js';
import type { FrameObserver } from './observer.js';
import { RxBuffers, RxPop, type RxDropSink } from './rx-buffers.js';
import { RxPeek } from './rx-peek.js';

const EFAULT = osConstants.errno.EFAULT;
const EMSGSIZE = osConstants.errno.EMSGSIZE;
/** Frames handled per readiness event before yielding to the loop. */
const BUDGET = 1024;

export class RxQueue implements RxDropSink {
  readonly index: number;
  /** True while the TAP should be watched for readability. */
  wantsReadable = true;
  /** Trace and capture of each frame; null when neither is on. */
  observer: FrameObserver | null = null;
  private readonly q: DeviceQueue;
  private readonly ctx: NetQueueContext;
  private readonly tap: TapQueue;
  private readonly limiter: RateLimiter;
  private readonly mergeable: boolean;
  private readonly inOrder: boolean;
  /** What a frame's buffers should hold: the largest frame plus the header. */
  private readonly need: number;
  /** The least worth reading into (MRG_RXBUF): an MTU-sized frame plus the header. */
  private readonly minNeed: number;
  /** The chains popped ahead and the held frame: what the queue has in hand (a snapshot quiesces it). */
  readonly buffers: RxBuffers;
  private readonly plan: IoPlan;
  private readonly peek: RxPeek;
  private readonly mergeResults: Int32Array;
  /** MRG_RXBUF: the held frame's buffer and its length (readvMergeable's state), the buffers', kept at hand. */
  private readonly heldFrame: Uint8Array;
  private readonly heldFrameLen: Int32Array;
  /** readOne: the room of the chains planned for the frame. */
  private oneRoom = 0;
  /**
   * One byte read after a single frame's buffers: the TAP cuts a frame
   * larger than the room offered short without a word, so a read that
   * reaches this byte is a frame too large.
   */
  private sentinelIo = registerIoRegion(new Uint8Array(1));
  private throttleTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(index: number, q: DeviceQueue, tap: TapQueue, ctx: NetQueueContext, limiter: RateLimiter, mtu: number, batch = 64) {
    this.index = index;
    this.q = q;
    this.tap = tap;
    this.ctx = ctx;
    this.limiter = limiter;
    const f = ctx.features;
    this.mergeable = hasFeature(f, VIRTIO_NET_F_MRG_RXBUF);
    this.inOrder = hasFeature(f, VIRTIO_F_IN_ORDER);
    this.minNeed = NET_HDR_SIZE + 14 + 4 + mtu;
    this.need = rxFrameRoom(f, mtu);
    // Merged frames need up to `need` bytes of chains each.
    const cap = this.mergeable ? Math.max(4 * batch, Math.ceil(this.need / 256) + 8) : batch;
    // + 1: a held frame too large shows as such.
    this.buffers = new RxBuffers(q, ctx, this, hasFeature(f, VIRTIO_NET_F_GUEST_CSUM), cap, batch, this.mergeable ? this.need + 1 : 0);
    this.heldFrame = this.buffers.heldFrame;
    this.heldFrameLen = this.buffers.heldFrameLen;
    this.plan = this.buffers.plan;
    this.peek = new RxPeek(q.mem, this.plan);
    this.mergeResults = new Int32Array(2 * cap);
  }

  stop(): void {
    this.buffers.giveBack();
    if (this.sentinelIo >= 0) unregisterIoRegion(this.sentinelIo);
    this.sentinelIo = -1;
    if (this.heldFrameLen[0]! > 0) this.drop('rx_held_at_reset');
    this.heldFrameLen[0] = 0;
    this.stopped = true;
    this.wantsReadable = false;
    if (this.throttleTimer !== null) clearTimeout(this.throttleTimer);
    this.throttleTimer = null;
  }

  /** The driver added receive buffers. */
  onKick(): void {
    if (this.stopped || this.wantsReadable) return;
    this.wantsReadable = true;
    this.q.disableNotifications();
    this.ctx.updateWatch();
    this.process(); // frames may be waiting already
  }

  /** The TAP has frames. */
  process(): void {
    if (this.stopped || this.throttleTimer !== null || this.q.broken) return;
    let budget = BUDGET;
    while (budget > 0) {
      // Batched reads apply filters too, keeping a refused frame's chains for
      // the next frame; that completes chains out of order, which IN_ORDER forbids.
      // A held frame goes first, whatever the mode.
      const oneByOne = (this.limiter.active || (this.ctx.filter.active && this.inOrder)) && this.heldFrameLen[0] === 0;
      if (oneByOne) this.buffers.giveBack();
      const r = oneByOne ? this.readOne() : this.mergeable ? this.readMerged() : this.readBatch();
      if (r <= 0) return; // drained, out of buffers, throttled or broken
      budget -= r;
    }
  }

  /**
   * Not enough receive buffers: stop reading and ask the driver to kick when
   * it adds some. `end` is the queue position past every chain seen; chains
   * added beyond it meanwhile mean reading can go on (true).
   */
  private waitForBuffers(end: number): boolean {
    const q = this.q;
    q.enableNotifications();
    const start = q.savePosition();
    q.restorePosition(end);
    const more = q.hasAvailable();
    q.restorePosition(start);
    if (more) {
      q.disableNotifications();
      return true;
    }
    this.ctx.metrics.rxNoBuffer++;
    this.wantsReadable = false;
    this.ctx.updateWatch();
    return false;
  }

  // Out of buffers (see waitForBuffers): 1 to read on, 0 to stop.
  private noBuffers(end: number): number {
    this.flush();
    return this.waitForBuffers(end) ? 1 : 0;
  }

  // Many frames, one chain each, one native call. Returns frames handled, or 0 to stop.
  private readBatch(): number {
    const buffers = this.buffers;
    if (!buffers.fill(this.need)) return 0;
    if (buffers.pending === 0) return this.noBuffers(this.q.savePosition());
    const plan = this.plan;
    const done = this.tap.readBatch(plan);
    if (this.observer !== null) this.observer.batch();
    const filtering = this.ctx.filter.active;
    const room = buffers.entries.bytes;
    buffers.beginRead();
    let handled = 0;
    let stop = false;
    for (let i = 0, at = 0; i < done; i++, at = plan.next(at)) {
      const r = plan.results[i]!;
      if (r < 0) {
        if (r !== NEG_EAGAIN) this.readError(r);
        stop = true;
        break;
      }
      handled++;
      if (r > this.need && r >= room[i]!) {
        // Larger than any frame the device offers room for, and it filled the
        // buffer: the TAP cut it short. Its chain takes the next frame.
        this.drop('rx_frame_truncated');
        continue;
      }
      const refused = filtering ? this.peek.check(this.ctx.filter, at, r) : null;
      if (refused !== null) {
        this.drop(refused); // its chain stays pending for the next frame
        continue;
      }
      this.delivered(at, r, 1);
      buffers.markUsed(i, r, 1);
    }
    this.endRead();
    return stop ? 0 : Math.max(1, handled);
  }

  // MRG_RXBUF (§5.1.6.4): many frames in one native call, each taking as many
  // chains as its bytes need, from the pending chains.
  private readMerged(): number {
    const buffers = this.buffers;
    if (!buffers.fill(NET_HDR_SIZE)) return 0;
    const end = this.q.savePosition();
    if (buffers.pending === 0) return this.noBuffers(end);
    const plan = this.plan;
    const res = this.mergeResults;
    const frames = this.tap.readMergeable(plan, this.minNeed, this.need, res, this.heldFrame, this.heldFrameLen);
    if (this.observer !== null) this.observer.batch();
    const filtering = this.ctx.filter.active;
    buffers.beginRead();
    let g = 0; // entry of the frame's first chain
    let at = 0; // plan position of group g
    let delivered = 0;
    let stop = false;
    for (let f = 0; f < frames; f++) {
      const bytes = res[2 * f]!;
      if (bytes === -EMSGSIZE) {
        this.drop('rx_frame_truncated'); // larger than the largest frame offered room for
        delivered++;
        continue;
      }
      if (bytes < 0) {
        if (bytes !== NEG_EAGAIN) this.readError(bytes);
        stop = true;
        break;
      }
      const k = res[2 * f + 1]!;
      const refused = filtering ? this.peek.check(this.ctx.filter, at, bytes) : null;
      if (refused !== null) {
        this.drop(refused); // its chains stay pending for the next frames
      } else {
        buffers.markUsed(g, bytes, k);
        this.delivered(at, bytes, k);
      }
      at = plan.skip(at, k);
      g += k;
      delivered++;
    }
    this.endRead();
    if (stop) return 0; // drained
    return delivered > 0 ? delivered : this.noRoom(end);
  }

  // No frame read and no EAGAIN: the pending chains ran short of room for another frame.
  private noRoom(end: number): number {
    if (this.heldFrameLen[0]! > 0 && this.buffers.exhausted()) {
      // The held frame is larger than every buffer the ring can offer at once.
      this.drop('rx_frame_truncated');
      this.heldFrameLen[0] = 0;
      return 1;
    }
    return this.waitForBuffers(end) ? 1 : 0;
  }

  // One frame: one chain, or with MRG_RXBUF as many as the largest frame needs.
  private readOne(): number {
    if (this.limiter.active && !this.limiter.allow(0)) {
      this.throttle();
      return 0;
    }
    const k = this.planOne();
    if (k < 0) return 0;
    const room = this.oneRoom;
    if (room < this.minNeed || k === 0) {
      // Not enough buffers for a frame: give them back and wait for more.
      const end = this.q.savePosition();
      if (k > 0) this.buffers.unpopFrom(0);
      return this.noBuffers(end);
    }
    const plan = this.plan;
    if (this.sentinelIo >= 0) plan.addSegment(this.sentinelIo, 0, 1);
    const done = this.tap.readBatch(plan);
    if (this.observer !== null) this.observer.batch();
    const r = done > 0 ? plan.results[0]! : NEG_EAGAIN;
    if (r === -EFAULT || r > room) {
      // The frame was larger than every buffer offered for it: the TAP cut
      // it short (it reached the sentinel byte) or refused it (EFAULT).
      this.drop('rx_frame_truncated');
      return this.reuseOne();
    }
    if (r < 0) {
      this.buffers.unpopFrom(0);
      if (r !== NEG_EAGAIN) this.readError(r);
      this.flush();
      return 0;
    }
    const reason = this.ctx.filter.active ? this.peek.check(this.ctx.filter, 0, r) : null; // frame 0 starts the plan
    if (reason !== null) {
      this.drop(reason);
      return this.reuseOne();
    }
    // The chains the frame filled; the rest go back.
    const used = this.buffers.chainsFor(0, r, k);
    this.buffers.markUsed(0, r, used);
    if (used < k) this.buffers.unpopFrom(used);
    this.delivered(0, r, used);
    this.flush();
    return 1;
  }

  // readOne: the frame is gone (dropped); its chains go back to take the next one.
  private reuseOne(): number {
    this.buffers.unpopFrom(0);
    this.flush();
    return 1;
  }

  // readOne: pops and plans the chains of one frame, as one plan frame, their
  // room in oneRoom. Returns how many, or -1 when the ring is broken.
  private planOne(): number {
    const buffers = this.buffers;
    const plan = this.plan;
    plan.reset();
    plan.beginFrame();
    const perChain = this.mergeable ? NET_HDR_SIZE : this.need;
    const sizes = buffers.entries.bytes;
    let k = 0;
    let room = 0;
    while (room < this.need && k < buffers.capacity) {
      const p = buffers.pop(k, perChain);
      if (p === RxPop.BROKEN) return -1;
      if (p === RxPop.EMPTY) break;
      if (p === RxPop.REFUSED) {
        buffers.refuse(k); // completed now, it takes no part in the frame
        continue;
      }
      buffers.planChain();
      room += sizes[k]!;
      k++;
      if (!this.mergeable) break;
    }
    this.oneRoom = room;
    return k;
  }

  // A frame of `bytes` whose segments start at plan position `at` reached the guest in `chains` chains.
  private delivered(at: number, bytes: number, chains: number): void {
    const m = this.ctx.metrics;
    m.rxPackets++;
    m.rxBytes += bytes;
    if (this.observer !== null) this.observer.frame(false, this.index, this.plan, at, bytes, chains);
    this.limiter.charge(bytes);
  }

  // A batched read is done: the capture copies its frames before the used
  // entries reach the guest and before the plan's frames move.
  private endRead(): void {
    if (this.observer !== null) this.observer.flush();
    this.buffers.endRead();
    this.flush();
  }

  // A read failed with something other than EAGAIN: host/errors.ts decides.
  private readError(r: number): void {
    if (ioAction(r) === IoAction.Again) return;
    this.drop(ioDropReason(r, 'rx'));
    if (ioAction(r) === IoAction.Fatal) {
      this.ctx.metrics.tapErrors++;
      this.stop();
      this.ctx.updateWatch();
      this.ctx.hostError(HostError.fromErrno(r, 'readv', `receive on TAP queue ${this.index >>> 1}`));
    }
  }

  /** Counts a frame or chain dropped, and shows it to the observer (RxBuffers reports its refused chains here). */
  drop(reason: DropReason): void {
    this.ctx.metrics.drops[reason]++;
    if (this.observer !== null) this.observer.drop(this.index, reason);
  }

  private flush(): void {
    if (this.observer !== null) this.observer.flush();
    if (this.q.flushUsed()) this.ctx.interrupt(this.index);
  }

  private throttle(): void {
    this.ctx.metrics.rxThrottled++;
    this.wantsReadable = false;
    this.ctx.updateWatch();
    const ms = Math.max(1, this.limiter.waitMs(0));
    this.throttleTimer = setTimeout(() => {
      this.throttleTimer = null;
      this.wantsReadable = true;
      this.ctx.updateWatch();
      this.process();
    }, ms);
  }
}
