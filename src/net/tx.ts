// Transmit (VIRTIO 1.2 §5.1.6.2): each chain goes to the TAP as one writev,
// its virtio_net_hdr passed straight through (IFF_VNET_HDR). Chains are
// validated and planned in a batch, written with one native call, and
// completed in order; on EAGAIN the queue is rewound to the first chain not
// written, which waits for the TAP to become writable.
//
// With a transmit timer (txTimerMs > 0), once a kick's chains are sent the
// device keeps kicks off and looks at the ring again after the timer; it
// asks for kicks again only when a look finds nothing. A burst then costs
// one wakeup per timer period instead of one per kick, and the guest saves
// its notifications (QEMU's virtio-net tx=timer works this way). The first
// frame after a quiet spell still goes at once, on its kick.

import { HostError, IoAction, ioAction, ioDropReason, NEG_EAGAIN } from '../host/errors.js';
import { IoPlan } from '../host/io-plan.js';
import type { TapQueue } from '../tap/tap.js';
import { DescriptorChain, Pop } from '../virtio/descriptor-chain.js';
import type { DeviceQueue } from '../virtio/queue.js';
import { NET_HDR_SIZE } from './constants.js';
import type { DropReason } from './metrics.js';
import { checkTxHeader, HDR_CSUM_OFFSET, HDR_CSUM_START, HDR_FLAGS, HDR_GSO_TYPE, TxHeaderFault } from './net-header.js';
import { BatchEntries } from './batch-entries.js';
import { regionViews, type NetQueueContext } from './queue-context.js';
import type { RateLimiter } from './rate-limiter.js';
import type { FrameObserver } from './observer.js';

/** Largest frame a TAP takes: a 64 KiB GSO frame plus headers. */
const MAX_TX_FRAME = NET_HDR_SIZE + 65535 + 14 + 4;
const MIN_TX_FRAME = NET_HDR_SIZE + 14;

export class TxQueue {
  readonly index: number;
  /** True while waiting for the TAP to become writable. */
  waitingWritable = false;
  /** Trace and capture of each frame; null when neither is on. */
  observer: FrameObserver | null = null;
  private readonly q: DeviceQueue;
  private readonly ctx: NetQueueContext;
  private readonly tap: TapQueue;
  private readonly limiter: RateLimiter;
  private readonly chain: DescriptorChain;
  private readonly plan: IoPlan;
  private readonly batch: number;
  private readonly views: DataView[];
  private readonly hdr = new Uint8Array(NET_HDR_SIZE);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private readonly e: BatchEntries;
  private throttleTimer: NodeJS.Timeout | null = null;
  private readonly txTimerMs: number;
  private txTimer: NodeJS.Timeout | null = null;
  /** Chains completed by the last runBatch. */
  private lastBatch = 0;
  private stopped = false;

  constructor(index: number, q: DeviceQueue, tap: TapQueue, ctx: NetQueueContext, limiter: RateLimiter, batch = 64, txTimerMs = 0) {
    this.index = index;
    this.txTimerMs = txTimerMs;
    this.q = q;
    this.tap = tap;
    this.ctx = ctx;
    this.limiter = limiter;
    this.batch = batch;
    this.chain = q.newChain();
    this.plan = new IoPlan(batch, batch * 8);
    this.views = regionViews(q.mem);
    this.e = new BatchEntries(batch);
  }

  stop(): void {
    this.stopped = true;
    if (this.throttleTimer !== null) clearTimeout(this.throttleTimer);
    this.throttleTimer = null;
    if (this.txTimer !== null) clearTimeout(this.txTimer);
    this.txTimer = null;
    this.waitingWritable = false;
  }

  /** The TAP became writable again. */
  onWritable(): void {
    this.waitingWritable = false;
    this.ctx.updateWatch();
    this.process();
  }

  /** A kick, or a retry: send what the driver made available. */
  process(): void {
    if (this.stopped || this.waitingWritable || this.throttleTimer !== null || this.txTimer !== null) return;
    const q = this.q;
    q.disableNotifications();
    let sent = false;
    for (;;) {
      const more = this.runBatch();
      if (this.lastBatch > 0) sent = true;
      if (this.stopped || this.waitingWritable || this.throttleTimer !== null || q.broken) return;
      if (more) continue;
      if (sent && this.txTimerMs > 0) {
        // Kicks stay off; the timer looks again.
        this.txTimer = setTimeout(this.onTxTimer, this.txTimerMs);
        return;
      }
      // Ask for kicks again; chains that slipped in meanwhile are ours to send (§2.7, §2.8 suppression races).
      if (!q.enableNotifications()) return;
      q.disableNotifications();
    }
  }

  private readonly onTxTimer = (): void => {
    this.txTimer = null;
    this.process();
  };

  // Returns true when the batch was full (more may be waiting).
  private runBatch(): boolean {
    const q = this.q;
    const c = this.chain;
    const plan = this.plan;
    const mem = q.mem;
    plan.reset();
    this.lastBatch = 0;
    let n = 0;
    let full = false;
    while (n < this.batch) {
      const position = q.savePosition();
      const r = q.popChain(c);
      if (r === Pop.EMPTY) break;
      if (r === Pop.BROKEN) {
        // Tier 2: nothing more is sent or completed until the driver resets the device.
        this.ctx.markBroken(c.fault);
        return false;
      }
      let reason: DropReason | null = null;
      if (r === Pop.BAD_CHAIN) reason = 'tx_bad_chain';
      // VIRTIO_NET_S_LINK_UP clear (§5.1.4): the chain is completed unsent and counted.
      else if (!this.ctx.linkUp) reason = 'tx_link_down';
      else if (c.readable !== c.count || c.writableBytes > 0) reason = 'tx_writable_descriptor';
      else if (c.readableBytes < MIN_TX_FRAME) reason = 'tx_too_short';
      else if (c.readableBytes > MAX_TX_FRAME) reason = 'tx_too_long';
      else if (this.headerFault(c) !== TxHeaderFault.NONE) reason = 'tx_bad_header';
      if (reason === null && this.limiter.active && !this.limiter.allow(c.readableBytes)) {
        q.restorePosition(position);
        this.throttle(c.readableBytes);
        break;
      }
      this.e.record(n, c, position, c.readableBytes, reason);
      if (reason === null && plan.beginFrame()) {
        for (let s = 0; s < c.count; s++) plan.addSegment(mem.ioRegion(c.region[s]!), c.offset[s]!, c.len[s]!);
        this.e.frame[n] = plan.frames - 1;
      }
      n++;
      if (n === this.batch) full = true;
    }
    this.lastBatch = n;
    if (n === 0) return false;
    const done = plan.frames > 0 ? this.tap.writeBatch(plan) : 0;
    const finished = this.results(n, done);
    this.complete(finished);
    return full && finished === n;
  }

  // Completes entries in pop order; returns how many were completed.
  private results(n: number, done: number): number {
    const m = this.ctx.metrics;
    const res = this.plan.results;
    const e = this.e;
    const plan = this.plan;
    let at = 0; // plan position of the next planned frame
    if (this.observer !== null) this.observer.batch();
    for (let i = 0; i < n; i++) {
      const f = e.frame[i]!;
      if (f < 0) {
        this.drop(e.reason[i]!);
        this.q.addUsed(e.head[i]!, 0, e.slots[i]!);
        continue;
      }
      const start = at;
      at = plan.next(at);
      const r = f < done ? res[f]! : NEG_EAGAIN;
      if (r === NEG_EAGAIN) {
        // The TAP's queue is full: un-pop this chain and every one after it.
        this.q.restorePosition(e.pos[i]!);
        m.txTapFull++;
        this.waitingWritable = true;
        this.ctx.updateWatch();
        return i;
      }
      if (this.observer !== null) this.observer.frame(true, this.index, plan, start, r, 1);
      if (r >= 0) {
        m.txPackets++;
        m.txBytes += r;
      } else if (ioAction(r) === IoAction.Fatal) {
        this.hostFailure(r);
      } else {
        this.drop(ioDropReason(r, 'tx'));
      }
      // §5.1.6.2: the device writes nothing into a transmit buffer: used length 0.
      this.q.addUsed(e.head[i]!, 0, e.slots[i]!);
    }
    return n;
  }

  private drop(reason: DropReason): void {
    this.ctx.metrics.drops[reason]++;
    if (this.observer !== null) this.observer.drop(this.index, reason);
  }

  private complete(count: number): void {
    if (this.observer !== null) this.observer.flush();
    if (count === 0) return;
    if (this.q.flushUsed()) this.ctx.interrupt(this.index);
  }

  // The TAP itself is gone (tier 3, host/errors.ts decides which errno means that).
  private hostFailure(r: number): void {
    this.ctx.metrics.tapErrors++;
    this.ctx.hostError(HostError.fromErrno(r, 'writev', `transmit on TAP queue ${this.index >>> 1}`));
  }

  private throttle(bytes: number): void {
    this.ctx.metrics.txThrottled++;
    const ms = Math.max(1, this.limiter.waitMs(bytes));
    this.throttleTimer = setTimeout(() => {
      this.throttleTimer = null;
      this.process();
    }, ms);
  }

  private headerFault(c: DescriptorChain): number {
    // The header usually sits in the first segment; gather it when split.
    let dv: DataView;
    let off: number;
    if (c.len[0]! >= NET_HDR_SIZE) {
      dv = this.views[c.region[0]!]!;
      off = c.offset[0]!;
    } else {
      const bytes = this.q.mem.regions;
      let got = 0;
      for (let s = 0; s < c.readable && got < NET_HDR_SIZE; s++) {
        const take = Math.min(c.len[s]!, NET_HDR_SIZE - got);
        const start = c.offset[s]!;
        this.hdr.set(bytes[c.region[s]!]!.bytes.subarray(start, start + take), got);
        got += take;
      }
      dv = this.hdrView;
      off = 0;
    }
    return checkTxHeader(
      this.ctx.features,
      dv.getUint8(off + HDR_FLAGS),
      dv.getUint8(off + HDR_GSO_TYPE),
      dv.getUint16(off + HDR_CSUM_START, true),
      dv.getUint16(off + HDR_CSUM_OFFSET, true),
      c.readableBytes - NET_HDR_SIZE,
    );
  }
}
