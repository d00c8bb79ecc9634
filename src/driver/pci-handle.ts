// The guest driver's view of a virtio-pci device: what NetDriver needs, done
// only through configuration cycles and BAR accesses, in the order Linux's
// virtio_pci does them (VIRTIO 1.2 §4.1.5): size and place the BARs as
// firmware would, walk the capability list for the virtio structures, and,
// when asked, program MSI-X with a vector for configuration changes (0) and
// one per queue (queue + 1); otherwise the ISR says what an INTx meant.
import { COMMON, VIRTIO_MSI_NO_VECTOR } from '../transport/pci-common.js';
import { PCI_BAR0, PCI_CAPABILITY_LIST, PCI_COMMAND, PCI_STATUS, PCI_STATUS_CAP_LIST } from '../transport/pci-config.js';
import { PCI_CAP_ID_MSIX } from '../transport/pci-msix.js';
import {
  PCI_CAP_ID_VNDR,
  PCI_VENDOR_ID_REDHAT_QUMRANET,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_ISR_CONFIG,
  VIRTIO_PCI_ISR_QUEUE,
} from '../transport/pci.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import type { QueueAddresses } from '../virtio/queue.js';
import { NetDriverError, type VirtioDeviceHandle } from './net-driver.js';

/** Configuration cycles and bus accesses: a VMM's PCI host bridge, as the guest sees it. */
export interface PciBus {
  configRead(offset: number, size: number): number;
  configWrite(offset: number, size: number, value: number): void;
  read(space: 'io' | 'memory', address: number, size: number): number;
  write(space: 'io' | 'memory', address: number, size: number, value: number): void;
}

export interface PciHandleOptions {
  /** Where BARs are placed (firmware's job in a real machine). */
  ioBase?: number;
  memoryBase?: number;
  /** Program MSI-X (when the device has it) with messages to this address; data = vector. Default INTx. */
  msixAddress?: number;
}

interface Where {
  space: 'io' | 'memory';
  address: number;
}

/** The MSI-X message address Linux's x86 APIC uses; any address the VMM routes will do. */
export const MSI_ADDRESS_DEFAULT = 0xfee0_0000;

export class PciDeviceHandle implements VirtioDeviceHandle {
  /** MSI-X is in use: interrupts arrive as vectors (see vectorKind), not through the ISR. */
  readonly msix: boolean;
  private readonly bus: PciBus;
  private readonly bars: (Where & { size: number })[] = [];
  private common!: Where;
  private isr!: Where;
  private device: Where | null = null;
  private notifyBase!: Where;
  private notifyMult = 0;
  private readonly notifyAt = new Map<number, number>();
  private configVectorSet = false;

  constructor(bus: PciBus, o: PciHandleOptions = {}) {
    this.bus = bus;
    const vendor = bus.configRead(0x00, 2);
    const id = bus.configRead(0x02, 2);
    if (vendor !== PCI_VENDOR_ID_REDHAT_QUMRANET || id < 0x1040 || id > 0x107f) {
      throw new NetDriverError(`PCI function ${hex(vendor)}:${hex(id)} is not a modern virtio device (1af4:1040-107f)`);
    }
    this.placeBars(o.ioBase ?? 0xc000, o.memoryBase ?? 0xfe00_0000);
    const msixCap = this.walkCapabilities();
    this.msix = o.msixAddress !== undefined && msixCap > 0;
    if (this.msix) this.enableMsix(msixCap, o.msixAddress!);
  }

  // Size each BAR (write all ones, read the mask back), give it an aligned address, then turn decoding on.
  private placeBars(ioBase: number, memoryBase: number): void {
    let io = ioBase;
    let mem = memoryBase;
    for (let i = 0; i < 6; i++) {
      const reg = PCI_BAR0 + 4 * i;
      this.bus.configWrite(reg, 4, 0xffffffff);
      const probe = this.bus.configRead(reg, 4);
      if (probe === 0) continue;
      const space = (probe & 1) === 1 ? 'io' : 'memory';
      const size = (~(probe & (space === 'io' ? ~3 : ~15)) >>> 0) + 1;
      const at = alignUp(space === 'io' ? io : mem, size);
      if (space === 'io') io = at + size;
      else mem = at + size;
      this.bus.configWrite(reg, 4, at);
      this.bars[i] = { space, address: at, size };
    }
    this.bus.configWrite(PCI_COMMAND, 2, 0x7); // I/O, memory, bus master
  }

  // §4.1.4: the first capability of each virtio type is the one to use. Returns the MSI-X capability's offset, or 0.
  private walkCapabilities(): number {
    const b = this.bus;
    if ((b.configRead(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST) === 0) throw new NetDriverError('the device has no capability list');
    let msix = 0;
    const seen = new Set<number>();
    for (let p = b.configRead(PCI_CAPABILITY_LIST, 1) & ~3; p !== 0 && seen.size < 48; p = b.configRead(p + 1, 1) & ~3) {
      if (seen.has(p)) throw new NetDriverError(`the capability list loops at 0x${p.toString(16)}`);
      seen.add(p);
      const capId = b.configRead(p, 1);
      if (capId === PCI_CAP_ID_MSIX) msix = p;
      if (capId !== PCI_CAP_ID_VNDR) continue;
      const type = b.configRead(p + 3, 1);
      const bar = this.bars[b.configRead(p + 4, 1)];
      if (bar === undefined) continue; // §4.1.4.1: a capability naming a BAR the driver does not know is ignored
      const where: Where = { space: bar.space, address: bar.address + b.configRead(p + 8, 4) };
      if (type === VIRTIO_PCI_CAP_COMMON_CFG) this.common ??= where;
      else if (type === VIRTIO_PCI_CAP_ISR_CFG) this.isr ??= where;
      else if (type === VIRTIO_PCI_CAP_DEVICE_CFG) this.device ??= where;
      else if (type === VIRTIO_PCI_CAP_NOTIFY_CFG && this.notifyBase === undefined) {
        this.notifyBase = where;
        this.notifyMult = b.configRead(p + 16, 4);
      }
    }
    if (this.common === undefined || this.isr === undefined || this.notifyBase === undefined) {
      throw new NetDriverError('the device lacks a common, ISR or notify capability');
    }
    return msix;
  }

  // Table entries: address and data (the vector number), unmasked; then the capability's enable bit.
  private enableMsix(cap: number, address: number): void {
    const b = this.bus;
    const vectors = (b.configRead(cap + 2, 2) & 0x7ff) + 1;
    const table = b.configRead(cap + 4, 4);
    const bar = this.bars[table & 7];
    if (bar === undefined) throw new NetDriverError(`the MSI-X table is in BAR ${table & 7}, which has no address`);
    const base = bar.address + (table & ~7);
    for (let v = 0; v < vectors; v++) {
      b.write(bar.space, base + 16 * v, 4, address);
      b.write(bar.space, base + 16 * v + 4, 4, 0);
      b.write(bar.space, base + 16 * v + 8, 4, v);
      b.write(bar.space, base + 16 * v + 12, 4, 0);
    }
    b.configWrite(cap + 2, 2, 0x8000 | (b.configRead(cap + 2, 2) & ~0x4000));
  }

  private rd(at: Where, offset: number, size: number): number {
    return this.bus.read(at.space, at.address + offset, size);
  }

  private wr(at: Where, offset: number, size: number, value: number): void {
    this.bus.write(at.space, at.address + offset, size, value);
  }

  get deviceFeatures(): bigint {
    this.wr(this.common, COMMON.device_feature_select, 4, 0);
    const lo = BigInt(this.rd(this.common, COMMON.device_feature, 4));
    this.wr(this.common, COMMON.device_feature_select, 4, 1);
    return (BigInt(this.rd(this.common, COMMON.device_feature, 4)) << 32n) | lo;
  }

  get status(): number {
    return this.rd(this.common, COMMON.device_status, 1);
  }

  setStatus(value: number): void {
    this.wr(this.common, COMMON.device_status, 1, value);
    if (value === 0) {
      this.configVectorSet = false;
      this.notifyAt.clear();
      // §4.1.4.3.2: after writing 0 the driver waits until device_status reads 0.
      for (let i = 0; i < 1000 && this.status !== 0; i++);
    }
  }

  setDriverFeatures(features: bigint): void {
    this.wr(this.common, COMMON.driver_feature_select, 4, 0);
    this.wr(this.common, COMMON.driver_feature, 4, Number(features & 0xffffffffn));
    this.wr(this.common, COMMON.driver_feature_select, 4, 1);
    this.wr(this.common, COMMON.driver_feature, 4, Number((features >> 32n) & 0xffffffffn));
  }

  /** §4.1.5.1.3: select, check size and enable, write size, vector and addresses, enable and read it back. */
  activateQueue(index: number, _mem: GuestMemory, a: QueueAddresses): void {
    const c = this.common;
    if (this.msix && !this.configVectorSet) {
      this.wr(c, COMMON.config_msix_vector, 2, 0);
      if (this.rd(c, COMMON.config_msix_vector, 2) === VIRTIO_MSI_NO_VECTOR) throw new NetDriverError('the device refused MSI-X vector 0 for configuration changes');
      this.configVectorSet = true;
    }
    this.wr(c, COMMON.queue_select, 2, index);
    const max = this.rd(c, COMMON.queue_size, 2);
    if (max === 0) throw new NetDriverError(`queue ${index} is not available`);
    if (this.rd(c, COMMON.queue_enable, 2) !== 0) throw new NetDriverError(`queue ${index} is already in use`);
    if (a.size > max) throw new NetDriverError(`queue ${index}: size ${a.size} over the device's ${max}`);
    this.wr(c, COMMON.queue_size, 2, a.size);
    if (this.msix) {
      this.wr(c, COMMON.queue_msix_vector, 2, index + 1);
      if (this.rd(c, COMMON.queue_msix_vector, 2) !== index + 1) throw new NetDriverError(`the device refused MSI-X vector ${index + 1} for queue ${index}`);
    }
    const fields: [number, number][] = [[COMMON.queue_desc, a.desc], [COMMON.queue_driver, a.driver], [COMMON.queue_device, a.device]];
    for (const [reg, addr] of fields) {
      this.wr(c, reg, 4, addr % 0x1_0000_0000);
      this.wr(c, reg + 4, 4, Math.floor(addr / 0x1_0000_0000));
    }
    this.notifyAt.set(index, this.rd(c, COMMON.queue_notify_off, 2) * this.notifyMult);
    this.wr(c, COMMON.queue_enable, 2, 1);
    if (this.rd(c, COMMON.queue_enable, 2) !== 1) throw new NetDriverError(`the device refused queue ${index}'s configuration`);
  }

  kick(index: number): void {
    const off = this.notifyAt.get(index);
    if (off !== undefined) this.wr(this.notifyBase, off, 2, index);
  }

  readConfig(offset: number, size: number): number {
    const dev = this.device;
    if (dev === null) return 0;
    // §4.1.4.3: read config_generation around the read, and again if it moved (bounded).
    for (let tries = 0; tries < 100; tries++) {
      const before = this.rd(this.common, COMMON.config_generation, 1);
      const v = this.rd(dev, offset, size);
      if (this.rd(this.common, COMMON.config_generation, 1) === before) return v;
    }
    throw new NetDriverError('config_generation kept changing while reading the device configuration');
  }

  /** The INTx handler: reads the ISR (which clears it) and says what it held. */
  acknowledge(): { vring: boolean; config: boolean } {
    const s = this.rd(this.isr, 0, 1);
    return { vring: (s & VIRTIO_PCI_ISR_QUEUE) !== 0, config: (s & VIRTIO_PCI_ISR_CONFIG) !== 0 };
  }

  /** What an MSI-X vector (the message's data) stands for: 0 configuration, v > 0 queue v - 1. */
  vectorKind(vector: number): { kind: 'vring' | 'config'; queue: number } {
    return vector === 0 ? { kind: 'config', queue: -1 } : { kind: 'vring', queue: vector - 1 };
  }
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function hex(n: number): string {
  return n.toString(16).padStart(4, '0');
}
