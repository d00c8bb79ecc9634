// virtio-mmio, version 2 (VIRTIO 1.2 §4.2): the register model a TypeScript
// VMM calls on its MMIO exits. Control registers are 32 bits wide and
// aligned (§4.2.2.2); other accesses are refused (reads 0, writes ignored)
// and counted. Device-specific configuration starts at 0x100.
import type { GuestMemory } from '../virtio/guest-memory.js';
import { QueueConfigError, type QueueAddresses } from '../virtio/queue.js';
import type { VirtioDeviceCore } from '../virtio/device.js';
import { maskText, SnapshotError } from '../virtio/snapshot-fields.js';
import { MMIO_SNAPSHOT_FORMAT, MMIO_SNAPSHOT_VERSION, readMmioSnapshot, type MmioQueueRegs, type MmioSnapshot } from './mmio-snapshot.js';

export const MMIO = {
  MagicValue: 0x000,
  Version: 0x004,
  DeviceID: 0x008,
  VendorID: 0x00c,
  DeviceFeatures: 0x010,
  DeviceFeaturesSel: 0x014,
  DriverFeatures: 0x020,
  DriverFeaturesSel: 0x024,
  QueueSel: 0x030,
  QueueNumMax: 0x034,
  QueueNum: 0x038,
  QueueReady: 0x044,
  QueueNotify: 0x050,
  InterruptStatus: 0x060,
  InterruptACK: 0x064,
  Status: 0x070,
  QueueDescLow: 0x080,
  QueueDescHigh: 0x084,
  QueueDriverLow: 0x090,
  QueueDriverHigh: 0x094,
  QueueDeviceLow: 0x0a0,
  QueueDeviceHigh: 0x0a4,
  SHMSel: 0x0ac,
  SHMLenLow: 0x0b0,
  SHMLenHigh: 0x0b4,
  SHMBaseLow: 0x0b8,
  SHMBaseHigh: 0x0bc,
  ConfigGeneration: 0x0fc,
  Config: 0x100,
} as const;

/** "virt", little-endian (§4.2.2). */
export const MMIO_MAGIC = 0x74726976;
export const VIRTIO_ID_NET = 1;
/** "VTAP" */
export const VIRTIO_TAP_VENDOR_ID = 0x50415456;
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;

/** A device the transport can front: the core plus its configuration space. */
export type MmioDevice = VirtioDeviceCore & {
  readConfig(offset: number, size: number): number;
  readonly deviceId?: number;
  /** The device's own snapshot (NetDevice.snapshot()), for MmioTransport.snapshot(). */
  snapshot?(): unknown;
};

export interface MmioOptions {
  /** The guest's RAM, where the driver puts its rings and buffers. */
  memory: GuestMemory;
  /** Largest queue size offered (QueueNumMax). Default 256. */
  queueNumMax?: number;
  /** The interrupt line: called with true when InterruptStatus becomes non-zero, false when it is acknowledged to 0. */
  interrupt: (asserted: boolean) => void;
}

type QueueRegs = MmioQueueRegs;

export class MmioTransport {
  /** Accesses refused: unaligned or not 32 bits wide on a control register, or beyond the config space. */
  invalidAccesses = 0;
  /** Queue set-ups refused (QueueReady written with a configuration the spec forbids). */
  refusedQueues = 0;
  private readonly dev: MmioDevice;
  private readonly mem: GuestMemory;
  private readonly numMax: number;
  private readonly line: (asserted: boolean) => void;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private queues: QueueRegs[];
  private interruptStatus = 0;
  private configGeneration = 0;

  constructor(device: MmioDevice, o: MmioOptions) {
    this.dev = device;
    this.mem = o.memory;
    this.numMax = o.queueNumMax ?? 256;
    this.line = o.interrupt;
    this.queues = this.freshQueues();
  }

  /**
   * The registers and the device's own snapshot, as JSON (docs/snapshot.md).
   * Throws SnapshotError, writing nothing, when the device cannot snapshot
   * itself or refuses to.
   */
  snapshot(): MmioSnapshot {
    if (typeof this.dev.snapshot !== 'function') throw new SnapshotError('ERR_SNAPSHOT_UNSUPPORTED', 'the device behind this transport has no snapshot()');
    const device = this.dev.snapshot();
    return {
      format: MMIO_SNAPSHOT_FORMAT,
      version: MMIO_SNAPSHOT_VERSION,
      queueNumMax: this.numMax,
      deviceFeaturesSel: this.deviceFeaturesSel,
      driverFeaturesSel: this.driverFeaturesSel,
      driverFeatures: maskText(this.driverFeatures),
      queueSel: this.queueSel,
      queues: this.queues.map((q) => ({ ...q })),
      interruptStatus: this.interruptStatus,
      configGeneration: this.configGeneration,
      invalidAccesses: this.invalidAccesses,
      refusedQueues: this.refusedQueues,
      device,
    };
  }

  /**
   * A transport that goes on from a snapshot (parsed, or JSON text) in front
   * of `device`, restored already from the snapshot's `device` part (paused,
   * so that no interrupt comes before the transport is there; resume it
   * after). The interrupt line is raised at once if InterruptStatus says so.
   * A malformed snapshot, or one whose ready queues are not the device's,
   * is refused with a SnapshotError naming the field.
   */
  static restore(snapshot: unknown, device: MmioDevice, o: Omit<MmioOptions, 'queueNumMax'>): MmioTransport {
    const s = readMmioSnapshot(snapshot, device.queues);
    const t = new MmioTransport(device, { ...o, queueNumMax: s.queueNumMax });
    t.deviceFeaturesSel = s.deviceFeaturesSel;
    t.driverFeaturesSel = s.driverFeaturesSel;
    t.driverFeatures = BigInt(s.driverFeatures);
    t.queueSel = s.queueSel;
    t.queues = s.queues.map((q) => ({ ...q }));
    t.interruptStatus = s.interruptStatus;
    t.configGeneration = s.configGeneration;
    t.invalidAccesses = s.invalidAccesses;
    t.refusedQueues = s.refusedQueues;
    if (t.interruptStatus !== 0) t.line(true);
    return t;
  }

  /**
   * What the device's interrupt callback should call: a used-buffer
   * notification or a configuration change (which also bumps ConfigGeneration).
   */
  notify(kind: 'vring' | 'config'): void {
    if (kind === 'config') this.configGeneration = (this.configGeneration + 1) >>> 0;
    const before = this.interruptStatus;
    this.interruptStatus |= kind === 'vring' ? VIRTIO_MMIO_INT_VRING : VIRTIO_MMIO_INT_CONFIG;
    if (before === 0) this.line(true);
  }

  /** An MMIO read of `size` bytes at `offset` from the device's base. */
  read(offset: number, size: number): number {
    if (offset >= MMIO.Config) {
      if (size !== 1 && size !== 2 && size !== 4) return this.invalid(0);
      return this.dev.readConfig(offset - MMIO.Config, size) >>> 0;
    }
    if (size !== 4 || offset % 4 !== 0) return this.invalid(0);
    const q = this.queues[this.queueSel];
    switch (offset) {
      case MMIO.MagicValue:
        return MMIO_MAGIC;
      case MMIO.Version:
        return 2;
      case MMIO.DeviceID:
        return this.dev.deviceId ?? VIRTIO_ID_NET;
      case MMIO.VendorID:
        return VIRTIO_TAP_VENDOR_ID;
      case MMIO.DeviceFeatures:
        return this.deviceFeaturesSel > 1 ? 0 : Number((this.dev.deviceFeatures >> BigInt(32 * this.deviceFeaturesSel)) & 0xffffffffn);
      case MMIO.QueueNumMax:
        return q === undefined ? 0 : this.numMax;
      case MMIO.QueueReady:
        return q?.ready === true ? 1 : 0;
      case MMIO.InterruptStatus:
        return this.interruptStatus;
      case MMIO.Status:
        return this.dev.status;
      case MMIO.SHMLenLow:
      case MMIO.SHMLenHigh:
        return 0xffffffff; // §4.2.2: no shared memory region with that id
      case MMIO.ConfigGeneration:
        return this.configGeneration;
      default:
        return 0; // write-only or reserved
    }
  }

  /** An MMIO write of `size` bytes of `value` at `offset`. */
  write(offset: number, size: number, value: number): void {
    if (offset >= MMIO.Config) {
      this.invalid(0); // the network device's configuration is read-only (§5.1.4)
      return;
    }
    if (size !== 4 || offset % 4 !== 0) {
      this.invalid(0);
      return;
    }
    const v = value >>> 0;
    const q = this.queues[this.queueSel];
    switch (offset) {
      case MMIO.DeviceFeaturesSel:
        this.deviceFeaturesSel = v;
        return;
      case MMIO.DriverFeaturesSel:
        this.driverFeaturesSel = v;
        return;
      case MMIO.DriverFeatures: {
        if (this.driverFeaturesSel > 1) return;
        const shift = BigInt(32 * this.driverFeaturesSel);
        this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(v) << shift);
        this.dev.setDriverFeatures(this.driverFeatures);
        return;
      }
      case MMIO.QueueSel:
        this.queueSel = v;
        return;
      case MMIO.QueueNum:
        if (q !== undefined && !q.ready) q.num = v;
        return;
      case MMIO.QueueDescLow:
      case MMIO.QueueDescHigh:
      case MMIO.QueueDriverLow:
      case MMIO.QueueDriverHigh:
      case MMIO.QueueDeviceLow:
      case MMIO.QueueDeviceHigh:
        if (q !== undefined && !q.ready) this.setAddress(q, offset, v);
        return;
      case MMIO.QueueReady:
        if (q !== undefined) this.setReady(q, v === 1);
        return;
      case MMIO.QueueNotify:
        // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index (§4.2.2).
        this.dev.kick(v & 0xffff);
        return;
      case MMIO.InterruptACK: {
        const before = this.interruptStatus;
        this.interruptStatus &= ~v;
        if (before !== 0 && this.interruptStatus === 0) this.line(false);
        return;
      }
      case MMIO.Status:
        if (v === 0) this.reset();
        else this.dev.setStatus(v);
        return;
      default:
        return; // read-only or reserved: ignored
    }
  }

  private setAddress(q: QueueRegs, offset: number, v: number): void {
    const high = (offset & 4) !== 0;
    const field = offset < MMIO.QueueDriverLow ? 'desc' : offset < MMIO.QueueDeviceLow ? 'driver' : 'device';
    const lo = q[field] % 0x1_0000_0000;
    const hi = Math.floor(q[field] / 0x1_0000_0000);
    q[field] = high ? v * 0x1_0000_0000 + lo : hi * 0x1_0000_0000 + v;
  }

  private setReady(q: QueueRegs, ready: boolean): void {
    if (!ready) {
      q.ready = false;
      return;
    }
    if (q.ready) return;
    if (q.num === 0 || q.num > this.numMax) {
      this.refusedQueues++;
      return;
    }
    const addresses: QueueAddresses = { size: q.num, desc: q.desc, driver: q.driver, device: q.device };
    try {
      this.dev.activateQueue(this.queueSel, this.mem, addresses);
      q.ready = true;
    } catch (err) {
      if (!(err instanceof QueueConfigError)) throw err;
      this.refusedQueues++; // QueueReady reads 0: the driver sees the refusal
    }
  }

  private reset(): void {
    this.dev.setStatus(0);
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.driverFeatures = 0n;
    this.queueSel = 0;
    this.queues = this.freshQueues();
    if (this.interruptStatus !== 0) {
      this.interruptStatus = 0;
      this.line(false);
    }
  }

  private freshQueues(): QueueRegs[] {
    return this.dev.queues.map(() => ({ num: 0, ready: false, desc: 0, driver: 0, device: 0 }));
  }

  private invalid(result: number): number {
    this.invalidAccesses++;
    return result;
  }
}
