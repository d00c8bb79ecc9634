// MSI-X (PCI Local Bus 3.0 §6.8.2): the capability, the vector table and the
// pending bit array, in a memory BAR. A message for a masked vector (or under
// the function mask) sets its pending bit and goes out when it is unmasked.
import type { PciConfigSpace } from './pci-config.js';

export const PCI_CAP_ID_MSIX = 0x11;
const MSIX_ENABLE = 0x8000;
const MSIX_FUNCTION_MASK = 0x4000;
const ENTRY_SIZE = 16;
const VECTOR_MASKED = 1;

/** Where the table and the PBA sit: a BAR and the offsets inside it. */
export interface MsixPlacement {
  bar: number;
  tableOffset: number;
  pbaOffset: number;
}

export class Msix {
  readonly vectors: number;
  /** Messages sent; messages left pending (a masked vector). */
  readonly stats = { sent: 0, pending: 0 };
  private readonly table: Uint32Array;
  private readonly pba: Uint32Array;
  private readonly cfg: PciConfigSpace;
  private readonly capAt: number;
  private readonly send: (address: number, data: number) => void;
  readonly placement: MsixPlacement;

  constructor(cfg: PciConfigSpace, vectors: number, placement: MsixPlacement, send: (address: number, data: number) => void) {
    this.vectors = vectors;
    this.cfg = cfg;
    this.placement = placement;
    this.send = send;
    this.table = new Uint32Array(4 * vectors);
    for (let v = 0; v < vectors; v++) this.table[4 * v + 3] = VECTOR_MASKED; // masked at reset
    this.pba = new Uint32Array(Math.ceil(vectors / 32) * 2); // QWORDs
    const body = new Uint8Array(10);
    const dv = new DataView(body.buffer);
    dv.setUint16(0, vectors - 1, true); // Message Control: table size - 1
    dv.setUint32(2, placement.tableOffset | placement.bar, true);
    dv.setUint32(6, placement.pbaOffset | placement.bar, true);
    const writable = new Uint8Array(10);
    writable[1] = (MSIX_ENABLE | MSIX_FUNCTION_MASK) >> 8;
    this.capAt = cfg.addCapability(PCI_CAP_ID_MSIX, body, writable);
    cfg.hook({ start: this.capAt + 2, end: this.capAt + 4, written: () => this.deliverPending() });
  }

  /** Bytes of table and PBA: what the BAR must hold from tableOffset. */
  static tableBytes(vectors: number): number {
    return vectors * ENTRY_SIZE;
  }

  private get control(): number {
    return this.cfg.bytes[this.capAt + 2]! | (this.cfg.bytes[this.capAt + 3]! << 8);
  }

  get enabled(): boolean {
    return (this.control & MSIX_ENABLE) !== 0;
  }

  /** Signals vector v: sent now, or pending while masked. False when v is not in the table. */
  signal(v: number): boolean {
    if (v < 0 || v >= this.vectors) return false;
    if ((this.control & MSIX_FUNCTION_MASK) !== 0 || (this.table[4 * v + 3]! & VECTOR_MASKED) !== 0) {
      this.pba[v >>> 5]! |= 1 << (v & 31);
      this.stats.pending++;
      return true;
    }
    this.fire(v);
    return true;
  }

  /** A read in the table or the PBA; `offset` from the BAR's start. Null when it is neither. */
  read(offset: number, size: number): number | null {
    const p = this.placement;
    if (size !== 4 || offset % 4 !== 0) return null;
    const t = offset - p.tableOffset;
    if (t >= 0 && t < this.table.length * 4) return this.table[t >> 2]!;
    const b = offset - p.pbaOffset;
    if (b >= 0 && b < this.pba.length * 4) return this.pba[b >> 2]!;
    return null;
  }

  /** A write in the table (the PBA is read-only). False when refused. */
  write(offset: number, size: number, value: number): boolean {
    const t = offset - this.placement.tableOffset;
    if (size !== 4 || offset % 4 !== 0 || t < 0 || t >= this.table.length * 4) return false;
    this.table[t >> 2] = value >>> 0;
    if ((t & 0xf) === 12) this.deliverPending(); // vector control: an unmask may release a pending message
    return true;
  }

  /** Clears pending messages (the device was reset). */
  clearPending(): void {
    this.pba.fill(0);
  }

  private deliverPending(): void {
    if ((this.control & MSIX_FUNCTION_MASK) !== 0) return;
    for (let v = 0; v < this.vectors; v++) {
      const bit = 1 << (v & 31);
      if ((this.pba[v >>> 5]! & bit) === 0 || (this.table[4 * v + 3]! & VECTOR_MASKED) !== 0) continue;
      this.pba[v >>> 5]! &= ~bit;
      this.fire(v);
    }
  }

  private fire(v: number): void {
    const lo = this.table[4 * v]!;
    const hi = this.table[4 * v + 1]!;
    this.stats.sent++;
    this.send(hi * 0x1_0000_0000 + lo, this.table[4 * v + 2]!);
  }
}
