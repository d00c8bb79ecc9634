// The front-end's rings (vhost-user.rst "Starting and stopping rings"): what
// SET_VRING_* said of each, its kick, call and error eventfds, and when the
// device starts serving them. A ring starts once its size, addresses and kick
// fd are set and it is enabled; the device starts with the first pair's, the
// control queue (when the device runs it) and further pairs as theirs are.
import { native, type NativePoller } from '../../host/binding.js';
import { errnoName, NEG_EAGAIN } from '../../host/errors.js';
import { chainFaultName } from '../../virtio/descriptor-chain.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_RING_PACKED,
  hasFeature,
} from '../../virtio/constants.js';
import type { InterruptKind } from '../../virtio/device.js';
import type { VhostUserDevice } from './device.js';
import type { DeviceQueue, QueueAddresses } from '../../virtio/queue.js';
import type { MemoryTable } from './memory.js';
import { VhostUserError } from './protocol.js';

export interface Ring {
  num: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  hasAddr: boolean;
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  kickPoller: NativePoller | null;
  enabled: boolean;
  started: boolean;
  /** A fault of this ring was reported since it started (one report per fault). */
  reported: boolean;
}

export type RingFd = 'kickFd' | 'callFd' | 'errFd';

/** What the back-end counts of its rings and requests. */
export interface VhostUserStats {
  /** Requests refused. */
  refused: number;
  /** Rings the guest broke (tier 2: the device needs a reset). */
  ringsBroken: number;
  /** Kick or call fds that failed (tier 3): the ring stopped listening or signalling. */
  ringFdFaults: number;
  /** Interrupts not written because the call eventfd was at its maximum (the front-end has one pending). */
  callsPending: number;
  /** Host failures of the device (tier 3, a HostError from the TAP side). */
  deviceErrors: number;
}

export function freshStats(): VhostUserStats {
  return { refused: 0, ringsBroken: 0, ringFdFaults: 0, callsPending: 0, deviceErrors: 0 };
}

/** Where the rings' faults go: the back-end's 'error' event. */
export type FaultSink = (err: VhostUserError) => void;

function freshRing(): Ring {
  return { num: 0, desc: 0n, used: 0n, avail: 0n, hasAddr: false, base: 0, kickFd: -1, callFd: -1, errFd: -1, kickPoller: null, enabled: false, started: false, reported: false };
}

function ready(r: Ring | undefined): boolean {
  return r !== undefined && r.num > 0 && r.hasAddr && r.kickFd >= 0 && r.enabled;
}

export class Rings {
  private readonly n = native();
  private list: Ring[] = [];

  constructor(
    private readonly device: VhostUserDevice,
    private readonly memory: MemoryTable,
    private readonly log: (line: string) => void,
    readonly stats: VhostUserStats = freshStats(),
    private readonly onFault: FaultSink = () => {},
  ) {
    this.reset();
  }

  /** Ring i; throws VhostUserError naming the request when there is none. */
  at(i: number, request: string): Ring {
    const r = this.list[i];
    if (r === undefined) throw new VhostUserError(`${request}: ring ${i} out of range (0 to ${this.list.length - 1})`);
    return r;
  }

  /**
   * The device's interrupt sink: a used-buffer interrupt signals the ring's
   * call eventfd (non-blocking: at its maximum count an interrupt is pending
   * already, and is counted; any other failure stops signalling that ring).
   */
  interrupt(kind: InterruptKind, q: number): void {
    const r = this.list[q];
    if (kind !== 'vring' || r === undefined || r.callFd < 0) return;
    const rc = this.n.eventfdWrite(r.callFd);
    if (rc === NEG_EAGAIN) this.stats.callsPending++;
    else if (rc < 0) {
      this.setFd(r, 'callFd', -1);
      this.fdFault(q, `call fd failed: write: ${errnoName(rc)}; the ring signals no more interrupts`);
    }
  }

  /** Puts fd (or -1) in one of the ring's fd slots, closing what was there. */
  setFd(r: Ring, field: RingFd, fd: number): void {
    const old = this.replaceFd(r, field, fd);
    if (old >= 0) this.n.close(old);
  }

  /**
   * Puts fd (or -1) in one of the ring's fd slots and hands back what was
   * there, still open (to close once the request holds, or to put back). A
   * started ring listens on its new kick fd at once.
   */
  replaceFd(r: Ring, field: RingFd, fd: number): number {
    const old = r[field];
    if (field === 'kickFd') {
      r.kickPoller?.close();
      r.kickPoller = null;
    }
    r[field] = fd;
    if (field === 'kickFd' && r.started && fd >= 0) this.listen(this.list.indexOf(r));
    return old;
  }

  /**
   * Tier 2 under vhost-user: after the device set DEVICE_NEEDS_RESET, each
   * ring it found broken is reported once: its error eventfd written, a log
   * line naming the ring and the reason, a count, and an 'error'.
   */
  reportBroken(): void {
    this.list.forEach((r, i) => {
      const q = this.device.queues[i];
      if (!r.started || r.reported || q === null || q === undefined || !q.broken) return;
      r.reported = true;
      this.stats.ringsBroken++;
      this.signalError(r);
      const why = `ring ${i} broken: ${chainFaultName(q.brokenReason)} (the device needs a reset)`;
      this.log(why);
      this.onFault(new VhostUserError(why, { code: 'ERR_VHOST_USER_RING_BROKEN' }));
    });
  }

  // A kick or call fd failed (tier 3): the error eventfd, a log line, a count, an 'error'.
  private fdFault(i: number, why: string): void {
    const r = this.list[i]!;
    this.stats.ringFdFaults++;
    this.signalError(r);
    const line = `ring ${i} stopped: ${why}`;
    this.log(line);
    this.onFault(new VhostUserError(line, { code: 'ERR_VHOST_USER_RING_FD' }));
  }

  private signalError(r: Ring): void {
    if (r.errFd >= 0) this.n.eventfdWrite(r.errFd);
  }

  /**
   * Starts the device once the first pair's rings are all set and enabled
   * (and `driverOk`: the front-end allows it), then the control queue and
   * each further pair when their rings are. `acked` are the features the
   * front-end acked (SET_FEATURES).
   */
  maybeStart(acked: bigint, driverOk: boolean): void {
    if (this.memory.guest === null) return;
    const dev = this.device;
    if (dev.running) {
      this.startLate(acked);
      return;
    }
    if (!driverOk || !ready(this.list[0]) || !ready(this.list[1])) return;
    const packed = hasFeature(acked, VIRTIO_F_RING_PACKED);
    // Pair 0 now; the control queue and the pairs whose rings are enabled already follow once the device runs.
    const addresses = [this.addresses(0, packed), this.addresses(1, packed)];
    try {
      this.negotiate(acked);
      this.startGroup([0, 1], addresses);
    } catch (err) {
      if (dev.status !== 0) dev.setStatus(0); // the device never ran: back to where it was before negotiation
      throw err;
    }
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    this.log(`device started: ${this.list.filter((r) => r.started).length} rings, ${packed ? 'packed' : 'split'}`);
    this.startLate(acked);
  }

  // Brings the device to FEATURES_OK with the acked features, unless SET_STATUS already did.
  private negotiate(acked: bigint): void {
    const dev = this.device;
    if ((dev.status & VIRTIO_CONFIG_S_FEATURES_OK) !== 0 && dev.driverFeatures === acked) return;
    dev.setStatus(0);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    dev.setDriverFeatures(acked);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    if ((dev.status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) throw new VhostUserError(`the device refused features 0x${acked.toString(16)}`);
  }

  // Ring i's areas as guest-physical addresses; throws VhostUserError for one in no region.
  private addresses(i: number, packed: boolean): QueueAddresses {
    const r = this.list[i]!;
    return {
      size: r.num,
      desc: this.memory.translate(r.desc, 16 * r.num),
      driver: this.memory.translate(r.avail, packed ? 4 : 6 + 2 * r.num),
      device: this.memory.translate(r.used, packed ? 4 : 6 + 8 * r.num),
    };
  }

  // Starts rings together or not at all: a ring that cannot start undoes the others (nothing polls, nothing is started).
  private startGroup(indices: number[], addresses: QueueAddresses[]): void {
    const guest = this.memory.guest!;
    try {
      indices.forEach((i, k) => {
        const r = this.list[i]!;
        const q = this.device.activateQueue(i, guest, addresses[k]!);
        q.setBase(r.base);
        this.resume(i, q);
        r.started = true;
        r.reported = false;
        this.listen(i);
      });
    } catch (err) {
      for (const i of indices) {
        const r = this.list[i]!;
        r.kickPoller?.close();
        r.kickPoller = null;
        r.started = false;
      }
      throw err;
    }
  }

  // A packed ring's position comes from the front-end (SET_VRING_BASE),
  // which knows it from the last GET_VRING_BASE only. A back-end that died
  // answered none: QEMU 7.2 then restores a split ring's position from the
  // used index in guest memory, but has nothing to read for a packed one and
  // sends the position it had before (0x80008000 for a ring never stopped).
  // When the ring in guest memory shows the device's used position
  // unambiguously (PackedQueue.usedPositionInRing) and the front-end's
  // disagrees, the ring's is taken for both sides: the chains the dead
  // back-end popped but did not use are popped again, as QEMU does for a
  // split ring.
  private resume(i: number, q: DeviceQueue): void {
    const inRing = q.usedPositionInRing?.() ?? null;
    const given = q.getBase() >>> 16;
    if (inRing === null || inRing === given) return;
    q.setBase(inRing);
    const at = (p: number): string => `index ${p & 0x7fff} wrap ${p >>> 15}`;
    this.log(`ring ${i}: the front-end's base (used ${at(given)}) is not where the ring stands; resuming at ${at(inRing)}, where its USED flags show the device stopped`);
  }

  // Listens on ring i's kick eventfd. A kick fd that reads at EOF or fails stops the ring listening, with a reason.
  private listen(i: number): void {
    const r = this.list[i]!;
    const fd = r.kickFd;
    let p: NativePoller;
    try {
      p = new this.n.Poller(fd, (status) => this.onKick(i, fd, status));
    } catch (err) {
      throw new VhostUserError(`ring ${i}: cannot poll its kick fd: ${(err as Error).message}`);
    }
    r.kickPoller = p;
    const rc = p.start(1);
    if (rc !== 0) throw new VhostUserError(`ring ${i}: cannot poll its kick fd (${rc})`);
  }

  private onKick(i: number, fd: number, status: number): void {
    const got = this.n.eventfdRead(fd);
    if (got > 0) {
      if (this.device.running) this.device.kick(i);
      return;
    }
    if (got === NEG_EAGAIN && status >= 0) return;
    const r = this.list[i]!;
    r.kickPoller?.close();
    r.kickPoller = null;
    this.fdFault(i, `kick fd ${status < 0 ? `poll failed (${status})` : got === 0 ? 'at end of file' : `read failed: ${errnoName(got)}`}; the ring takes no more kicks`);
  }

  // The control queue, when the device runs it, starts when its ring is
  // ready. Pairs beyond the first start when both their rings are ready (up
  // to the control queue: without MQ it is virtqueue 2, VIRTIO 1.2 §5.1.2);
  // when the front-end runs the control queue, the pairs in use are those up
  // to the last one whose rings are enabled.
  private startLate(acked: bigint): void {
    const packed = hasFeature(acked, VIRTIO_F_RING_PACKED);
    const dev = this.device;
    const ci = dev.controlQueueIndex;
    const ctrl = ci >= 0 ? this.list[ci] : undefined;
    if (ctrl !== undefined && !ctrl.started && ready(ctrl)) {
      this.startGroup([ci], [this.addresses(ci, packed)]);
      dev.serveControl();
      this.log(`control queue ${ci} started`);
    }
    let inUse = 1;
    for (let p = 1; p < dev.pairs; p++) {
      const rx = this.list[2 * p];
      const tx = this.list[2 * p + 1];
      if (rx === undefined || tx === undefined || 2 * p === ci) break;
      if (!rx.started && !tx.started && ready(rx) && ready(tx)) {
        this.startGroup([2 * p, 2 * p + 1], [this.addresses(2 * p, packed), this.addresses(2 * p + 1, packed)]);
        dev.servePair(p);
        this.log(`queue pair ${p} started`);
      }
      if (rx.started && tx.started && rx.enabled && tx.enabled) inUse = p + 1;
    }
    if (ci < 0 && dev.activePairs !== inUse) dev.useQueuePairs(inUse);
  }

  /** Stops serving, keeping each ring's position for GET_VRING_BASE; a device that was started is reset. */
  stop(): void {
    const dev = this.device;
    this.list.forEach((r, i) => {
      const q = dev.queues[i];
      if (r.started && q) {
        r.base = q.getBase();
        this.log(`ring ${i} stopped: ${q.stats.chains} chains`);
      }
      r.kickPoller?.close();
      r.kickPoller = null;
      r.started = false;
    });
    if ((dev.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0) dev.setStatus(0);
  }

  /** Closes every ring's fds and forgets what was set: one fresh ring per virtqueue of the device (control queue included). */
  reset(): void {
    for (const r of this.list) {
      this.setFd(r, 'kickFd', -1);
      this.setFd(r, 'callFd', -1);
      this.setFd(r, 'errFd', -1);
    }
    this.list = Array.from({ length: this.device.queues.length }, freshRing);
  }
}
