// v86's guest RAM as a GuestMemory. It is a view over v86's wasm memory,
// whose buffer is replaced each time that memory grows (several times per
// boot): check() notices, builds the views afresh and moves the device's
// queues onto them (re-registering them with the native layer). And since
// v86 compiles guest code to wasm, pages the device writes must drop what
// was compiled from them: dirty() tells v86 about what the used rings say
// the device filled (split ring), or about all of RAM (packed ring).
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../virtio/constants.js';
import type { VirtioDeviceCore } from '../virtio/device.js';
import { GuestMemory } from '../virtio/guest-memory.js';
import type { DeviceQueue } from '../virtio/queue.js';
import type { V86Cpu } from './v86-api.js';


export interface GuestRamStats {
  /** Times v86's memory buffer was replaced, and how many of those found queues active. */
  replaced: number;
  movedWithQueues: number;
  /** jit_dirty_cache calls, and the bytes they covered. */
  dirtyCalls: number;
  dirtyBytes: number;
}

export class V86GuestRam {
  memory: GuestMemory;
  readonly stats: GuestRamStats = { replaced: 0, movedWithQueues: 0, dirtyCalls: 0, dirtyBytes: 0 };
  /** Called with the new memory after a replacement (the transport takes it for queues enabled later). */
  onReplaced: ((m: GuestMemory) => void) | null = null;
  private readonly cpu: V86Cpu;
  private buffer: ArrayBuffer;
  private device: VirtioDeviceCore | null = null;
  // Per queue: the ring object last scanned and the used index seen in it.
  private readonly seen = new Map<number, { q: DeviceQueue; used: number }>();

  constructor(cpu: V86Cpu) {
    this.cpu = cpu;
    this.buffer = cpu.wasm_memory.buffer;
    this.memory = this.build();
  }

  /** The device whose queues follow the memory. */
  follow(device: VirtioDeviceCore): void {
    this.device = device;
  }

  private build(): GuestMemory {
    const m8 = this.cpu.mem8;
    return new GuestMemory([{ gpa: 0, bytes: new Uint8Array(this.cpu.wasm_memory.buffer, m8.byteOffset, m8.length) }]);
  }

  /** True (and everything moved) when v86's buffer was replaced since the last check. Cheap otherwise. */
  check(): boolean {
    const now = this.cpu.wasm_memory.buffer;
    if (now === this.buffer) return false;
    this.buffer = now;
    this.memory = this.build();
    this.stats.replaced++;
    const dev = this.device;
    if (dev !== null && dev.queues.some((q) => q !== null)) {
      this.stats.movedWithQueues++;
      dev.moveMemory(this.memory);
    }
    this.onReplaced?.(this.memory);
    return true;
  }

  /** Tells v86 which guest pages the device wrote since the last call. */
  dirty(): void {
    const dev = this.device;
    if (dev === null) return;
    dev.queues.forEach((q, i) => {
      if (q === null) {
        this.seen.delete(i);
        return;
      }
      if (q.layout === 'packed') {
        if (q.stats.chains !== (this.seen.get(i)?.used ?? 0)) this.mark(0, this.memory.regions[0]!.size);
        this.seen.set(i, { q, used: q.stats.chains });
        return;
      }
      this.dirtySplit(i, q);
    });
  }

  private dirtySplit(i: number, q: DeviceQueue): void {
    const { size, desc, device } = q.addresses;
    const mem = this.memory;
    const usedIdx = mem.u16le(device + 2);
    const last = this.seen.get(i);
    let from = last !== undefined && last.q === q ? last.used : usedIdx;
    this.seen.set(i, { q, used: usedIdx });
    if (usedIdx < 0 || from === usedIdx) return;
    this.mark(device, 4 + 8 * size);
    // Each used entry's chain: its device-writable buffers are what the device filled (§2.7.8).
    const bytes = mem.regions[0]!.bytes;
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let n = 0; from !== usedIdx && n < size; n++, from = (from + 1) & 0xffff) {
      this.markChain(dv, desc, size, dv.getUint32(device + 4 + 8 * (from % size), true), true);
    }
  }

  // A chain's device-writable buffers; an indirect descriptor's table is walked the same way, once.
  private markChain(dv: DataView, table: number, entries: number, head: number, mayIndirect: boolean): void {
    let id = head;
    for (let hops = 0; hops < entries && id < entries; hops++) {
      const d = table + 16 * id;
      if (d + 16 > dv.byteLength) return;
      const flags = dv.getUint16(d + 12, true);
      const addr = Number(dv.getBigUint64(d, true));
      const len = dv.getUint32(d + 8, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (mayIndirect) this.markChain(dv, addr, Math.floor(len / 16), 0, false);
        return;
      }
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) this.mark(addr, len);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return;
      id = dv.getUint16(d + 14, true);
    }
  }

  private mark(start: number, len: number): void {
    const end = Math.min(start + len, this.memory.regions[0]!.size);
    if (start >= end) return;
    this.stats.dirtyCalls++;
    this.stats.dirtyBytes += end - start;
    this.cpu.jit_dirty_cache(start, end);
  }
}
