// A virtio-net driver in TypeScript (the guest side): device initialisation
// (VIRTIO 1.2 §3.1.1), receive buffers, transmit, the control queue. What the
// demo, the tests and the benches use in place of a guest kernel.
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  hasFeature,
} from '../virtio/constants.js';
import { GuestMemory } from '../virtio/guest-memory.js';
import type { QueueAddresses } from '../virtio/queue.js';
import {
  BIG_RX_BUFFER,
  NET_HDR_SIZE,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_GUEST_USO4,
  VIRTIO_NET_F_GUEST_USO6,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
} from '../net/constants.js';
import { readNetHeader, writeNetHeader, type NetHeader } from '../net/net-header.js';
import type { DriverQueue } from './driver-queue.js';
import { GuestAllocator, packedLayout, splitLayout } from './layout.js';
import { PackedDriver } from './packed-driver.js';
import { RxBuffers } from './rx-buffers.js';
import { SplitDriver } from './split-driver.js';

/** What the driver needs of a device: the transport-independent operations. */
export interface VirtioDeviceHandle {
  readonly deviceFeatures: bigint;
  readonly status: number;
  setStatus(value: number): void;
  setDriverFeatures(features: bigint): void;
  activateQueue(index: number, mem: GuestMemory, addresses: QueueAddresses): unknown;
  kick(index: number): void;
  readConfig(offset: number, size: number): number;
}

export class NetDriverError extends Error {
  override readonly name = 'NetDriverError';
  readonly code = 'ERR_VIRTIO_NET_DRIVER';
}

export interface NetDriverOptions {
  /** Features to ask for (a subset is negotiated); default everything offered. */
  features?: bigint;
  queueSize?: number;
  /** Queue pairs to use (needs MQ for more than 1). */
  pairs?: number;
  /**
   * Bytes per receive buffer; with MRG_RXBUF a page, 4096 (the largest Linux
   * makes them when frames are large: a 64 KB frame takes 16 buffers, not
   * 33 of 2048), else what §5.1.6.3.1 asks.
   */
  rxBufferSize?: number;
  /** Share guest memory (SharedArrayBuffer), for device queues in worker threads. */
  shared?: boolean;
  /** Copy each received frame out for onFrame (default); false only counts them (benchmarks). */
  copyFrames?: boolean;
  /** The guest's memory (a VMM's RAM); default a fresh one sized for the queues. */
  memory?: GuestMemory;
}

export interface ReceivedFrame {
  header: NetHeader;
  /** A copy of the frame, header excluded. */
  frame: Uint8Array;
  pair: number;
}

interface TxSlot {
  addr: number;
  size: number;
}

interface PairQueues {
  rx: DriverQueue;
  tx: DriverQueue;
  rxBufs: RxBuffers;
  txSlots: TxSlot[];
  txFree: number[];
}

export class NetDriver {
  readonly mem: GuestMemory;
  features = 0n;
  readonly stats = { txFrames: 0, txFull: 0, rxFrames: 0, rxBytes: 0, interrupts: 0, configInterrupts: 0 };
  onFrame: ((f: ReceivedFrame) => void) | null = null;
  onConfigChange: (() => void) | null = null;
  private dev: VirtioDeviceHandle;
  private readonly o: Required<Omit<NetDriverOptions, 'features' | 'rxBufferSize' | 'memory'>> & Pick<NetDriverOptions, 'features' | 'rxBufferSize'>;
  private alloc: GuestAllocator;
  private readonly queues: PairQueues[] = [];
  private ctrl: DriverQueue | null = null;
  private ctrlBuf = 0;
  private rxBufferSize = 0;
  private pollScheduled = false;
  private polling = false;
  private isMergeable = false;
  private readonly received: ReceivedFrame[] = [];

  constructor(device: VirtioDeviceHandle, options: NetDriverOptions = {}) {
    this.dev = device;
    const { memory: _memory, ...rest } = options;
    this.o = { queueSize: 256, pairs: 1, shared: false, copyFrames: true, ...rest };
    const size = this.o.queueSize;
    // Rings, receive buffers at their largest, transmit slots, a big slot per queue entry... sized generously.
    const perPair = 2 * (16 * size + 8 * size + 64) + size * BIG_RX_BUFFER + size * 2048 + 4 * 65600;
    this.mem = options.memory ?? GuestMemory.create(this.o.pairs * perPair + (1 << 20), { shared: this.o.shared });
    this.alloc = new GuestAllocator(0, this.mem.regions[0]!.size);
  }

  /** §3.1.1: reset, acknowledge, negotiate, set up queues, DRIVER_OK. */
  start(): void {
    const d = this.dev;
    // A start is also a restart (after a reset): rings and buffers are laid out afresh.
    this.queues.length = 0;
    this.ctrl = null;
    this.alloc = new GuestAllocator(0, this.mem.regions[0]!.size);
    this.mem.regions[0]!.bytes.fill(0);
    d.setStatus(0);
    d.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    d.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const want = this.o.features ?? d.deviceFeatures;
    let f = want & d.deviceFeatures;
    if (this.o.pairs > 1 && !hasFeature(f, VIRTIO_NET_F_MQ)) throw new NetDriverError(`${this.o.pairs} queue pairs need VIRTIO_NET_F_MQ`);
    if (this.o.pairs === 1) f &= ~(1n << BigInt(VIRTIO_NET_F_MQ));
    d.setDriverFeatures(f);
    d.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    if ((d.status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) throw new NetDriverError('the device refused the features (FEATURES_OK did not stick)');
    this.features = f;
    this.isMergeable = hasFeature(f, VIRTIO_NET_F_MRG_RXBUF);
    const gso = [VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_GUEST_USO4, VIRTIO_NET_F_GUEST_USO6].some((b) => hasFeature(f, b));
    const mtu = this.dev.readConfig(10, 2) || 1500;
    this.rxBufferSize = this.o.rxBufferSize ?? (this.mergeable ? 4096 : gso ? BIG_RX_BUFFER : NET_HDR_SIZE + 14 + 4 + mtu);
    for (let p = 0; p < this.o.pairs; p++) {
      const rx = this.makeQueue(2 * p);
      const tx = this.makeQueue(2 * p + 1);
      const size = this.o.queueSize;
      const rxBufs = new RxBuffers(this.alloc, size, this.rxBufferSize);
      const txSlots: TxSlot[] = Array.from({ length: size }, () => ({ addr: this.alloc.alloc(2048, 64), size: 2048 }));
      for (let i = 0; i < 4; i++) txSlots.push({ addr: this.alloc.alloc(NET_HDR_SIZE + 65550, 64), size: NET_HDR_SIZE + 65550 });
      this.queues.push({ rx, tx, rxBufs, txSlots, txFree: txSlots.map((_, i) => txSlots.length - 1 - i) });
    }
    if (hasFeature(f, VIRTIO_NET_F_CTRL_VQ)) {
      this.ctrl = this.makeQueue(2 * this.o.pairs, 16, this.ctrlIndex);
      this.ctrlBuf = this.alloc.alloc(4096, 64);
    }
    d.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    for (const q of this.queues) q.rxBufs.post(q.rx);
  }

  /**
   * Goes on with another device that took this one's state over (a restored
   * snapshot, NetDevice.restore): rings, buffers and tokens stay as they are;
   * kicks and config reads go to `device` from now on.
   */
  attach(device: VirtioDeviceHandle): void {
    this.dev = device;
  }

  /** VIRTIO_NET_F_MRG_RXBUF was negotiated (set at start). */
  get mergeable(): boolean {
    return this.isMergeable;
  }

  get ctrlIndex(): number {
    return 2 * this.o.pairs;
  }

  /** The MAC in config space. */
  get mac(): Uint8Array {
    return Uint8Array.from({ length: 6 }, (_, i) => this.dev.readConfig(i, 1));
  }

  private makeQueue(index: number, size = this.o.queueSize, kickIndex = index): DriverQueue {
    const packed = hasFeature(this.features, VIRTIO_F_RING_PACKED);
    const span = packed ? packedLayout(0, size).end : splitLayout(0, size).end;
    const base = this.alloc.alloc(span, 64);
    const l = packed ? packedLayout(base, size) : splitLayout(base, size);
    const addresses: QueueAddresses = { size, desc: l.desc, driver: l.driver, device: l.device };
    const indirect = hasFeature(this.features, VIRTIO_F_INDIRECT_DESC);
    const opts = {
      eventIdx: hasFeature(this.features, VIRTIO_F_EVENT_IDX),
      indirect,
      inOrder: hasFeature(this.features, VIRTIO_F_IN_ORDER),
      ...(indirect ? { indirectArea: { addr: this.alloc.alloc(size * 4 * 16, 16), entries: 4 } } : {}),
      onKick: () => this.dev.kick(kickIndex),
    };
    const q = packed ? new PackedDriver(this.mem, addresses, opts) : new SplitDriver(this.mem, addresses, opts);
    this.dev.activateQueue(index, this.mem, addresses);
    q.enableInterrupts();
    return q;
  }

  /** Sends one frame (Ethernet, header excluded) with the given header fields. False when the queue is full. */
  send(frame: Uint8Array, header: Partial<NetHeader> = {}, pair = 0): boolean {
    const q = this.pairQueues(pair);
    this.reapTx(q);
    const need = NET_HDR_SIZE + frame.length;
    const slotIdx = q.txFree.findIndex((i) => q.txSlots[i]!.size >= need);
    if (slotIdx < 0 || q.tx.numFree < 2) {
      this.stats.txFull++;
      return false;
    }
    const slot = q.txFree.splice(slotIdx, 1)[0]!;
    const s = q.txSlots[slot]!;
    const v = this.mem.view(s.addr, need);
    writeNetHeader(new DataView(v.buffer, v.byteOffset, NET_HDR_SIZE), 0, header);
    v.set(frame, NET_HDR_SIZE);
    // Header and frame in separate descriptors, as Linux does.
    q.tx.beginChain();
    q.tx.addSegment(s.addr, NET_HDR_SIZE, false);
    q.tx.addSegment(s.addr + NET_HDR_SIZE, frame.length, false);
    q.tx.commitChain(slot);
    q.tx.publish();
    this.stats.txFrames++;
    return true;
  }

  private reapTx(q: PairQueues): void {
    for (let t = q.tx.popUsed(); t >= 0; t = q.tx.popUsed()) q.txFree.push(t);
  }

  /** Wire this as the device's interrupt callback. */
  interrupt(kind: 'vring' | 'config', _queue: number): void {
    if (kind === 'config') {
      this.stats.configInterrupts++;
      this.onConfigChange?.();
      return;
    }
    this.stats.interrupts++;
    // An interrupt raised while polling (re-posting buffers kicks the device,
    // which may fill them at once) needs no new poll: the running one checks
    // again before it stops. Scheduling one would chain microtasks forever.
    if (this.polling || this.pollScheduled) return;
    this.pollScheduled = true;
    queueMicrotask(() => {
      this.pollScheduled = false;
      this.poll();
    });
  }

  /** Reaps every queue: frames go to onFrame (or the received list); buffers are posted again. */
  poll(budget = 256): number {
    this.polling = true;
    try {
      return this.pollQueues(budget);
    } finally {
      this.polling = false;
    }
  }

  private pollQueues(budget: number): number {
    let n = 0;
    let more = false;
    this.queues.forEach((q, pair) => {
      // Reap, then ask for the next interrupt; buffers used meanwhile are reaped
      // too (the race every driver closes this way). Past the budget, yield to
      // the event loop and poll again, as Linux's NAPI does: re-posting buffers
      // kicks the device, which may fill them at once, and a loop that never
      // yields would starve everything else.
      let done = 0;
      for (;;) {
        this.reapTx(q);
        done += this.reapRx(q, pair);
        q.rxBufs.post(q.rx);
        if (done >= budget) {
          more = true;
          break;
        }
        if (!q.rx.enableInterrupts() && !q.tx.enableInterrupts()) break;
      }
      n += done;
    });
    if (more && !this.pollScheduled) {
      this.pollScheduled = true;
      setImmediate(() => {
        this.pollScheduled = false;
        this.poll();
      });
    }
    return n;
  }

  private reapRx(q: PairQueues, pair: number): number {
    let n = 0;
    if (!this.o.copyFrames) return this.countRx(q);
    for (let tok = q.rx.popUsed(); tok >= 0; tok = q.rx.popUsed()) {
      const len = q.rx.usedLen;
      const first = this.mem.view(q.rxBufs.addr[tok]!, this.rxBufferSize);
      const header = readNetHeader(new DataView(first.buffer, first.byteOffset, NET_HDR_SIZE), 0);
      const parts: Uint8Array[] = [first.slice(NET_HDR_SIZE, Math.max(NET_HDR_SIZE, len))];
      q.rxBufs.release(tok);
      // §5.1.6.4: with MRG_RXBUF the frame continues in num_buffers - 1 more buffers.
      const more = this.mergeable ? header.numBuffers - 1 : 0;
      for (let k = 0; k < more; k++) {
        const t = q.rx.popUsed();
        if (t < 0) throw new NetDriverError(`num_buffers ${header.numBuffers} but only ${k + 1} used buffers`);
        parts.push(this.mem.view(q.rxBufs.addr[t]!, q.rx.usedLen).slice());
        q.rxBufs.release(t);
      }
      const total = parts.reduce((a, p) => a + p.length, 0);
      const frame = new Uint8Array(total);
      let o = 0;
      for (const p of parts) {
        frame.set(p, o);
        o += p.length;
      }
      const f: ReceivedFrame = { header, frame, pair };
      this.stats.rxFrames++;
      this.stats.rxBytes += total;
      if (this.onFrame !== null) this.onFrame(f);
      else this.received.push(f);
      n++;
    }
    return n;
  }

  // Counts received frames without copying them (copyFrames: false).
  private countRx(q: PairQueues): number {
    let n = 0;
    for (let tok = q.rx.popUsed(); tok >= 0; tok = q.rx.popUsed()) {
      q.rxBufs.release(tok);
      this.stats.rxBytes += q.rx.usedLen;
      if (this.mergeable) {
        // num_buffers (§5.1.6.4), read in place.
        const more = this.mem.u16le(q.rxBufs.addr[tok]! + 10) - 1;
        for (let k = 0; k < more; k++) {
          const t = q.rx.popUsed();
          if (t < 0) break;
          q.rxBufs.release(t);
          this.stats.rxBytes += q.rx.usedLen;
        }
      }
      this.stats.rxFrames++;
      n++;
    }
    return n;
  }

  /** The transmit queue of a pair, for callers that lay out their own chains (benchmarks). */
  txQueue(pair = 0): DriverQueue {
    return this.pairQueues(pair).tx;
  }

  /** The receive queue of a pair, for callers that watch its buffers (tests). */
  rxQueue(pair = 0): DriverQueue {
    return this.pairQueues(pair).rx;
  }

  private pairQueues(pair: number): PairQueues {
    const q = this.queues[pair];
    if (q === undefined) throw new NetDriverError(`no queue pair ${pair}`);
    return q;
  }

  /** Guest memory of `len` bytes, for buffers of one's own. */
  allocate(len: number, align = 64): number {
    return this.alloc.alloc(len, align);
  }

  /** Frames received while no onFrame was set. */
  takeReceived(): ReceivedFrame[] {
    return this.received.splice(0);
  }

  /** Sends a control command (§5.1.6.5) and returns the ack (0 OK, 1 ERR). */
  control(cls: number, cmd: number, data: Uint8Array = new Uint8Array(0)): number {
    const q = this.ctrl;
    if (q === null) throw new NetDriverError('the control queue was not negotiated (VIRTIO_NET_F_CTRL_VQ)');
    const v = this.mem.view(this.ctrlBuf, 2 + data.length + 1);
    v[0] = cls;
    v[1] = cmd;
    v.set(data, 2);
    v[2 + data.length] = 0xff;
    q.beginChain();
    q.addSegment(this.ctrlBuf, 2, false);
    if (data.length > 0) q.addSegment(this.ctrlBuf + 2, data.length, false);
    q.addSegment(this.ctrlBuf + 2 + data.length, 1, true);
    q.commitChain(1);
    q.publish(); // the device handles it on the kick
    for (let tok = q.popUsed(); tok >= 0; tok = q.popUsed()) void tok;
    return v[2 + data.length]!;
  }
}
