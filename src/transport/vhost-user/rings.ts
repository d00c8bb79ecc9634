// The front-end's rings (vhost-user.rst "Starting and stopping rings"): what
// SET_VRING_* said of each, its kick, call and error eventfds, and when the
// device starts serving them. A ring starts once its size, addresses and kick
// fd are set and it is enabled; the device starts with the first pair's, the
// control queue (when the device runs it) and further pairs as theirs are.
import { native, type NativePoller } from '../../host/binding.js';
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
}

export type RingFd = 'kickFd' | 'callFd' | 'errFd';

function freshRing(): Ring {
  return { num: 0, desc: 0n, used: 0n, avail: 0n, hasAddr: false, base: 0, kickFd: -1, callFd: -1, errFd: -1, kickPoller: null, enabled: false, started: false };
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
  ) {
    this.reset();
  }

  /** Ring i; throws VhostUserError naming the request when there is none. */
  at(i: number, request: string): Ring {
    const r = this.list[i];
    if (r === undefined) throw new VhostUserError(`${request}: ring ${i} out of range (0 to ${this.list.length - 1})`);
    return r;
  }

  /** The device's interrupt sink: a used-buffer interrupt signals the ring's call eventfd. */
  interrupt(kind: InterruptKind, q: number): void {
    const fd = this.list[q]?.callFd ?? -1;
    if (kind === 'vring' && fd >= 0) this.n.eventfdWrite(fd);
  }

  /** Puts fd (or -1) in one of the ring's fd slots, closing what was there. */
  setFd(r: Ring, field: RingFd, fd: number): void {
    if (field === 'kickFd') {
      r.kickPoller?.close();
      r.kickPoller = null;
    }
    if (r[field] >= 0) this.n.close(r[field]);
    r[field] = fd;
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
    this.negotiate(acked);
    const packed = hasFeature(acked, VIRTIO_F_RING_PACKED);
    // Pair 0 now; the control queue and the pairs whose rings are enabled already follow once the device runs.
    this.startRing(0, packed);
    this.startRing(1, packed);
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

  private startRing(i: number, packed: boolean): void {
    const r = this.list[i]!;
    const dev = this.device;
    const guest = this.memory.guest!;
    const addresses = {
      size: r.num,
      desc: this.memory.translate(r.desc, 16 * r.num),
      driver: this.memory.translate(r.avail, packed ? 4 : 6 + 2 * r.num),
      device: this.memory.translate(r.used, packed ? 4 : 6 + 8 * r.num),
    };
    const q = dev.activateQueue(i, guest, addresses);
    q.setBase(r.base);
    r.started = true;
    r.kickPoller = new this.n.Poller(r.kickFd, () => {
      if (this.n.eventfdRead(r.kickFd) > 0 && dev.running) dev.kick(i);
    });
    r.kickPoller.start(1);
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
      this.startRing(ci, packed);
      dev.serveControl();
      this.log(`control queue ${ci} started`);
    }
    let inUse = 1;
    for (let p = 1; p < dev.pairs; p++) {
      const rx = this.list[2 * p];
      const tx = this.list[2 * p + 1];
      if (rx === undefined || tx === undefined || 2 * p === ci) break;
      if (!rx.started && !tx.started && ready(rx) && ready(tx)) {
        this.startRing(2 * p, packed);
        this.startRing(2 * p + 1, packed);
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
