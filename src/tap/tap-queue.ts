// One queue of a TAP (Linux Documentation/networking/tuntap.rst): an fd with
// its readiness events, batched I/O, and TUNSETQUEUE for a multi-queue TAP.
import { EventEmitter } from 'node:events';
import { constants as osConstants } from 'node:os';

import { native, type NativeBinding, type NativePoller } from '../host/binding.js';
import type { IoPlan } from '../host/io-plan.js';
import { errnoError, type TapError, usageError } from './errors.js';

/** What a queue knows of the TAP it belongs to (a Tap, or only a name for a borrowed queue). */
export interface TapQueueOwner {
  readonly name: string;
  /** True for a stand-in (Tap.socketPair): no kernel steering to attach to. */
  readonly isSocketPair?: boolean;
}

/** One queue of a TAP: an fd with its readiness events and batched I/O. */
export class TapQueue extends EventEmitter<{ readable: []; writable: []; error: [TapError] }> {
  readonly index: number;
  private fdValue: number;
  private poller: NativePoller | undefined;
  private watching = 0;
  private isEnabled = true;
  private readonly tap: TapQueueOwner;
  private readonly n: NativeBinding;

  /** Whether close() closes the fd (false for a queue borrowed by a worker thread). */
  private readonly ownsFd: boolean;

  /** @internal a Tap makes its queues */
  constructor(tap: TapQueueOwner, index: number, fd: number, ownsFd = true) {
    super();
    this.tap = tap;
    this.index = index;
    this.fdValue = fd;
    this.ownsFd = ownsFd;
    this.n = native();
  }

  /**
   * A queue over an fd that another thread's Tap owns (fds are process-wide):
   * a worker thread polls and serves it on its own loop; close() only stops
   * polling, and the owner closes the fd.
   */
  static borrow(fd: number, tapName: string, index: number): TapQueue {
    return new TapQueue({ name: tapName }, index, fd, false);
  }

  get fd(): number {
    if (this.fdValue < 0) throw this.closedError('fd');
    return this.fdValue;
  }

  get closed(): boolean {
    return this.fdValue < 0;
  }

  /** Chooses which readiness events are delivered; the process stays alive while any is watched. */
  watch(events: { readable?: boolean; writable?: boolean }): void {
    if (this.fdValue < 0) throw this.closedError('watch');
    const mask = (events.readable === true ? 1 : 0) | (events.writable === true ? 2 : 0);
    if (mask === this.watching) return;
    if (this.poller === undefined) {
      if (mask === 0) return;
      this.poller = new this.n.Poller(this.fdValue, (status, ev) => this.onPoll(status, ev));
    }
    const rc = this.poller.start(mask);
    if (rc < 0) throw errnoError(rc, 'uv_poll_start', this.tap.name, 'watching the TAP');
    this.watching = mask;
  }

  /** Bytes written, or -errno (-EAGAIN when the TAP's queue is full). Frames include the vnet header if enabled. */
  write(frame: ArrayBufferView): number {
    if (this.fdValue < 0) return -osConstants.errno.EBADF;
    return this.n.writeFrame(this.fdValue, frame);
  }

  /** Bytes read, or -errno (-EAGAIN when nothing is waiting). */
  read(into: ArrayBufferView): number {
    if (this.fdValue < 0) return -osConstants.errno.EBADF;
    return this.n.readFrame(this.fdValue, into);
  }

  /** One writev per planned frame; see NativeBinding.writevBatch. @internal the device's batched I/O */
  writeBatch(plan: IoPlan): number {
    if (this.fdValue < 0) return this.closedBatch(plan);
    return this.n.writevBatch(this.fdValue, plan.plan, plan.frames, plan.results);
  }

  /** One readv per planned frame; see NativeBinding.readvBatch. @internal the device's batched I/O */
  readBatch(plan: IoPlan): number {
    if (this.fdValue < 0) return this.closedBatch(plan);
    return this.n.readvBatch(this.fdValue, plan.plan, plan.frames, plan.results);
  }

  /** TUNSETQUEUE: attach (true) or detach (false) this queue of a multi-queue TAP from the kernel's steering. */
  setEnabled(enabled: boolean): void {
    if (this.fdValue < 0) throw this.closedError('setEnabled');
    if (enabled === this.isEnabled) return; // tun refuses attaching an attached queue (EINVAL)
    if (this.tap.isSocketPair === true) {
      this.isEnabled = enabled;
      return;
    }
    const rc = this.n.tunSetQueue(this.fdValue, enabled ? 1 : 0);
    if (rc < 0) throw errnoError(rc, 'TUNSETQUEUE', this.tap.name, `${enabled ? 'attaching' : 'detaching'} queue ${this.index}`);
    this.isEnabled = enabled;
  }

  /** Whether the kernel steers frames to this queue (a new queue is attached). */
  get enabled(): boolean {
    return this.isEnabled;
  }

  /** Mergeable receive over the groups (frames) of `plan`; see NativeBinding.readvMergeable. @internal the device's batched I/O */
  readMergeable(plan: IoPlan, minRoom: number, maxRoom: number, results: Int32Array, hold: Uint8Array, state: Int32Array): number {
    if (this.fdValue < 0) {
      results[0] = -osConstants.errno.EBADF;
      return 1;
    }
    return this.n.readvMergeable(this.fdValue, plan.plan, plan.frames, minRoom, maxRoom, results, hold, state);
  }

  /** Stops the poller before the fd closes, so the loop never watches a stale fd. */
  close(): void {
    if (this.fdValue < 0) return;
    this.poller?.close();
    this.poller = undefined;
    this.watching = 0;
    if (this.ownsFd) this.n.close(this.fdValue);
    this.fdValue = -1;
  }

  private closedBatch(plan: IoPlan): number {
    if (plan.frames > 0) plan.results[0] = -osConstants.errno.EBADF;
    return plan.frames > 0 ? 1 : 0;
  }

  private closedError(what: string): TapError {
    return usageError('ERR_TAP_CLOSED', `TAP "${this.tap.name}" queue ${this.index} is closed (${what})`, this.tap.name);
  }

  private onPoll(status: number, events: number): void {
    if (status < 0) {
      this.emit('error', errnoError(status, 'epoll', this.tap.name, `polling queue ${this.index}`));
      return;
    }
    if ((events & 1) !== 0 && (this.watching & 1) !== 0) this.emit('readable');
    if ((events & 2) !== 0 && (this.watching & 2) !== 0 && this.fdValue >= 0) this.emit('writable');
  }
}
