// A copy of a virtqueue's memory as the spec lays it out (VIRTIO 1.2 §2.7
// split, §2.8 packed), read from guest memory at one moment, and drawn as
// text: what the tour shows and what its diagrams are made from.
import { u64, type GuestMemory } from '../virtio/guest-memory.js';
import type { QueueAddresses } from '../virtio/queue.js';
import { descFlagNames } from '../trace/format.js';

export interface SplitSnapshot {
  layout: 'split';
  name: string;
  addresses: QueueAddresses;
  desc: { addr: number; len: number; flags: number; next: number }[];
  avail: { flags: number; idx: number; ring: number[]; usedEvent: number };
  used: { flags: number; idx: number; ring: { id: number; len: number }[]; availEvent: number };
}

export interface PackedSnapshot {
  layout: 'packed';
  name: string;
  addresses: QueueAddresses;
  desc: { addr: number; len: number; id: number; flags: number }[];
  /** Driver event suppression (in the driver area) and device event suppression (device area). */
  driverEvent: { offWrap: number; flags: number };
  deviceEvent: { offWrap: number; flags: number };
}

export type RingSnapshot = SplitSnapshot | PackedSnapshot;

function dataView(mem: GuestMemory, addr: number, len: number): DataView {
  const v = mem.view(addr, len);
  return new DataView(v.buffer, v.byteOffset, v.byteLength);
}

// A 16-byte descriptor: address, length, then the two 16-bit fields whose
// meaning depends on the layout (split: flags, next; packed: id, flags).
function readDescriptors(d: DataView, n: number): { addr: number; len: number; w12: number; w14: number }[] {
  return Array.from({ length: n }, (_, i) => ({
    addr: u64(d.getUint32(16 * i, true), d.getUint32(16 * i + 4, true)),
    len: d.getUint32(16 * i + 8, true),
    w12: d.getUint16(16 * i + 12, true),
    w14: d.getUint16(16 * i + 14, true),
  }));
}

/** Reads a queue's areas out of guest memory. */
export function snapshotRing(mem: GuestMemory, layout: 'split' | 'packed', a: QueueAddresses, name: string): RingSnapshot {
  const n = a.size;
  const raw = readDescriptors(dataView(mem, a.desc, 16 * n), n);
  if (layout === 'split') {
    const av = dataView(mem, a.driver, 6 + 2 * n);
    const us = dataView(mem, a.device, 6 + 8 * n);
    return {
      layout,
      name,
      addresses: { ...a },
      desc: raw.map((r) => ({ addr: r.addr, len: r.len, flags: r.w12, next: r.w14 })),
      avail: {
        flags: av.getUint16(0, true),
        idx: av.getUint16(2, true),
        ring: Array.from({ length: n }, (_, i) => av.getUint16(4 + 2 * i, true)),
        usedEvent: av.getUint16(4 + 2 * n, true),
      },
      used: {
        flags: us.getUint16(0, true),
        idx: us.getUint16(2, true),
        ring: Array.from({ length: n }, (_, i) => ({ id: us.getUint32(4 + 8 * i, true), len: us.getUint32(8 + 8 * i, true) })),
        availEvent: us.getUint16(4 + 8 * n, true),
      },
    };
  }
  const drv = dataView(mem, a.driver, 4);
  const dev = dataView(mem, a.device, 4);
  return {
    layout,
    name,
    addresses: { ...a },
    desc: raw.map((r) => ({ addr: r.addr, len: r.len, id: r.w12, flags: r.w14 })),
    driverEvent: { offWrap: drv.getUint16(0, true), flags: drv.getUint16(2, true) },
    deviceEvent: { offWrap: dev.getUint16(0, true), flags: dev.getUint16(2, true) },
  };
}

/** A table: title, header row, rows of cells, and which cells changed since the last look. */
export interface RingTable {
  title: string;
  header: string[];
  rows: string[][];
  changed: boolean[][];
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const eventFlags = (f: number): string => ['ENABLE', 'DISABLE', 'DESC'][f & 3] ?? `${f}`;

/** The snapshot as tables (the same ones in text and in SVG). Cells that differ from `before` are marked. */
export function ringTables(s: RingSnapshot, before?: RingSnapshot): RingTable[] {
  const tables: { title: string; header: string[]; rows: string[][] }[] = [];
  if (s.layout === 'split') {
    tables.push({
      title: `Descriptor table @${hex(s.addresses.desc)}`,
      header: ['#', 'addr', 'len', 'flags', 'next'],
      rows: s.desc.map((d, i) => [`${i}`, hex(d.addr), `${d.len}`, descFlagNames(d.flags), `${d.next}`]),
    });
    tables.push({
      title: `Available ring @${hex(s.addresses.driver)} (driver area)`,
      header: ['field', 'value'],
      rows: [
        ['flags', `${s.avail.flags}`],
        ['idx', `${s.avail.idx}`],
        ...s.avail.ring.map((h, i) => [`ring[${i}]`, `${h}`]),
        ['used_event', `${s.avail.usedEvent}`],
      ],
    });
    tables.push({
      title: `Used ring @${hex(s.addresses.device)} (device area)`,
      header: ['field', 'value'],
      rows: [
        ['flags', `${s.used.flags}`],
        ['idx', `${s.used.idx}`],
        ...s.used.ring.map((u, i) => [`ring[${i}]`, `id ${u.id} len ${u.len}`]),
        ['avail_event', `${s.used.availEvent}`],
      ],
    });
  } else {
    tables.push({
      title: `Descriptor ring @${hex(s.addresses.desc)}`,
      header: ['#', 'addr', 'len', 'id', 'flags'],
      rows: s.desc.map((d, i) => [`${i}`, hex(d.addr), `${d.len}`, `${d.id}`, descFlagNames(d.flags)]),
    });
    const ev = (e: { offWrap: number; flags: number }) => [
      ['off', `${e.offWrap & 0x7fff}`],
      ['wrap', `${e.offWrap >>> 15}`],
      ['flags', eventFlags(e.flags)],
    ];
    tables.push({ title: `Driver event suppression @${hex(s.addresses.driver)}`, header: ['field', 'value'], rows: ev(s.driverEvent) });
    tables.push({ title: `Device event suppression @${hex(s.addresses.device)}`, header: ['field', 'value'], rows: ev(s.deviceEvent) });
  }
  const old = before !== undefined && before.layout === s.layout ? ringTables(before) : undefined;
  return tables.map((t, ti) => ({
    ...t,
    changed: t.rows.map((r, ri) => r.map((c, ci) => old !== undefined && old[ti]?.rows[ri]?.[ci] !== c)),
  }));
}

/** Tables side by side as text; changed cells marked with `*` (or highlighted by `mark`). */
export function renderRingText(s: RingSnapshot, before?: RingSnapshot, mark: (cell: string) => string = (c) => `${c}*`): string {
  const tables = ringTables(s, before);
  const blocks = tables.map((t) => {
    const widths = t.header.map((h, ci) => Math.max(h.length, ...t.rows.map((r) => r[ci]!.length + 1)));
    const line = (cells: string[], changed?: boolean[]) =>
      cells.map((c, ci) => (changed?.[ci] === true ? mark(c) + ' '.repeat(Math.max(0, widths[ci]! - c.length - 1)) : c.padEnd(widths[ci]!))).join(' ');
    const width = Math.max(t.title.length, widths.reduce((a, b) => a + b + 1, -1));
    return { width, lines: [t.title, line(t.header), ...t.rows.map((r, ri) => line(r, t.changed[ri]))] };
  });
  const height = Math.max(...blocks.map((b) => b.lines.length));
  const out: string[] = [];
  for (let i = 0; i < height; i++) {
    out.push(
      blocks
        .map((b) => {
          const l = b.lines[i] ?? '';
          // Pad by visible length: `mark` may add escape codes.
          const visible = l.replace(/\u001b\[[0-9;]*m/g, '').length;
          return l + ' '.repeat(Math.max(0, b.width - visible));
        })
        .join('   ')
        .trimEnd(),
    );
  }
  return `${s.name} (${s.layout}, size ${s.addresses.size})\n${out.join('\n')}`;
}
