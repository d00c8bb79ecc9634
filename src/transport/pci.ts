// virtio-pci, the modern interface (VIRTIO 1.2 §4.1): the register model a
// TypeScript VMM calls on its PCI configuration cycles and BAR accesses.
// Configuration space: vendor 0x1af4, device 0x1040 + the virtio device id,
// revision 1, the virtio vendor capabilities (common, notify, ISR, device,
// PCI config access) and, when on, MSI-X. The structures sit in one BAR,
// I/O ports or memory; the MSI-X table and PBA in a memory BAR of their own.
// Interrupts: an MSI-X vector per queue and one for configuration changes,
// or INTx (the ISR, read to clear, drives the line) while MSI-X is off.
import type { GuestMemory } from '../virtio/guest-memory.js';
import type { VirtioDeviceCore } from '../virtio/device.js';
import { CommonConfig, COMMON_CFG_SIZE, type PciCommonStats } from './pci-common.js';
import { PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PciConfigError, PciConfigSpace, type BarSpec } from './pci-config.js';
import { Msix } from './pci-msix.js';

export const PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1af4;
/** §4.1.2.1: 0x1040 plus the virtio device id (net: 1). */
export const VIRTIO_PCI_DEVICE_ID_BASE = 0x1040;
export const PCI_CAP_ID_VNDR = 0x09;
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;
export const VIRTIO_PCI_ISR_QUEUE = 1;
export const VIRTIO_PCI_ISR_CONFIG = 2;

/** A device the transport can front: the core plus its configuration space. */
export type PciDevice = VirtioDeviceCore & {
  readConfig(offset: number, size: number): number;
  readonly deviceId?: number;
};

export interface PciOptions {
  /** The guest's RAM, where the driver puts its rings and buffers. */
  memory: GuestMemory;
  /** Where the virtio structures live: an I/O-port BAR (v86) or a memory BAR (default). */
  bars?: 'io' | 'memory';
  /** An MSI-X capability, table and PBA (default true); off, the device uses INTx only. */
  msix?: boolean;
  /** Largest queue size offered (queue_size after reset). Default 256. */
  queueNumMax?: number;
  /** Bytes between queues' notify addresses (§4.1.4.4). Default 4 (memory), 2 (I/O). */
  notifyOffMultiplier?: number;
  /** The INTx line: true when the ISR becomes non-zero, false when a read clears it. */
  interrupt: (asserted: boolean) => void;
  /** An MSI-X message: the VMM writes `data` at `address` (its interrupt controller). */
  msi?: (address: number, data: number) => void;
}

/** Where each structure is: a BAR and the offset and length inside it. */
export interface PciRegion {
  bar: number;
  offset: number;
  length: number;
}

export interface PciLayout {
  common: PciRegion;
  notify: PciRegion;
  isr: PciRegion;
  device: PciRegion;
  notifyOffMultiplier: number;
  bars: (BarSpec | null)[];
}

const DEVICE_CFG_SIZE = 0x40;

/** The BARs and where each structure sits (the layout is the transport's to choose, §4.1.4). */
export function pciLayout(kind: 'io' | 'memory', numQueues: number, msix: boolean, multiplier?: number): PciLayout {
  const mult = multiplier ?? (kind === 'io' ? 2 : 4);
  const notifyLen = Math.max(2, mult * numQueues);
  const bars: (BarSpec | null)[] = [];
  if (kind === 'io') {
    let size = 256;
    while (size < 0xc0 + notifyLen) size *= 2;
    if (size > 256) throw new PciConfigError(`${numQueues} queues at a notify multiplier of ${mult} do not fit in a 256-byte I/O BAR`);
    bars.push({ kind: 'io', size });
  } else {
    bars.push({ kind: 'memory', size: 0x3000 + Math.max(0x1000, 2 ** Math.ceil(Math.log2(notifyLen))) });
  }
  if (msix) bars.push({ kind: 'memory', size: 0x1000 });
  const at = kind === 'io' ? [0x00, 0x40, 0x80, 0xc0] : [0x0000, 0x1000, 0x2000, 0x3000];
  return {
    common: { bar: 0, offset: at[0]!, length: COMMON_CFG_SIZE },
    isr: { bar: 0, offset: at[1]!, length: 1 },
    device: { bar: 0, offset: at[2]!, length: DEVICE_CFG_SIZE },
    notify: { bar: 0, offset: at[3]!, length: notifyLen },
    notifyOffMultiplier: mult,
    bars,
  };
}

export interface PciStats extends PciCommonStats {
  /** BAR accesses outside every structure, of a width a structure refuses, or writes to read-only ones. */
  barInvalid: number;
  /** Notifications that could not be delivered: MSI-X on and the vector NO_VECTOR or out of the table. */
  interruptsDropped: number;
}

export class PciTransport {
  readonly config: PciConfigSpace;
  readonly layout: PciLayout;
  readonly stats: PciStats = { invalidAccesses: 0, refusedWrites: 0, refusedQueues: 0, barInvalid: 0, interruptsDropped: 0 };
  readonly msix: Msix | null;
  private readonly dev: PciDevice;
  private mem: GuestMemory;
  private readonly line: (asserted: boolean) => void;
  private readonly common: CommonConfig;
  private readonly numMax: number;
  private isr = 0;
  private lineUp = false;
  private generation = 0;
  private cfgCapAt = 0;

  constructor(device: PciDevice, o: PciOptions) {
    this.dev = device;
    this.mem = o.memory;
    this.line = o.interrupt;
    this.numMax = o.queueNumMax ?? 256;
    const msixOn = o.msix ?? true;
    if (msixOn && o.msi === undefined) throw new PciConfigError('MSI-X needs an msi callback (or msix: false for INTx only)');
    this.layout = pciLayout(o.bars ?? 'memory', device.queues.length, msixOn, o.notifyOffMultiplier);
    this.config = new PciConfigSpace(
      {
        vendorId: PCI_VENDOR_ID_REDHAT_QUMRANET,
        deviceId: VIRTIO_PCI_DEVICE_ID_BASE + (device.deviceId ?? 1),
        revision: 1, // §4.1.2.1: a non-transitional device has revision 1 or more
        classCode: [0x02, 0x00, 0x00], // network controller, Ethernet
        subsystemVendorId: PCI_VENDOR_ID_REDHAT_QUMRANET,
        subsystemId: 0x1100, // §4.1.2.1: 0x40 or more for a non-transitional device
      },
      this.layout.bars,
    );
    this.msix = msixOn ? new Msix(this.config, device.queues.length + 1, { bar: 1, tableOffset: 0, pbaOffset: 0x800 }, o.msi!) : null;
    this.addVirtioCapabilities();
    this.config.hook({ start: PCI_COMMAND, end: PCI_COMMAND + 2, written: () => this.driveLine() });
    const self = this;
    this.common = new CommonConfig(
      {
        device,
        get memory() { return self.mem; },
        queueNumMax: this.numMax,
        msixVectors: this.msix?.vectors ?? 0,
        get configGeneration() { return self.generation; },
        reset: () => this.reset(),
      },
      this.stats,
    );
  }

  /** Guest RAM moved (a VMM whose memory buffer was replaced): queues enabled from now on use `memory`. */
  set memory(memory: GuestMemory) {
    this.mem = memory;
  }

  get memory(): GuestMemory {
    return this.mem;
  }

  /** Every refusal the transport counted, configuration space included. */
  get invalidAccesses(): number {
    return this.stats.invalidAccesses + this.stats.barInvalid + this.config.invalidAccesses;
  }

  /** A configuration space read (a PCI configuration cycle). */
  configRead(offset: number, size: number): number {
    return this.config.read(offset, size);
  }

  /** A configuration space write. */
  configWrite(offset: number, size: number, value: number): void {
    this.config.write(offset, size, value);
  }

  /**
   * What the device's interrupt callback should call: a used-buffer
   * notification for `queue`, or a configuration change (which also bumps
   * config_generation).
   */
  notify(kind: 'vring' | 'config', queue = -1): void {
    if (kind === 'config') this.generation = (this.generation + 1) & 0xff;
    const m = this.msix;
    if (m !== null && m.enabled) {
      // §4.1.4.5: with MSI-X on the ISR is left alone; the vector says what happened.
      const v = kind === 'config' ? this.common.configVector : this.common.queues[queue]?.msixVector ?? -1;
      if (!m.signal(v)) this.stats.interruptsDropped++;
      return;
    }
    this.isr |= kind === 'vring' ? VIRTIO_PCI_ISR_QUEUE : VIRTIO_PCI_ISR_CONFIG;
    this.driveLine();
  }

  /** The BAR (index) and offset a bus address falls in, or null: for a VMM that decodes addresses itself. */
  decode(space: 'io' | 'memory', address: number): { bar: number; offset: number } | null {
    for (let i = 0; i < this.layout.bars.length; i++) {
      const b = this.layout.bars[i];
      const base = this.config.barBase(i);
      if (b === null || b === undefined || b.kind !== space || base < 0) continue;
      if (address >= base && address < base + b.size) return { bar: i, offset: address - base };
    }
    return null;
  }

  /** A read of `size` bytes at `offset` in BAR `bar`. */
  barRead(bar: number, offset: number, size: number): number {
    if (this.msix !== null && bar === this.msix.placement.bar) return this.msix.read(offset, size) ?? this.barRefused(0);
    const l = this.layout;
    if (bar !== 0) return this.barRefused(0);
    if (inRegion(l.common, offset, size)) return this.common.read(offset - l.common.offset, size);
    if (inRegion(l.device, offset, size)) {
      if ((size !== 1 && size !== 2 && size !== 4) || offset % size !== 0) return this.barRefused(0);
      return this.dev.readConfig(offset - l.device.offset, size) >>> 0;
    }
    if (inRegion(l.isr, offset, size)) return size === 1 ? this.readIsr() : this.barRefused(0);
    return this.barRefused(0); // notify is write-only; elsewhere nothing
  }

  /** A write of `size` bytes of `value` at `offset` in BAR `bar`. */
  barWrite(bar: number, offset: number, size: number, value: number): void {
    if (this.msix !== null && bar === this.msix.placement.bar) {
      if (!this.msix.write(offset, size, value)) this.barRefused(0);
      return;
    }
    const l = this.layout;
    if (bar === 0 && inRegion(l.common, offset, size)) this.common.write(offset - l.common.offset, size, value);
    else if (bar === 0 && inRegion(l.notify, offset, size)) this.notifyWrite(offset - l.notify.offset, size, value);
    else this.barRefused(0); // the network device's configuration is read-only (§5.1.4); so is the ISR
  }

  // §4.1.4.4: queue q's notify address is notify offset + queue_notify_off * multiplier; the value is q.
  private notifyWrite(offset: number, size: number, value: number): void {
    const mult = this.layout.notifyOffMultiplier;
    const q = mult === 0 ? value & 0xffff : offset / mult;
    if (size !== 2 || !Number.isInteger(q) || q >= this.dev.queues.length || (value & 0xffff) !== q) {
      this.barRefused(0);
      return;
    }
    this.dev.kick(q);
  }

  // §4.1.4.5: reading the ISR clears it and de-asserts the line.
  private readIsr(): number {
    const v = this.isr;
    this.isr = 0;
    this.driveLine();
    return v;
  }

  private driveLine(): void {
    const pending = this.isr !== 0;
    this.config.setInterruptStatus(pending);
    const up = pending && (this.config.command & PCI_COMMAND_INTX_DISABLE) === 0;
    if (up === this.lineUp) return;
    this.lineUp = up;
    this.line(up);
  }

  private reset(): void {
    this.dev.setStatus(0);
    this.common.clear();
    this.msix?.clearPending();
    this.isr = 0;
    this.driveLine();
  }

  private barRefused(result: number): number {
    this.stats.barInvalid++;
    return result;
  }

  private addVirtioCapabilities(): void {
    const l = this.layout;
    this.addVirtioCap(VIRTIO_PCI_CAP_COMMON_CFG, l.common);
    const mult = new Uint8Array(4);
    new DataView(mult.buffer).setUint32(0, l.notifyOffMultiplier, true);
    this.addVirtioCap(VIRTIO_PCI_CAP_NOTIFY_CFG, l.notify, mult);
    this.addVirtioCap(VIRTIO_PCI_CAP_ISR_CFG, l.isr);
    this.addVirtioCap(VIRTIO_PCI_CAP_DEVICE_CFG, l.device);
    this.addPciCfgCap();
  }

  // struct virtio_pci_cap (§4.1.4): cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2], offset, length.
  private addVirtioCap(type: number, r: PciRegion, extra = new Uint8Array(0), writable?: Uint8Array): number {
    const body = new Uint8Array(14 + extra.length);
    const dv = new DataView(body.buffer);
    body[0] = 16 + extra.length; // cap_len
    body[1] = type;
    body[2] = r.bar;
    dv.setUint32(6, r.offset, true);
    dv.setUint32(10, r.length, true);
    body.set(extra, 14);
    return this.config.addCapability(PCI_CAP_ID_VNDR, body, writable);
  }

  // §4.1.4.9: the PCI configuration access capability, a window onto the BARs.
  private addPciCfgCap(): void {
    const writable = new Uint8Array(18);
    writable[2] = 0xff; // bar
    writable.fill(0xff, 6, 18); // offset, length, pci_cfg_data
    const at = this.addVirtioCap(VIRTIO_PCI_CAP_PCI_CFG, { bar: 0, offset: 0, length: 0 }, new Uint8Array(4), writable);
    this.cfgCapAt = at;
    const data = at + 16;
    this.config.hook({
      start: data,
      end: data + 4,
      read: (off, size) => this.cfgWindow(off - data, size, null),
      written: (off, size, value) => this.cfgWindow(off - data, size, value),
    });
  }

  // An access through pci_cfg_data: cap.length bytes at cap.offset in cap.bar; bytes past cap.length are ignored.
  private cfgWindow(at: number, size: number, value: number | null): number {
    const c = this.config.bytes;
    const dv = new DataView(c.buffer);
    const bar = c[this.cfgCapAt + 4]!;
    const offset = dv.getUint32(this.cfgCapAt + 8, true);
    const length = dv.getUint32(this.cfgCapAt + 12, true);
    if (at !== 0 || size < length || (length !== 1 && length !== 2 && length !== 4) || offset % length !== 0) {
      this.stats.invalidAccesses++;
      return 0;
    }
    if (value === null) return this.barRead(bar, offset, length);
    this.barWrite(bar, offset, length, value & (length === 4 ? 0xffffffff : (1 << (8 * length)) - 1));
    return 0;
  }
}

function inRegion(r: PciRegion, offset: number, size: number): boolean {
  return offset >= r.offset && offset + size <= r.offset + r.length;
}
