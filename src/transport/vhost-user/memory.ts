// The front-end's memory table (SET_MEM_TABLE, vhost-user.rst "Memory
// regions"): each region a part of a file mapped shared, starting at its
// mmap_offset. The table translates the front-end's virtual addresses (ring
// addresses) to guest-physical ones.
//
// Everything is checked against what the fds really are before anything is
// mapped: each fd a regular file (a memfd, a tmpfs or hugetlbfs file), each
// region inside its file (fstat), sizes and sums checked for overflow, no two
// regions over the same guest-physical addresses. A region larger than the
// engine takes in one ArrayBuffer (4 GiB in Node 20) is mapped as several
// views of VIEW_BYTES each. A file that can shrink would turn a later
// truncation into SIGBUS on access, which neither the native I/O layer nor
// the JavaScript ring accessors can catch: the back-end seals it
// (F_SEAL_SHRINK) when it can (QEMU's memory-backend-memfd is sealed already,
// seal=on by default), and says so in a log line when it cannot (a tmpfs or
// hugetlbfs file, a memfd made without MFD_ALLOW_SEALING).
//
// With CONFIGURE_MEM_SLOTS the front-end hands regions over one at a time
// (ADD_MEM_REG, REM_MEM_REG; QEMU then sends no SET_MEM_TABLE, and hot-added
// DIMMs arrive this way): each added region is checked as a table's are,
// against the regions in use too, and a new table shares the regions it
// keeps (mapped once; release() unmaps and closes only what it drops).
import { fstatSync } from 'node:fs';

import { native } from '../../host/binding.js';
import { errnoName } from '../../host/errors.js';
import { GuestMemory, GuestMemoryError } from '../../virtio/guest-memory.js';
import { VHOST_MEMORY_MAX_NREGIONS, VhostUserError } from './protocol.js';

/** Regions taken one at a time with CONFIGURE_MEM_SLOTS (GET_MAX_MEM_SLOTS); QEMU 7.2 takes up to 512, and asks for one per RAM block. */
export const MAX_MEM_SLOTS = 64;

/** One ArrayBuffer over part of a region. */
interface View {
  gpa: bigint;
  buffer: ArrayBuffer;
  /** Where the view's bytes start in the buffer (the page offset of the mapping). */
  offset: number;
  length: number;
}

interface Region {
  gpa: bigint;
  size: bigint;
  userspace: bigint;
  offset: bigint;
  fd: number;
}

interface Mapped extends Region {
  views: View[];
  /** How many times ADD_MEM_REG added it (QEMU 7.2 adds each region once per queue pair); REM_MEM_REG counts down. */
  refs: number;
}

/** A table mapped but not yet in use (see MemoryTable.swap). */
export interface MappedTable {
  readonly regions: readonly Mapped[];
  readonly guest: GuestMemory | null;
}

/** Bytes of one region in the payload: guest_phys_addr, memory_size, userspace_addr, mmap_offset. */
const REGION_BYTES = 32;
/** The payload's head: nregions (u32) and padding. */
const HEAD_BYTES = 8;
/** The largest region taken (1 TiB) and the largest offset into its file. */
const MAX_REGION = 1n << 40n;
const MAX_OFFSET = 1n << 50n;
/** Guest-physical addresses end below 2^52, where JavaScript numbers are still exact. */
const MAX_GPA = 1n << 52n;
const U64_END = 1n << 64n;
/** A region is mapped in views of at most this many bytes (Node 20 refuses ArrayBuffers over 4 GiB). */
export const VIEW_BYTES = 1n << 31n;
const PAGE = 4096n;
const F_SEAL_SHRINK = 0x2;

const EMPTY: MappedTable = { regions: [], guest: null };

export class MemoryTable {
  private readonly n = native();
  private table: MappedTable = EMPTY;

  constructor(private readonly log: (line: string) => void = () => {}) {}

  /** The guest's memory, or null before the first table. */
  get guest(): GuestMemory | null {
    return this.table.guest;
  }

  /**
   * Checks a SET_MEM_TABLE payload against its fds, seals the files against
   * shrinking where it can, and maps them. Throws VhostUserError with every
   * mapping undone; the fds stay the message's until the table is swapped in
   * (the caller takes them then).
   */
  map(dv: DataView, fds: readonly number[]): MappedTable {
    const regions = checkTable(dv, fds);
    regions.forEach((r, i) => this.checkFile(r, i, 'SET_MEM_TABLE'));
    checkOverlap(regions, 'SET_MEM_TABLE');
    regions.forEach((r, i) => this.seal(r, i));
    const mapped: Mapped[] = [];
    try {
      for (const [i, r] of regions.entries()) mapped.push({ ...r, views: this.mapRegion(r, i, 'SET_MEM_TABLE'), refs: 1 });
      return withGuest(mapped, 'SET_MEM_TABLE');
    } catch (err) {
      this.unmap(mapped);
      throw err;
    }
  }

  /**
   * ADD_MEM_REG (CONFIGURE_MEM_SLOTS): the table in use with one region more,
   * checked as SET_MEM_TABLE's regions are (its fd a file that holds it,
   * sizes, no overlap with any region in use, sealed where it can be), and
   * mapped; the regions in use are shared, not mapped again. Throws
   * VhostUserError with nothing mapped; the fd stays the message's until the
   * table is swapped in. The same region again (the same numbers over the
   * same file), as QEMU 7.2 sends it for each queue pair, is counted, not
   * mapped again: null, and the fd stays the message's.
   */
  mapAdded(dv: DataView, fds: readonly number[]): MappedTable | null {
    const what = 'ADD_MEM_REG';
    if (dv.byteLength < HEAD_BYTES + REGION_BYTES) throw new VhostUserError(`${what}: payload of ${dv.byteLength} bytes, needs ${HEAD_BYTES + REGION_BYTES}`);
    if (fds.length !== 1) throw new VhostUserError(`${what}: expected one fd, got ${fds.length}`);
    const inUse = this.table.regions;
    const i = inUse.length;
    const r = region(dv, 0, fds[0]!, what, i);
    this.checkFile(r, i, what);
    const again = inUse.find((m) => m.gpa === r.gpa && m.size === r.size && m.userspace === r.userspace && m.offset === r.offset && sameFile(m.fd, r.fd));
    if (again !== undefined) {
      again.refs++;
      return null;
    }
    if (inUse.length >= MAX_MEM_SLOTS) throw new VhostUserError(`${what}: all ${MAX_MEM_SLOTS} memory slots are in use`);
    checkOverlap([...inUse, r], what);
    this.seal(r, i);
    const added: Mapped = { ...r, views: this.mapRegion(r, i, what), refs: 1 };
    try {
      return withGuest([...inUse, added], what);
    } catch (err) {
      this.unmap([added]);
      throw err;
    }
  }

  /**
   * REM_MEM_REG: the table in use without the region that matches the
   * payload's guest-physical address, size and front-end address exactly.
   * The removed region stays mapped until the table is released. A region
   * added more than once is counted down instead: null, nothing changes.
   */
  mapRemoved(dv: DataView): MappedTable | null {
    const what = 'REM_MEM_REG';
    if (dv.byteLength < HEAD_BYTES + REGION_BYTES) throw new VhostUserError(`${what}: payload of ${dv.byteLength} bytes, needs ${HEAD_BYTES + REGION_BYTES}`);
    const o = HEAD_BYTES;
    const gpa = dv.getBigUint64(o, true);
    const size = dv.getBigUint64(o + 8, true);
    const userspace = dv.getBigUint64(o + 16, true);
    const inUse = this.table.regions;
    const k = inUse.findIndex((r) => r.gpa === gpa && r.size === size && r.userspace === userspace);
    if (k < 0) throw new VhostUserError(`${what}: no region at guest-physical 0x${gpa.toString(16)} of 0x${size.toString(16)} bytes at 0x${userspace.toString(16)}`);
    if (inUse[k]!.refs > 1) {
      inUse[k]!.refs--;
      return null;
    }
    return withGuest(inUse.filter((_, j) => j !== k), what);
  }

  // The region's fd is a regular file that holds all of the region.
  private checkFile(r: Region, i: number, what: string): void {
    const info = this.n.fdInfo(r.fd);
    if (typeof info === 'number') throw new VhostUserError(`${what}: region ${i}'s fd: fstat: ${errnoName(info)}`);
    if (info.kind !== 'file') throw new VhostUserError(`${what}: region ${i}'s fd is a ${info.kind}, not a file that can be mapped`);
    if (r.offset + r.size > BigInt(info.size)) {
      throw new VhostUserError(
        `${what}: region ${i} (0x${r.size.toString(16)} bytes at offset 0x${r.offset.toString(16)}) runs past the end of its file (${info.size} bytes)`,
      );
    }
  }

  // F_SEAL_SHRINK on the region's file when it has none; a log line when it cannot have one.
  private seal(r: Region, i: number): void {
    const seals = this.n.fdInfo(r.fd);
    if (typeof seals !== 'number' && seals.seals >= 0 && (seals.seals & F_SEAL_SHRINK) !== 0) return;
    const rc = this.n.sealShrink(r.fd);
    if (rc === 0) return;
    this.log(
      `region ${i}: its file can shrink (F_SEAL_SHRINK: ${errnoName(rc)}): a front-end that truncates it while it is mapped kills the back-end with SIGBUS (QEMU: memory-backend-memfd with seal=on avoids this)`,
    );
  }

  // Maps the region in views of at most VIEW_BYTES, each from a page boundary of the file.
  private mapRegion(r: Region, i: number, what: string): View[] {
    const views: View[] = [];
    try {
      for (let at = 0n; at < r.size; at += VIEW_BYTES) {
        const length = r.size - at < VIEW_BYTES ? r.size - at : VIEW_BYTES;
        const fileAt = r.offset + at;
        const pad = fileAt % PAGE;
        // Invariant: pad + length <= 2^31 + 4095, a length Node takes; fileAt - pad is page-aligned and below 2^51.
        const ab = this.n.mmapShared(r.fd, Number(pad + length), Number(fileAt - pad));
        if (typeof ab === 'number') throw new VhostUserError(`${what}: mapping region ${i} failed: mmap: ${errnoName(ab)}`);
        views.push({ gpa: r.gpa + at, buffer: ab, offset: Number(pad), length: Number(length) });
      }
      return views;
    } catch (err) {
      for (const v of views) this.n.unmap(v.buffer);
      throw err;
    }
  }

  /** Puts `next` in use and hands back the table it replaces, still mapped (the caller has stopped the device). */
  swap(next: MappedTable): MappedTable {
    const old = this.table;
    this.table = next;
    return old;
  }

  /**
   * Lets go of a table not in use: its native I/O regions, and the mappings
   * of its regions that `keep` (the table in use) does not share, closing
   * their fds when they are the table's (`ownFds`).
   */
  release(t: MappedTable, ownFds: boolean, keep: MappedTable = EMPTY): void {
    t.guest?.unregisterIo();
    const gone = t.regions.filter((r) => !keep.regions.includes(r));
    this.unmap(gone);
    if (ownFds) for (const r of gone) this.n.close(r.fd);
  }

  /** Regions in use. */
  get slotsUsed(): number {
    return this.table.regions.length;
  }

  private unmap(regions: readonly Mapped[]): void {
    for (const r of regions) for (const v of r.views) this.n.unmap(v.buffer);
  }

  /** A front-end virtual address to a guest-physical one; throws VhostUserError outside every region. */
  translate(va: bigint, len: number): number {
    for (const r of this.table.regions) {
      if (va >= r.userspace && va + BigInt(len) <= r.userspace + r.size) return Number(r.gpa + (va - r.userspace));
    }
    throw new VhostUserError(`ring address 0x${va.toString(16)} (${len} bytes) is in no memory region`);
  }

  /** Unmaps every region and closes its fd (the front-end went). */
  unmapAll(): void {
    this.release(this.swap(EMPTY), true);
  }
}

// The regions, after checking the count and the payload's and fds' sizes against it, and each region's numbers.
function checkTable(dv: DataView, fds: readonly number[]): Region[] {
  if (dv.byteLength < HEAD_BYTES) throw new VhostUserError('SET_MEM_TABLE: no region count');
  const n = dv.getUint32(0, true);
  if (n === 0 || n > VHOST_MEMORY_MAX_NREGIONS) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions (1 to ${VHOST_MEMORY_MAX_NREGIONS})`);
  const bytes = HEAD_BYTES + REGION_BYTES * n;
  if (dv.byteLength < bytes) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions need ${bytes} bytes, got ${dv.byteLength}`);
  if (fds.length !== n) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions but ${fds.length} fds`);
  return Array.from({ length: n }, (_, i) => region(dv, i, fds[i]!, 'SET_MEM_TABLE', i));
}

// Region i of the payload (`label`: its number in the log line).
function region(dv: DataView, i: number, fd: number, what: string, label: number): Region {
  const o = HEAD_BYTES + REGION_BYTES * i;
  const r = { gpa: dv.getBigUint64(o, true), size: dv.getBigUint64(o + 8, true), userspace: dv.getBigUint64(o + 16, true), offset: dv.getBigUint64(o + 24, true), fd };
  const why =
    r.size === 0n || r.size > MAX_REGION
      ? `its size is not 1 byte to ${MAX_REGION} bytes`
      : r.offset > MAX_OFFSET
        ? `its offset is past ${MAX_OFFSET}`
        : r.gpa + r.size > MAX_GPA
          ? `it ends past guest-physical 2^52`
          : r.userspace + r.size > U64_END
            ? 'its userspace address range wraps past 2^64'
            : null;
  if (why !== null) throw new VhostUserError(`${what}: region ${label} (gpa 0x${r.gpa.toString(16)}, size 0x${r.size.toString(16)}, offset 0x${r.offset.toString(16)}): ${why}`);
  return r;
}

// Two fds of one file (the same device and inode).
function sameFile(a: number, b: number): boolean {
  try {
    const x = fstatSync(a, { bigint: true });
    const y = fstatSync(b, { bigint: true });
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

// The guest's memory over the regions' views (null for none).
function withGuest(regions: Mapped[], what: string): MappedTable {
  if (regions.length === 0) return { regions, guest: null };
  const views = regions.flatMap((r) => r.views);
  try {
    return { regions, guest: new GuestMemory(views.map((v) => ({ gpa: Number(v.gpa), bytes: new Uint8Array(v.buffer, v.offset, v.length) }))) };
  } catch (err) {
    if (err instanceof GuestMemoryError) throw new VhostUserError(`${what}: ${err.message}`);
    throw err;
  }
}

function checkOverlap(regions: readonly Region[], what: string): void {
  const sorted = regions.map((r, i) => ({ ...r, i })).sort((a, b) => (a.gpa < b.gpa ? -1 : a.gpa > b.gpa ? 1 : 0));
  for (let k = 1; k < sorted.length; k++) {
    const a = sorted[k - 1]!;
    const b = sorted[k]!;
    if (b.gpa < a.gpa + a.size) {
      throw new VhostUserError(`${what}: regions ${a.i} and ${b.i} overlap at guest-physical 0x${b.gpa.toString(16)} (region ${a.i} ends at 0x${(a.gpa + a.size).toString(16)})`);
    }
  }
}
