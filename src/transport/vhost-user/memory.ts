// The front-end's memory table (SET_MEM_TABLE, vhost-user.rst "Memory
// regions"): each region a file mapped shared, the whole of it from offset 0,
// the region starting at its mmap_offset. The table translates the
// front-end's virtual addresses (ring addresses) to guest-physical ones.
import { native } from '../../host/binding.js';
import { errnoName } from '../../host/errors.js';
import { GuestMemory } from '../../virtio/guest-memory.js';
import { VHOST_MEMORY_MAX_NREGIONS, VhostUserError } from './protocol.js';

interface Mapped {
  gpa: bigint;
  size: bigint;
  userspace: bigint;
  /** Where the region starts in the mapping (mmap_offset). */
  offset: number;
  buffer: ArrayBuffer;
  fd: number;
}

/** A table mapped but not yet in use (see MemoryTable.replace). */
export interface MappedTable {
  readonly regions: readonly Mapped[];
  readonly guest: GuestMemory;
}

/** Bytes of one region in the payload: guest_phys_addr, memory_size, userspace_addr, mmap_offset. */
const REGION_BYTES = 32;
/** The payload's head: nregions (u32) and padding. */
const HEAD_BYTES = 8;

export class MemoryTable {
  private readonly n = native();
  private regions: readonly Mapped[] = [];
  private guestMemory: GuestMemory | null = null;

  /** The guest's memory, or null before the first table. */
  get guest(): GuestMemory | null {
    return this.guestMemory;
  }

  /**
   * Checks and maps a SET_MEM_TABLE payload; the table owns the fds once it
   * is in use. Throws VhostUserError with every mapping undone (the fds stay
   * the message's: a refused message's fds are closed with it).
   */
  map(dv: DataView, fds: readonly number[]): MappedTable {
    const n = checkTable(dv, fds);
    const mapped: Mapped[] = [];
    try {
      for (let i = 0; i < n; i++) mapped.push(this.mapRegion(dv, i, fds[i]!));
      const guest = new GuestMemory(mapped.map((r) => ({ gpa: Number(r.gpa), bytes: new Uint8Array(r.buffer, r.offset, Number(r.size)) })));
      return { regions: mapped, guest };
    } catch (err) {
      for (const r of mapped) this.n.unmap(r.buffer);
      throw err;
    }
  }

  private mapRegion(dv: DataView, i: number, fd: number): Mapped {
    const o = HEAD_BYTES + REGION_BYTES * i;
    const gpa = dv.getBigUint64(o, true);
    const size = dv.getBigUint64(o + 8, true);
    const userspace = dv.getBigUint64(o + 16, true);
    const offset = dv.getBigUint64(o + 24, true);
    if (size === 0n || size > 1n << 40n || offset > 1n << 40n || gpa + size > 1n << 52n) {
      throw new VhostUserError(`SET_MEM_TABLE: region ${i} (gpa 0x${gpa.toString(16)}, size 0x${size.toString(16)}) out of range`);
    }
    const ab = this.n.mmapShared(fd, Number(size + offset), 0);
    if (typeof ab === 'number') throw new VhostUserError(`SET_MEM_TABLE: mapping region ${i} failed: mmap: ${errnoName(ab)}`);
    return { gpa, size, userspace, offset: Number(offset), buffer: ab, fd };
  }

  /** Unmaps the table in use (the caller has stopped the device) and uses `next`. */
  replace(next: MappedTable): void {
    this.unmapAll();
    this.regions = next.regions;
    this.guestMemory = next.guest;
  }

  /** A front-end virtual address to a guest-physical one; throws VhostUserError outside every region. */
  translate(va: bigint, len: number): number {
    for (const r of this.regions) {
      if (va >= r.userspace && va + BigInt(len) <= r.userspace + r.size) return Number(r.gpa + (va - r.userspace));
    }
    throw new VhostUserError(`ring address 0x${va.toString(16)} (${len} bytes) is in no memory region`);
  }

  /** Unmaps every region and closes its fd (the front-end went, or a new table came). */
  unmapAll(): void {
    this.guestMemory?.unregisterIo();
    for (const r of this.regions) {
      this.n.unmap(r.buffer);
      this.n.close(r.fd);
    }
    this.regions = [];
    this.guestMemory = null;
  }
}

// The region count, after checking it and the payload's and fds' sizes against it.
function checkTable(dv: DataView, fds: readonly number[]): number {
  if (dv.byteLength < HEAD_BYTES) throw new VhostUserError('SET_MEM_TABLE: no region count');
  const n = dv.getUint32(0, true);
  if (n === 0 || n > VHOST_MEMORY_MAX_NREGIONS) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions (1 to ${VHOST_MEMORY_MAX_NREGIONS})`);
  const bytes = HEAD_BYTES + REGION_BYTES * n;
  if (dv.byteLength < bytes) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions need ${bytes} bytes, got ${dv.byteLength}`);
  if (fds.length !== n) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions but ${fds.length} fds`);
  return n;
}
