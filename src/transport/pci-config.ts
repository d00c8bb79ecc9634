// The PCI configuration space of one function: a type 0 header (PCI Local
// Bus 3.0 §6.1), its base address registers and a capability list. What is
// writable is a per-byte mask; a BAR takes its size probe (all ones) and an
// address aligned to its size (§6.2.5.1). Capabilities can hook reads and
// writes of their own bytes (MSI-X control, the virtio PCI config window).

/** A base address register: I/O ports or 32-bit memory, `size` a power of two. */
export interface BarSpec {
  kind: 'io' | 'memory';
  size: number;
}

export interface PciIdentity {
  vendorId: number;
  deviceId: number;
  revision: number;
  /** Base class, subclass, programming interface. */
  classCode: [number, number, number];
  subsystemVendorId: number;
  subsystemId: number;
}

/** Thrown when a transport is set up with a layout PCI cannot express (cold path). */
export class PciConfigError extends Error {
  override readonly name = 'PciConfigError';
  readonly code = 'ERR_VIRTIO_PCI_CONFIG';
}

export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_BAR0 = 0x10;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;
export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
export const PCI_STATUS_INTERRUPT = 0x8;
export const PCI_STATUS_CAP_LIST = 0x10;

/** Hooks of a capability over [start, end) of the space. */
export interface ConfigHook {
  start: number;
  end: number;
  /** Replaces the stored bytes for a read of this range (offset is absolute). */
  read?: (offset: number, size: number) => number;
  /** Called after a write to this range was stored through the mask. */
  written?: (offset: number, size: number, value: number) => void;
}

export class PciConfigSpace {
  readonly bytes = new Uint8Array(256);
  readonly bars: readonly (BarSpec | null)[];
  /** Accesses refused: a width other than 1, 2, 4, unaligned, or past 256 bytes. */
  invalidAccesses = 0;
  private readonly mask = new Uint8Array(256);
  private readonly dv = new DataView(this.bytes.buffer);
  private readonly hooks: ConfigHook[] = [];
  private lastCap = 0;
  private capEnd = 0x40;

  constructor(id: PciIdentity, bars: (BarSpec | null)[]) {
    if (bars.length > 6) throw new PciConfigError(`${bars.length} BARs: a type 0 header has 6`);
    for (const b of bars) {
      if (b === null) continue;
      const min = b.kind === 'io' ? 4 : 16;
      if (b.size < min || (b.size & (b.size - 1)) !== 0 || (b.kind === 'io' && b.size > 256)) {
        throw new PciConfigError(`a ${b.kind} BAR of ${b.size} bytes: it must be a power of two from ${min}${b.kind === 'io' ? ' to 256' : ''}`);
      }
    }
    this.bars = bars;
    const d = this.dv;
    d.setUint16(0x00, id.vendorId, true);
    d.setUint16(0x02, id.deviceId, true);
    d.setUint8(0x08, id.revision);
    d.setUint8(0x09, id.classCode[2]);
    d.setUint8(0x0a, id.classCode[1]);
    d.setUint8(0x0b, id.classCode[0]);
    d.setUint16(0x2c, id.subsystemVendorId, true);
    d.setUint16(0x2e, id.subsystemId, true);
    d.setUint8(PCI_INTERRUPT_PIN, 1); // INTA#
    bars.forEach((b, i) => d.setUint32(PCI_BAR0 + 4 * i, b === null ? 0 : b.kind === 'io' ? 1 : 0, true));
    this.mask[PCI_COMMAND] = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    this.mask[PCI_COMMAND + 1] = PCI_COMMAND_INTX_DISABLE >> 8;
    this.mask[0x0c] = 0xff; // cache line size
    this.mask[0x0d] = 0xff; // latency timer
    this.mask[PCI_INTERRUPT_LINE] = 0xff;
  }

  /**
   * Appends a capability: `body` from its third byte on (after id and next),
   * `writable` the mask of the same bytes. Returns its offset.
   */
  addCapability(capId: number, body: Uint8Array, writable?: Uint8Array): number {
    const at = this.capEnd;
    const len = 2 + body.length;
    if (at + len > 256) throw new PciConfigError(`capability 0x${capId.toString(16)} (${len} bytes) does not fit in configuration space`);
    this.bytes[at] = capId;
    this.bytes.set(body, at + 2);
    if (writable !== undefined) this.mask.set(writable, at + 2);
    if (this.lastCap === 0) this.bytes[PCI_CAPABILITY_LIST] = at;
    else this.bytes[this.lastCap + 1] = at;
    this.dv.setUint16(PCI_STATUS, this.dv.getUint16(PCI_STATUS, true) | PCI_STATUS_CAP_LIST, true);
    this.lastCap = at;
    this.capEnd = (at + len + 3) & ~3;
    return at;
  }

  hook(h: ConfigHook): void {
    this.hooks.push(h);
  }

  get command(): number {
    return this.dv.getUint16(PCI_COMMAND, true);
  }

  /** The Interrupt Status bit of the status register (INTx pending). */
  setInterruptStatus(on: boolean): void {
    const s = this.dv.getUint16(PCI_STATUS, true);
    this.dv.setUint16(PCI_STATUS, on ? s | PCI_STATUS_INTERRUPT : s & ~PCI_STATUS_INTERRUPT, true);
  }

  /** Where BAR i is (its address bits), or -1 when it has none or is not decoded (command register). */
  barBase(i: number): number {
    const b = this.bars[i];
    if (b === undefined || b === null) return -1;
    const on = b.kind === 'io' ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    if ((this.command & on) === 0) return -1;
    return (this.dv.getUint32(PCI_BAR0 + 4 * i, true) & ~(b.size - 1)) >>> 0;
  }

  read(offset: number, size: number): number {
    if (!this.valid(offset, size)) return this.refused(size === 1 ? 0xff : size === 2 ? 0xffff : 0xffffffff);
    for (const h of this.hooks) {
      if (h.read !== undefined && offset >= h.start && offset + size <= h.end) return h.read(offset, size) >>> 0;
    }
    return size === 1 ? this.bytes[offset]! : size === 2 ? this.dv.getUint16(offset, true) : this.dv.getUint32(offset, true);
  }

  write(offset: number, size: number, value: number): void {
    if (!this.valid(offset, size)) {
      this.refused(0);
      return;
    }
    if (offset >= PCI_BAR0 && offset < PCI_BAR0 + 24) {
      if (size === 4) this.writeBar((offset - PCI_BAR0) >> 2, value >>> 0);
      return; // a BAR takes whole dwords only (as firmware and Linux write them)
    }
    for (let i = 0; i < size; i++) {
      const m = this.mask[offset + i]!;
      const v = (value >>> (8 * i)) & 0xff;
      this.bytes[offset + i] = (this.bytes[offset + i]! & ~m) | (v & m);
    }
    for (const h of this.hooks) {
      if (h.written !== undefined && offset < h.end && offset + size > h.start) h.written(offset, size, value >>> 0);
    }
  }

  // §6.2.5.1: the low bits of a BAR read back its type, and zeros where its size masks the address.
  private writeBar(i: number, value: number): void {
    const b = this.bars[i];
    const flags = b === undefined || b === null ? 0 : b.kind === 'io' ? 1 : 0;
    const v = b === undefined || b === null ? 0 : ((value & ~(b.size - 1)) | flags) >>> 0;
    this.dv.setUint32(PCI_BAR0 + 4 * i, v, true);
  }

  private valid(offset: number, size: number): boolean {
    return (size === 1 || size === 2 || size === 4) && offset >= 0 && offset % size === 0 && offset + size <= 256;
  }

  private refused(result: number): number {
    this.invalidAccesses++;
    return result;
  }
}
