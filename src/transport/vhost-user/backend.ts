// A vhost-user network backend (QEMU docs/interop/vhost-user.rst): QEMU (the
// front-end) hands over guest memory (memfds), ring addresses and eventfds;
// the NetDevice serves the rings on a TAP. One connection at a time; when
// the front-end goes, everything it handed over is closed and unmapped and
// the next one may connect.
import { EventEmitter } from 'node:events';
import { rmSync } from 'node:fs';

import { native, type NativePoller } from '../../host/binding.js';
import type { Tap } from '../../tap/tap.js';
import { NetDevice } from '../../net/device.js';
import type { NetFeatureSwitches } from '../../net/features.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_RING_PACKED,
  bit,
  hasFeature,
} from '../../virtio/constants.js';
import { GuestMemory } from '../../virtio/guest-memory.js';
import type { PcapWriter } from '../../net/pcap.js';
import type { Tracer } from '../../trace/trace.js';
import { QueueConfigError } from '../../virtio/queue.js';
import {
  encode,
  ExactReader,
  ProtocolFeature,
  Req,
  reqName,
  statePayload,
  u64Payload,
  VHOST_MEMORY_MAX_NREGIONS,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  VhostUserError,
  type Message,
} from './protocol.js';

export interface VhostUserBackendOptions {
  socketPath: string;
  tap: Tap;
  /** Listen for the front-end (default) or connect to one that listens. */
  client?: boolean;
  mac?: string;
  features?: NetFeatureSwitches;
  /** Lines for people: connections, refusals. */
  log?: (line: string) => void;
  /** Trace every device step (see Tracer). */
  trace?: Tracer;
  /** Write every frame crossing the device to this capture. */
  capture?: PcapWriter;
  /** The device's transmit timer (NetDeviceOptions.txTimerMs); default 0, off. */
  txTimerMs?: number;
}

interface Ring {
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

interface Mapped {
  gpa: bigint;
  size: bigint;
  userspace: bigint;
  /** Where the region starts in the mapping (mmap_offset). */
  offset: number;
  buffer: ArrayBuffer;
  fd: number;
}

const PROTOCOL_FEATURES = bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK);

/** Emits 'connect', 'disconnect', 'error' (tier 3). */
export class VhostUserBackend extends EventEmitter {
  readonly device: NetDevice;
  private readonly n = native();
  private readonly o: VhostUserBackendOptions;
  private readonly log: (line: string) => void;
  private listenFd = -1;
  private listenPoller: NativePoller | null = null;
  private connFd = -1;
  private connPoller: NativePoller | null = null;
  private reader = new ExactReader();
  private rings: Ring[] = [];
  private memory: Mapped[] = [];
  private guest: GuestMemory | null = null;
  private acked = 0n;
  /** VHOST_USER_F_PROTOCOL_FEATURES was acked: rings then start disabled. */
  private protocolAcked = false;
  private protocolFeatures = 0n;
  private closed = false;

  constructor(o: VhostUserBackendOptions) {
    super();
    this.o = o;
    this.log = o.log ?? (() => {});
    this.device = new NetDevice({
      tap: o.tap,
      ...(o.mac !== undefined ? { mac: o.mac } : {}),
      features: { ...o.features, GUEST_ANNOUNCE: false },
      // The front-end (QEMU) runs the control queue and the config space; the back-end serves the data queues.
      controlElsewhere: true,
      ...(o.trace !== undefined ? { trace: o.trace } : {}),
      ...(o.capture !== undefined ? { capture: o.capture } : {}),
      ...(o.txTimerMs !== undefined ? { txTimerMs: o.txTimerMs } : {}),
      interrupt: (kind, q) => {
        const fd = this.rings[q]?.callFd ?? -1;
        if (kind === 'vring' && fd >= 0) this.n.eventfdWrite(fd);
      },
    });
    this.device.on('error', (e: Error) => this.emit('error', e));
    this.resetRings();
  }

  /** Starts listening (or connecting, with client: true). */
  start(): void {
    if (this.o.client === true) {
      this.connect();
      return;
    }
    rmSync(this.o.socketPath, { force: true });
    const fd = this.n.unixListen(this.o.socketPath);
    if (fd < 0) throw new VhostUserError(`cannot listen on ${this.o.socketPath}: errno ${-fd}`);
    this.listenFd = fd;
    this.listenPoller = new this.n.Poller(fd, () => this.accept());
    this.listenPoller.start(1);
    this.log(`listening on ${this.o.socketPath}`);
  }

  /** Stops serving: closes the connection, fds and mappings, and removes the socket file. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.disconnect('closing');
    this.listenPoller?.close();
    this.listenPoller = null;
    if (this.listenFd >= 0) {
      this.n.close(this.listenFd);
      this.listenFd = -1;
      rmSync(this.o.socketPath, { force: true });
    }
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.device.close();
  }

  private reconnectTimer: NodeJS.Timeout | null = null;

  private connect(): void {
    if (this.closed) return;
    const fd = this.n.unixConnect(this.o.socketPath);
    if (fd < 0) {
      // The front-end is not there (yet): try again shortly.
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        this.connect();
      }, 500);
      return;
    }
    this.attach(fd);
  }

  private accept(): void {
    for (;;) {
      const fd = this.n.unixAccept(this.listenFd);
      if (fd < 0) return;
      if (this.connFd >= 0) {
        this.log('refusing a second front-end while one is connected');
        this.n.close(fd);
        continue;
      }
      this.attach(fd);
    }
  }

  private attach(fd: number): void {
    this.connFd = fd;
    this.reader = new ExactReader();
    this.connPoller = new this.n.Poller(fd, () => this.onReadable());
    this.connPoller.start(1);
    this.log('front-end connected');
    this.emit('connect');
  }

  private onReadable(): void {
    if (this.connFd < 0) return;
    const fd = this.connFd;
    let outcome: string;
    try {
      outcome = this.reader.read(
        (into, fds) => this.n.recvWithFds(fd, into, fds),
        (m) => this.handle(m),
        () => this.connFd !== fd, // a message may end the connection
      );
    } catch (err) {
      if (!(err instanceof VhostUserError)) throw err;
      this.disconnect(err.message);
      return;
    }
    if (this.connFd !== fd) return;
    if (outcome === 'closed') this.disconnect('front-end closed the connection');
    else if (outcome !== 'again') this.disconnect(outcome);
  }

  private handle(m: Message): void {
    let ack = 0n;
    try {
      const reply = this.dispatch(m);
      if (reply !== null) {
        this.reply(m, reply);
        for (const fd of m.fds) this.n.close(fd);
        return;
      }
    } catch (err) {
      if (!(err instanceof VhostUserError || err instanceof QueueConfigError)) throw err;
      this.log(`refused ${reqName(m.request)}: ${err.message}`);
      ack = 1n;
      for (const fd of m.fds) this.n.close(fd);
      if (!this.wantsAck(m)) {
        // Nowhere to say no: the front-end would go on believing it worked.
        this.disconnect(`${reqName(m.request)}: ${err.message}`);
        return;
      }
    }
    if (this.wantsAck(m)) this.reply(m, u64Payload(ack));
  }

  private wantsAck(m: Message): boolean {
    return (m.flags & VHOST_USER_NEED_REPLY_MASK) !== 0 && hasFeature(this.protocolFeatures, ProtocolFeature.REPLY_ACK);
  }

  private reply(m: Message, payload: Uint8Array): void {
    if (this.connFd < 0) return;
    const rc = this.n.sendWithFds(this.connFd, encode(m.request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, payload));
    if (rc < 0) this.disconnect(`reply failed: errno ${-rc}`);
  }

  // Returns a reply payload, or null when the request has no reply.
  private dispatch(m: Message): Uint8Array | null {
    const p = m.payload;
    const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
    const need = (bytes: number) => {
      if (p.length < bytes) throw new VhostUserError(`${reqName(m.request)}: payload of ${p.length} bytes, needs ${bytes}`);
    };
    const ring = (i: number): Ring => {
      const r = this.rings[i];
      if (r === undefined) throw new VhostUserError(`${reqName(m.request)}: ring ${i} out of range (0 to ${this.rings.length - 1})`);
      return r;
    };
    const noFds = () => {
      if (m.fds.length > 0) throw new VhostUserError(`${reqName(m.request)} takes no fds, got ${m.fds.length}`);
    };
    switch (m.request) {
      case Req.GET_FEATURES:
        noFds();
        return u64Payload(this.device.deviceFeatures | bit(VHOST_USER_F_PROTOCOL_FEATURES));
      case Req.SET_FEATURES: {
        noFds();
        need(8);
        const all = dv.getBigUint64(0, true);
        const f = all & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
        if ((f & ~this.device.deviceFeatures) !== 0n) throw new VhostUserError(`features 0x${f.toString(16)} include some never offered`);
        this.acked = f;
        this.protocolAcked = hasFeature(all, VHOST_USER_F_PROTOCOL_FEATURES);
        return null;
      }
      case Req.GET_PROTOCOL_FEATURES:
        noFds();
        return u64Payload(PROTOCOL_FEATURES);
      case Req.SET_PROTOCOL_FEATURES:
        noFds();
        need(8);
        this.protocolFeatures = dv.getBigUint64(0, true) & PROTOCOL_FEATURES;
        return null;
      case Req.GET_QUEUE_NUM:
        noFds();
        return u64Payload(BigInt(this.device.pairs * 2));
      case Req.SET_OWNER:
        noFds();
        return null;
      case Req.RESET_OWNER:
        noFds();
        this.stopDevice();
        this.resetRings();
        return null;
      case Req.SET_MEM_TABLE:
        this.setMemTable(dv, m.fds);
        return null;
      case Req.SET_VRING_NUM: {
        noFds();
        need(8);
        const r = ring(dv.getUint32(0, true));
        const num = dv.getUint32(4, true);
        if (num === 0 || num > 32768) throw new VhostUserError(`ring size ${num} out of range (1 to 32768)`);
        r.num = num;
        return null;
      }
      case Req.SET_VRING_ADDR: {
        noFds();
        need(40);
        const r = ring(dv.getUint32(0, true));
        r.desc = dv.getBigUint64(8, true);
        r.used = dv.getBigUint64(16, true);
        r.avail = dv.getBigUint64(24, true);
        r.hasAddr = true;
        return null;
      }
      case Req.SET_VRING_BASE: {
        noFds();
        need(8);
        ring(dv.getUint32(0, true)).base = dv.getUint32(4, true);
        return null;
      }
      case Req.GET_VRING_BASE: {
        noFds();
        need(8);
        const index = dv.getUint32(0, true);
        const r = ring(index);
        // Stops the ring: the device stops serving, and this ring's position goes back.
        this.stopDevice();
        this.closeFd(r, 'kickFd');
        r.started = false;
        return statePayload(index, r.base);
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        need(8);
        const v = Number(dv.getBigUint64(0, true) & 0xffffn);
        const r = ring(v & VHOST_USER_VRING_IDX_MASK);
        const noFd = (v & VHOST_USER_VRING_NOFD_MASK) !== 0;
        if (!noFd && m.fds.length !== 1) throw new VhostUserError(`${reqName(m.request)}: expected one fd, got ${m.fds.length}`);
        if (noFd && m.fds.length !== 0) throw new VhostUserError(`${reqName(m.request)}: no fd announced, got ${m.fds.length}`);
        const field = m.request === Req.SET_VRING_KICK ? 'kickFd' : m.request === Req.SET_VRING_CALL ? 'callFd' : 'errFd';
        this.closeFd(r, field);
        r[field] = noFd ? -1 : m.fds[0]!;
        if (m.request === Req.SET_VRING_KICK) {
          // Without protocol features a ring is enabled as it starts (vhost-user.rst, "Starting and stopping rings").
          if (!this.protocolAcked) r.enabled = true;
          this.maybeStart();
        }
        return null;
      }
      case Req.SET_VRING_ENABLE: {
        noFds();
        need(8);
        const r = ring(dv.getUint32(0, true));
        r.enabled = dv.getUint32(4, true) === 1;
        this.maybeStart();
        return null;
      }
      case Req.SET_LOG_BASE:
      case Req.SET_LOG_FD:
        throw new VhostUserError('dirty logging (live migration) is not supported');
      default:
        throw new VhostUserError(`unknown ${reqName(m.request)}`);
    }
  }

  private setMemTable(dv: DataView, fds: number[]): void {
    if (dv.byteLength < 8) throw new VhostUserError('SET_MEM_TABLE: no region count');
    const n = dv.getUint32(0, true);
    if (n === 0 || n > VHOST_MEMORY_MAX_NREGIONS) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions (1 to ${VHOST_MEMORY_MAX_NREGIONS})`);
    if (dv.byteLength < 8 + 32 * n) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions need ${8 + 32 * n} bytes, got ${dv.byteLength}`);
    if (fds.length !== n) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions but ${fds.length} fds`);
    const mapped: Mapped[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const o = 8 + 32 * i;
        const gpa = dv.getBigUint64(o, true);
        const size = dv.getBigUint64(o + 8, true);
        const userspace = dv.getBigUint64(o + 16, true);
        const offset = dv.getBigUint64(o + 24, true);
        if (size === 0n || size > 1n << 40n || offset > 1n << 40n || gpa + size > 1n << 52n) {
          throw new VhostUserError(`SET_MEM_TABLE: region ${i} (gpa 0x${gpa.toString(16)}, size 0x${size.toString(16)}) out of range`);
        }
        const ab = this.n.mmapShared(fds[i]!, Number(size + offset), 0);
        if (typeof ab === 'number') throw new VhostUserError(`SET_MEM_TABLE: mapping region ${i} failed: errno ${-ab}`);
        // The whole file is mapped from 0; the region starts at mmap_offset in it.
        mapped.push({ gpa, size, userspace, offset: Number(offset), buffer: ab, fd: fds[i]! });
      }
      const guest = new GuestMemory(mapped.map((r) => ({ gpa: Number(r.gpa), bytes: new Uint8Array(r.buffer, r.offset, Number(r.size)) })));
      // A new table replaces the old: stop, unmap what it replaces, go on with the new.
      const wasRunning = this.device.running;
      this.stopDevice();
      this.unmapAll();
      this.memory = mapped;
      this.guest = guest;
      if (wasRunning) this.maybeStart();
    } catch (err) {
      for (const r of mapped) this.n.unmap(r.buffer);
      for (const fd of fds) this.n.close(fd);
      throw err;
    }
  }

  /** A front-end virtual address to a guest-physical one, through the memory table. */
  private translate(va: bigint, len: number): number {
    for (const r of this.memory) {
      if (va >= r.userspace && va + BigInt(len) <= r.userspace + r.size) return Number(r.gpa + (va - r.userspace));
    }
    throw new VhostUserError(`ring address 0x${va.toString(16)} (${len} bytes) is in no memory region`);
  }

  // Starts the device once the first pair's rings are all set and enabled,
  // and each further pair when its rings are (the guest asked for more pairs).
  private maybeStart(): void {
    if (this.guest === null) return;
    const ready = (r: Ring | undefined) => r !== undefined && r.num > 0 && r.hasAddr && r.kickFd >= 0 && r.enabled;
    if (this.device.running) {
      this.startLatePairs(ready);
      return;
    }
    if (!ready(this.rings[0]) || !ready(this.rings[1])) return;
    const dev = this.device;
    dev.setStatus(0);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    dev.setDriverFeatures(this.acked);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    if ((dev.status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) throw new VhostUserError(`the device refused features 0x${this.acked.toString(16)}`);
    const packed = hasFeature(this.acked, VIRTIO_F_RING_PACKED);
    // Pair 0 now; pairs whose rings are enabled already follow once the device runs.
    this.startRing(0, packed);
    this.startRing(1, packed);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    this.log(`device started: ${this.rings.filter((r) => r.started).length} rings, ${packed ? 'packed' : 'split'}`);
    this.startLatePairs(ready);
  }

  private startRing(i: number, packed: boolean): void {
    const r = this.rings[i]!;
    const dev = this.device;
    const addresses = {
      size: r.num,
      desc: this.translate(r.desc, 16 * r.num),
      driver: this.translate(r.avail, packed ? 4 : 6 + 2 * r.num),
      device: this.translate(r.used, packed ? 4 : 6 + 8 * r.num),
    };
    const q = dev.activateQueue(i, this.guest!, addresses);
    q.setBase(r.base);
    r.started = true;
    r.kickPoller = new this.n.Poller(r.kickFd, () => {
      if (this.n.eventfdRead(r.kickFd) > 0 && dev.running) dev.kick(i);
    });
    r.kickPoller.start(1);
  }

  // Pairs beyond the first start when both their rings are ready; the pairs in
  // use are those up to the last one whose rings are enabled.
  private startLatePairs(ready: (r: Ring | undefined) => boolean): void {
    const packed = hasFeature(this.acked, VIRTIO_F_RING_PACKED);
    let inUse = 1;
    for (let p = 1; p < this.device.pairs; p++) {
      const rx = this.rings[2 * p];
      const tx = this.rings[2 * p + 1];
      if (rx === undefined || tx === undefined) break;
      if (!rx.started && !tx.started && ready(rx) && ready(tx)) {
        this.startRing(2 * p, packed);
        this.startRing(2 * p + 1, packed);
        this.device.servePair(p);
        this.log(`queue pair ${p} started`);
      }
      if (rx.started && tx.started && rx.enabled && tx.enabled) inUse = p + 1;
    }
    if (this.device.activePairs !== inUse) this.device.useQueuePairs(inUse);
  }

  // Stops serving, keeping each ring's position for GET_VRING_BASE.
  private stopDevice(): void {
    const dev = this.device;
    this.rings.forEach((r, i) => {
      const q = dev.queues[i];
      if (r.started && q) {
        r.base = q.getBase();
        this.log(`ring ${i} stopped: ${q.stats.chains} chains`);
      }
      r.kickPoller?.close();
      r.kickPoller = null;
      r.started = false;
    });
    if (dev.status !== 0) dev.setStatus(0);
  }

  private closeFd(r: Ring, field: 'kickFd' | 'callFd' | 'errFd'): void {
    if (field === 'kickFd') {
      r.kickPoller?.close();
      r.kickPoller = null;
    }
    if (r[field] >= 0) this.n.close(r[field]);
    r[field] = -1;
  }

  private resetRings(): void {
    for (const r of this.rings) {
      this.closeFd(r, 'kickFd');
      this.closeFd(r, 'callFd');
      this.closeFd(r, 'errFd');
    }
    this.rings = Array.from({ length: this.device.pairs * 2 }, () => ({
      num: 0,
      desc: 0n,
      used: 0n,
      avail: 0n,
      hasAddr: false,
      base: 0,
      kickFd: -1,
      callFd: -1,
      errFd: -1,
      kickPoller: null,
      enabled: false,
      started: false,
    }));
    this.acked = 0n;
    this.protocolAcked = false;
    this.protocolFeatures = 0n;
  }

  private unmapAll(): void {
    this.guest?.unregisterIo();
    for (const r of this.memory) {
      this.n.unmap(r.buffer);
      this.n.close(r.fd);
    }
    this.memory = [];
    this.guest = null;
  }

  private disconnect(why: string): void {
    if (this.connFd < 0) return;
    this.log(`front-end gone: ${why}`);
    this.stopDevice();
    this.resetRings();
    this.unmapAll();
    for (const fd of this.reader.takeFds()) this.n.close(fd);
    this.connPoller?.close();
    this.connPoller = null;
    this.n.close(this.connFd);
    this.connFd = -1;
    this.emit('disconnect', why);
    if (this.o.client === true && !this.closed) this.connect(); // reconnect to a front-end that listens
  }
}
