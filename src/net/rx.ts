// Receive (VIRTIO 1.2 §5.1.6.3, §5.1.6.4): frames are read from the TAP
// straight into the guest's receive buffers, header first (IFF_VNET_HDR).
// Without MRG_RXBUF and without filters, many frames go in one native call,
// one chain each. With MRG_RXBUF a frame may take several chains: enough are
// popped to hold the largest frame, the frame is read, the chains it filled
// are completed (num_buffers set) and the rest are un-popped. When filters
// may refuse a frame, frames are read one at a time so that a refused frame's
// buffers are reused. No buffers: stop reading; the RX kick resumes.
import { constants as osConstants } from 'node:os';

import { HostError, IoAction, ioAction, ioDropReason, NEG_EAGAIN } from '../host/errors.js';
import { IoPlan, registerIoRegion, unregisterIoRegion } from '../host/io-plan.js';
import type { TapQueue } from '../tap/tap.js';
import { hasFeature, VIRTIO_F_IN_ORDER } from '../virtio/constants.js';
import { DescriptorChain, Pop } from '../virtio/descriptor-chain.js';
import type { DeviceQueue } from '../virtio/queue.js';
import {
  BIG_RX_BUFFER,
  NET_HDR_SIZE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_GUEST_USO4,
  VIRTIO_NET_F_GUEST_USO6,
  VIRTIO_NET_F_MRG_RXBUF,
} from './constants.js';
import type { DropReason } from './metrics.js';
import { BatchEntries } from './batch-entries.js';
import { regionViews, type NetQueueContext } from './queue-context.js';
import type { RateLimiter } from './rate-limiter.js';
import type { FrameObserver } from './observer.js';

const EFAULT = osConstants.errno.EFAULT;
const EMSGSIZE = osConstants.errno.EMSGSIZE;
/** Frames handled per readiness event before yielding to the loop. */
const BUDGET = 1024;

export class RxQueue {
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
  private readonly guestCsum: boolean;
  private readonly inOrder: boolean;
  /** Per held entry: 1 to keep it held after a batch. */
  private readonly keepFlags: Uint8Array;
  /** What a frame's buffers should hold: the largest frame plus the header. */
  private readonly need: number;
  /** The least worth reading into (MRG_RXBUF): an MTU-sized frame plus the header. */
  private readonly minNeed: number;
  private readonly chain: DescriptorChain;
  private readonly plan: IoPlan;
  private readonly batch: number;
  private readonly views: DataView[];
  private readonly e: BatchEntries;
  /** Chains popped and planned but not yet filled, entries [0, held): kept across batches. */
  private held = 0;
  private readonly peek = new Uint8Array(18);
  private readonly mergeResults: Int32Array;
  /** MRG_RXBUF: where a frame is read when it may not fit, and held until it does. */
  private readonly hold: Uint8Array;
  /** hold's frame length, 0 when none (readvMergeable's state). */
  private readonly holdState = new Int32Array(1);
  /**
   * One byte read after a single frame's buffers: the TAP cuts a frame
   * larger than the room offered short without a word, so a read that
   * reaches this byte is a frame too large.
   */
  private sentinelIo = registerIoRegion(new Uint8Array(1));
  /** Region index by native I/O index (small integers; an array, not a Map, on the hot path). */
  private readonly ioToRegion: number[] = [];
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
    this.guestCsum = hasFeature(f, VIRTIO_NET_F_GUEST_CSUM);
    this.inOrder = hasFeature(f, VIRTIO_F_IN_ORDER);
    const gso = [VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_GUEST_USO4, VIRTIO_NET_F_GUEST_USO6].some((b) =>
      hasFeature(f, b),
    );
    // §5.1.6.3.1: with guest GSO and without MRG_RXBUF, buffers of at least 65562 bytes.
    this.minNeed = NET_HDR_SIZE + 14 + 4 + mtu;
    this.need = gso ? BIG_RX_BUFFER : this.minNeed;
    // Merged frames need up to `need` bytes of chains each.
    const cap = this.mergeable ? Math.max(4 * batch, Math.ceil(this.need / 256) + 8) : batch;
    this.batch = batch;
    this.chain = q.newChain();
    this.plan = new IoPlan(batch, Math.max(batch * 4, cap * 4));
    this.views = regionViews(q.mem);
    q.mem.regions.forEach((_, r) => {
      const io = q.mem.ioRegion(r);
      if (io < 0) return;
      while (this.ioToRegion.length <= io) this.ioToRegion.push(0);
      this.ioToRegion[io] = r;
    });
    this.e = new BatchEntries(cap);
    this.mergeResults = new Int32Array(2 * cap);
    this.hold = new Uint8Array(this.mergeable ? this.need + 1 : 0); // + 1: a frame too large shows as such
    this.keepFlags = new Uint8Array(cap);
  }

  stop(): void {
    this.unhold();
    if (this.sentinelIo >= 0) unregisterIoRegion(this.sentinelIo);
    this.sentinelIo = -1;
    if (this.holdState[0]! > 0) this.drop('rx_held_at_reset');
    this.holdState[0] = 0;
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
      // A frame held by the mergeable reader goes first, whatever the mode.
      const oneByOne = (this.limiter.active || (this.ctx.filter.active && this.inOrder)) && this.holdState[0] === 0;
      if (oneByOne) this.unhold();
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

  // Pops one chain into entry i; returns 1 (usable), 0 (dropped, recorded), -1 (empty), -2 (broken).
  private popInto(i: number, needBytes: number): number {
    const q = this.q;
    const c = this.chain;
    const position = q.savePosition();
    const r = q.popChain(c);
    if (r === Pop.EMPTY) return -1;
    if (r === Pop.BROKEN) {
      this.ctx.markBroken(c.fault);
      return -2;
    }
    let reason: DropReason | null = null;
    if (r === Pop.BAD_CHAIN || c.readable > 0) reason = 'rx_bad_chain';
    else if (c.writableBytes < needBytes || c.len[0]! < NET_HDR_SIZE) reason = 'rx_buffer_too_small';
    this.e.record(i, c, position, c.writableBytes, reason);
    return reason === null ? 1 : 0;
  }

  private addChainSegments(): void {
    const c = this.chain;
    const mem = this.q.mem;
    for (let s = 0; s < c.count; s++) this.plan.addSegment(mem.ioRegion(c.region[s]!), c.offset[s]!, c.len[s]!);
  }

  /** Gives back every held chain (un-pops them, in order). */
  private unhold(): void {
    if (this.held > 0) this.q.restorePosition(this.e.pos[0]!);
    this.held = 0;
    this.plan.reset();
  }

  /**
   * Pops chains behind the held ones until the entries are full. A bad chain
   * is completed at once when it is first (so used entries keep the available
   * order, VIRTIO_F_IN_ORDER), else un-popped to be first next time.
   * Returns false when the ring is broken.
   */
  private fill(perChain: number): boolean {
    const e = this.e;
    const plan = this.plan;
    while (this.held < e.capacity) {
      const n = this.held;
      const p = this.popInto(n, perChain);
      if (p === -2) return false;
      if (p === -1) break;
      if (p === 0) {
        if (n > 0) {
          this.q.restorePosition(e.pos[n]!);
          break;
        }
        this.drop(e.reason[0]!);
        this.q.addUsed(e.head[0]!, 0, e.slots[0]!);
        continue;
      }
      if (!plan.beginFrame()) {
        this.q.restorePosition(e.pos[n]!);
        break;
      }
      this.addChainSegments();
      e.frame[n] = plan.frames - 1;
      this.held = n + 1;
    }
    return true;
  }

  /** Keeps the held chains flagged in keepFlags (not completed), in order. */
  private retain(): void {
    this.plan.keepFrames(this.keepFlags);
    this.held = this.e.keep(this.keepFlags, this.held);
  }

  // Many frames, one chain each, one native call. Returns frames handled, or 0 to stop.
  private readBatch(): number {
    if (!this.fill(this.need)) return 0;
    if (this.held === 0) {
      this.flush();
      return this.waitForBuffers(this.q.savePosition()) ? 1 : 0;
    }
    const e = this.e;
    const plan = this.plan;
    const done = this.tap.readBatch(plan);
    if (this.observer !== null) this.observer.batch(); // trace-hook
    const filter = this.ctx.filter.active;
    const keep = this.keepFlags;
    keep.fill(1, 0, this.held);
    let handled = 0;
    let stop = false;
    let at = 0; // plan position of frame i
    for (let i = 0; i < done; i++, at += 1 + 3 * plan.plan[at]!) {
      const r = plan.results[i]!;
      if (r < 0) {
        if (r !== NEG_EAGAIN) this.readError(r);
        stop = true;
        break;
      }
      handled++;
      if (r > this.need && r >= e.bytes[i]!) {
        // Larger than any frame the device offers room for, and it filled the
        // buffer: the TAP cut it short. Its chain takes the next frame.
        this.drop('rx_frame_truncated');
        continue;
      }
      const refused = filter ? this.filterFrame(at, r) : null;
      if (refused !== null) {
        this.drop(refused); // its chain stays held for the next frame
        continue;
      }
      keep[i] = 0;
      this.deliver(i, r, 1);
      if (this.observer !== null) this.observer.frame(false, this.index, plan.plan, at, r, 1); // trace-hook
      this.q.addUsed(e.head[i]!, r, e.slots[i]!);
    }
    if (this.observer !== null) this.observer.flush(); // trace-hook: before retain() moves the plan's entries
    this.retain();
    this.flush();
    return stop ? 0 : Math.max(1, handled);
  }

  // MRG_RXBUF (§5.1.6.4): many frames in one native call, each taking as many
  // chains as its bytes need, from the held chains.
  private readMerged(): number {
    if (!this.fill(NET_HDR_SIZE)) return 0;
    const e = this.e;
    const end = this.q.savePosition();
    if (this.held === 0) {
      this.flush();
      return this.waitForBuffers(end) ? 1 : 0;
    }
    const res = this.mergeResults;
    const frames = this.tap.readMergeable(this.plan, this.minNeed, this.need, res, this.hold, this.holdState);
    if (this.observer !== null) this.observer.batch(); // trace-hook
    const filter = this.ctx.filter.active;
    const keep = this.keepFlags;
    keep.fill(1, 0, this.held);
    let g = 0;
    let delivered = 0;
    let stop = false;
    const p = this.plan.plan;
    let at = 0; // plan position of group g
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
      const refused = filter ? this.filterFrame(at, bytes) : null;
      const frameAt = at;
      for (let j = 0; j < k; j++) at += 1 + 3 * p[at]!;
      if (refused !== null) {
        this.drop(refused); // its chains stay held for the next frames
        g += k;
        delivered++;
        continue;
      }
      let left = bytes;
      for (let j = 0; j < k; j++) {
        const take = Math.min(left, e.bytes[g + j]!);
        this.q.addUsed(e.head[g + j]!, take, e.slots[g + j]!);
        keep[g + j] = 0;
        left -= take;
      }
      this.deliver(g, bytes, k);
      if (this.observer !== null) this.observer.frame(false, this.index, p, frameAt, bytes, k); // trace-hook
      this.limiter.charge(bytes);
      g += k;
      delivered++;
    }
    if (this.observer !== null) this.observer.flush(); // trace-hook: before retain() moves the plan's entries
    this.retain();
    this.flush();
    if (stop) return 0; // drained
    // No EAGAIN: the held chains ran short of room for another frame.
    if (delivered === 0) {
      if (this.holdState[0]! > 0 && this.ringExhausted()) {
        // The held frame is larger than every buffer the ring can offer at once.
        this.drop('rx_frame_truncated');
        this.holdState[0] = 0;
        return 1;
      }
      return this.waitForBuffers(end) ? 1 : 0;
    }
    return delivered;
  }

  // True when no more buffers can come before some are completed: the device
  // holds every descriptor of the ring, or as many chains as it keeps.
  private ringExhausted(): boolean {
    if (this.held >= this.e.capacity) return true;
    let descs = 0;
    for (let i = 0; i < this.held; i++) descs += this.e.descs[i]!;
    return descs >= this.q.size;
  }

  // One frame: one chain, or with MRG_RXBUF as many as the largest frame needs.
  private readOne(): number {
    if (this.limiter.active && !this.limiter.allow(0)) {
      this.throttle();
      return 0;
    }
    const plan = this.plan;
    plan.reset();
    plan.beginFrame();
    let k = 0;
    let room = 0;
    const perChain = this.mergeable ? NET_HDR_SIZE : this.need;
    const e = this.e;
    while (room < this.need && k < e.capacity) {
      const p = this.popInto(k, perChain);
      if (p === -2) return 0;
      if (p === -1) break;
      if (p === 0) {
        // A bad chain: complete it now, it takes no part in the frame.
        this.drop(e.reason[k]!);
        this.q.addUsed(e.head[k]!, 0, e.slots[k]!);
        continue;
      }
      this.addChainSegments();
      room += e.bytes[k]!;
      k++;
      if (!this.mergeable) break;
    }
    if (room < this.minNeed || k === 0) {
      // Not enough buffers for a frame: give them back and wait for more.
      const end = this.q.savePosition();
      if (k > 0) this.q.restorePosition(e.pos[0]!);
      this.flush();
      return this.waitForBuffers(end) ? 1 : 0;
    }
    if (this.sentinelIo >= 0) plan.addSegment(this.sentinelIo, 0, 1);
    const done = this.tap.readBatch(plan);
    if (this.observer !== null) this.observer.batch(); // trace-hook
    const r = done > 0 ? plan.results[0]! : NEG_EAGAIN;
    if (r === -EFAULT || r > room) {
      // The frame was larger than every buffer offered for it: the TAP cut
      // it short (it reached the sentinel byte) or refused it (EFAULT).
      this.drop('rx_frame_truncated');
      this.q.restorePosition(e.pos[0]!);
      this.flush();
      return 1;
    }
    if (r < 0) {
      this.q.restorePosition(e.pos[0]!);
      if (r !== NEG_EAGAIN) this.readError(r);
      this.flush();
      return 0;
    }
    const reason = this.filterFrame(0, r); // frame 0 starts the plan
    if (reason !== null) {
      this.drop(reason);
      this.q.restorePosition(e.pos[0]!); // the same buffers take the next frame
      this.flush();
      return 1;
    }
    // The chains the frame filled; the rest go back.
    let used = 0;
    let left = r;
    while (used < k && left > 0) {
      const take = Math.min(left, e.bytes[used]!);
      this.q.addUsed(e.head[used]!, take, e.slots[used]!);
      left -= take;
      used++;
    }
    if (used < k) this.q.restorePosition(e.pos[used]!);
    this.deliver(0, r, used);
    if (this.observer !== null) this.observer.frame(false, this.index, plan.plan, 0, r, used); // trace-hook
    this.limiter.charge(r);
    this.flush();
    return 1;
  }

  // The header as the guest must see it: num_buffers, and no offload flags it did not accept.
  private deliver(i: number, bytes: number, numBuffers: number): void {
    const dv = this.views[this.e.firstRegion[i]!]!;
    const off = this.e.firstOffset[i]!;
    // §5.1.6.4: num_buffers, little-endian; 1 without MRG_RXBUF.
    dv.setUint16(off + 10, numBuffers, true);
    // §5.1.6.4.1: without GUEST_CSUM the device sets flags to zero.
    if (!this.guestCsum) dv.setUint8(off, 0);
    const m = this.ctx.metrics;
    m.rxPackets++;
    m.rxBytes += bytes;
  }

  // Reads the first bytes (after the header) of the frame whose plan entry
  // starts at plan position `at` (running on into the next entries, for a
  // merged frame) for the filter.
  private filterFrame(start: number, bytes: number): DropReason | null {
    const filter = this.ctx.filter;
    if (!filter.active) return null;
    const p = this.plan.plan;
    let at = start;
    const want = Math.min(bytes, NET_HDR_SIZE + 18) - NET_HDR_SIZE;
    // Usually the header and the Ethernet header share the first segment: look in place.
    if (p[at]! >= 1 && p[at + 3]! >= NET_HDR_SIZE + want) {
      const bytesOfRegion = this.q.mem.regions[this.regionOfIo(p[at + 1]!)]!.bytes;
      return filter.check(bytesOfRegion, p[at + 2]! + NET_HDR_SIZE, want);
    }
    let got = 0;
    let skip = NET_HDR_SIZE;
    const regions = this.q.mem.regions;
    // Segments run on through the following frames' groups (merged frames).
    while (got < want && at < this.plan.plan.length) {
      const count = p[at]!;
      for (let s = 0; s < count && got < want; s++) {
        const region = this.regionOfIo(p[at + 1 + s * 3]!);
        const off = p[at + 2 + s * 3]!;
        const len = p[at + 3 + s * 3]!;
        const start = Math.min(skip, len);
        skip -= start;
        const take = Math.min(len - start, want - got);
        if (take > 0) {
          this.peek.set(regions[region]!.bytes.subarray(off + start, off + start + take), got);
          got += take;
        }
      }
      at += 1 + 3 * count;
    }
    return filter.check(this.peek, 0, got);
  }

  private regionOfIo(ioIndex: number): number {
    return this.ioToRegion[ioIndex] ?? 0;
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

  private drop(reason: DropReason): void {
    this.ctx.metrics.drops[reason]++;
    if (this.observer !== null) this.observer.drop(this.index, reason); // trace-hook
  }

  private flush(): void {
    if (this.observer !== null) this.observer.flush(); // trace-hook
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
