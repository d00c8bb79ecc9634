// Split virtqueue, driver side (VIRTIO 1.2 §2.7): lays out the rings in guest
// memory, adds plain and indirect chains, publishes, kicks, reaps.
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from '../virtio/constants.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import type { QueueAddresses } from '../virtio/queue.js';
import { needEvent, ringView } from '../virtio/split-queue.js';
import { DriverError, type DriverQueue, type DriverQueueOptions, type DriverStats } from './driver-queue.js';

export class SplitDriver implements DriverQueue {
  readonly layout = 'split';
  readonly size: number;
  readonly addresses: QueueAddresses;
  readonly stats: DriverStats = { added: 0, reaped: 0, kicks: 0, kicksSuppressed: 0 };
  usedLen = 0;
  numFree: number;
  private readonly mem: GuestMemory;
  private readonly o: DriverQueueOptions;
  private readonly mask: number;
  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  private readonly avail: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  /** Chain links and the free list share one array, as the ring's next fields do. */
  private readonly next: Uint16Array;
  private freeHead = 0;
  private readonly token: Float64Array;
  private readonly chainDescs: Uint16Array;
  private readonly outstanding: Uint8Array;
  /** Heads in the order they were made available (for IN_ORDER batches). */
  private readonly fifo: Uint16Array;
  private fifoHead = 0;
  private fifoLen = 0;
  private batchLeft = 0;
  private batchLen = 0;
  private availIdx = 0;
  private publishedAvail = 0;
  private lastUsed = 0;
  // The chain being built.
  private readonly segAddr: Float64Array;
  private readonly segLen: Uint32Array;
  private readonly segWrite: Uint8Array;
  private segs = 0;

  constructor(mem: GuestMemory, addresses: QueueAddresses, options: DriverQueueOptions = {}) {
    const n = addresses.size;
    this.mem = mem;
    this.size = n;
    this.mask = n - 1;
    this.addresses = { ...addresses };
    this.o = { ...options };
    this.desc32 = ringView(mem, addresses.desc, 16 * n, Uint32Array, 'descriptor table');
    this.desc16 = new Uint16Array(this.desc32.buffer, this.desc32.byteOffset, 8 * n);
    this.avail = ringView(mem, addresses.driver, 2 * (n + 3), Uint16Array, 'available ring');
    this.used16 = ringView(mem, addresses.device, 4 + 8 * n + 2, Uint16Array, 'used ring');
    this.used32 = ringView(mem, addresses.device, 4 + 8 * n, Uint32Array, 'used ring');
    this.next = new Uint16Array(n);
    this.token = new Float64Array(n);
    this.chainDescs = new Uint16Array(n);
    this.outstanding = new Uint8Array(n);
    this.fifo = new Uint16Array(n);
    const maxSegs = Math.max(n, options.indirectArea?.entries ?? 0);
    this.segAddr = new Float64Array(maxSegs);
    this.segLen = new Uint32Array(maxSegs);
    this.segWrite = new Uint8Array(maxSegs);
    this.numFree = n;
    this.reset();
  }

  reset(): void {
    this.desc32.fill(0);
    this.avail.fill(0);
    this.used16.fill(0);
    for (let i = 0; i < this.size; i++) this.next[i] = i + 1;
    this.freeHead = 0;
    this.numFree = this.size;
    this.outstanding.fill(0);
    this.fifoHead = 0;
    this.fifoLen = 0;
    this.batchLeft = 0;
    this.availIdx = 0;
    this.publishedAvail = 0;
    this.lastUsed = 0;
    this.segs = 0;
  }

  beginChain(): void {
    this.segs = 0;
  }

  addSegment(addr: number, len: number, writable: boolean): boolean {
    if (this.segs >= this.segAddr.length) return false;
    this.segAddr[this.segs] = addr;
    this.segLen[this.segs] = len;
    this.segWrite[this.segs] = writable ? 1 : 0;
    this.segs++;
    return true;
  }

  private writeDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    this.desc32[i * 4] = addr % 0x1_0000_0000;
    this.desc32[i * 4 + 1] = Math.floor(addr / 0x1_0000_0000);
    this.desc32[i * 4 + 2] = len;
    this.desc16[i * 8 + 6] = flags;
    this.desc16[i * 8 + 7] = next;
  }

  commitChain(token: number, indirect = false): number {
    const n = this.segs;
    if (n === 0) return -1;
    if (indirect) return this.commitIndirect(token);
    if (n > this.numFree) return -1;
    const head = this.freeHead;
    let i = head;
    for (let s = 0; s < n; s++) {
      const last = s === n - 1;
      const nxt = this.next[i] as number;
      const flags = (last ? 0 : VIRTQ_DESC_F_NEXT) | (this.segWrite[s] === 1 ? VIRTQ_DESC_F_WRITE : 0);
      this.writeDesc(i, this.segAddr[s] as number, this.segLen[s] as number, flags, last ? 0 : nxt);
      if (last) this.freeHead = nxt;
      else i = nxt;
    }
    this.numFree -= n;
    return this.makeAvailable(head, n, token);
  }

  private commitIndirect(token: number): number {
    const area = this.o.indirectArea;
    const n = this.segs;
    if (area === undefined || n > area.entries || this.numFree < 1) return -1;
    const head = this.freeHead;
    this.freeHead = this.next[head] as number;
    this.numFree--;
    const table = area.addr + head * area.entries * 16;
    const t = this.mem.view(table, n * 16);
    const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
    for (let s = 0; s < n; s++) {
      const last = s === n - 1;
      const a = this.segAddr[s] as number;
      dv.setUint32(s * 16, a % 0x1_0000_0000, true);
      dv.setUint32(s * 16 + 4, Math.floor(a / 0x1_0000_0000), true);
      dv.setUint32(s * 16 + 8, this.segLen[s] as number, true);
      dv.setUint16(s * 16 + 12, (last ? 0 : VIRTQ_DESC_F_NEXT) | (this.segWrite[s] === 1 ? VIRTQ_DESC_F_WRITE : 0), true);
      dv.setUint16(s * 16 + 14, last ? 0 : s + 1, true);
    }
    this.writeDesc(head, table, n * 16, VIRTQ_DESC_F_INDIRECT, 0);
    return this.makeAvailable(head, 1, token);
  }

  private makeAvailable(head: number, descs: number, token: number): number {
    this.token[head] = token;
    this.chainDescs[head] = descs;
    this.outstanding[head] = 1;
    this.avail[2 + (this.availIdx & this.mask)] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.fifo[(this.fifoHead + this.fifoLen) % this.size] = head;
    this.fifoLen++;
    this.stats.added++;
    this.segs = 0;
    return head;
  }

  publish(): boolean {
    const old = this.publishedAvail;
    const now = this.availIdx;
    if (old === now) return false;
    Atomics.store(this.avail, 1, now); // release: ring entries before the index
    this.publishedAvail = now;
    const kick = this.o.eventIdx === true
      ? needEvent(Atomics.load(this.used16, 2 + 4 * this.size), now, old) // avail_event (§2.7, "Available Buffer Notification Suppression")
      : (Atomics.load(this.used16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
    if (kick) {
      this.stats.kicks++;
      this.o.onKick?.();
    } else this.stats.kicksSuppressed++;
    return kick;
  }

  popUsed(): number {
    if (this.batchLeft > 0) return this.takeFromBatch();
    if (Atomics.load(this.used16, 1) === this.lastUsed) return -1;
    const slot = this.lastUsed & this.mask;
    const id = this.used32[1 + slot * 2] as number;
    const len = this.used32[2 + slot * 2] as number;
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    if (id >= this.size || this.outstanding[id] !== 1) {
      throw new DriverError(`device returned used id ${id}, which is not an outstanding chain (queue size ${this.size})`);
    }
    if (this.o.inOrder === true) {
      // VIRTIO 1.2 §2.7, "In-order use of descriptors": one used entry may stand for every buffer up to it.
      let k = 0;
      while (k < this.fifoLen && this.fifo[(this.fifoHead + k) % this.size] !== id) k++;
      this.batchLeft = k + 1;
      this.batchLen = len;
      return this.takeFromBatch();
    }
    this.usedLen = len;
    return this.release(id);
  }

  private takeFromBatch(): number {
    const id = this.fifo[this.fifoHead] as number;
    this.batchLeft--;
    this.usedLen = this.batchLen; // only the last of a batch has a meaningful length
    return this.release(id);
  }

  private release(id: number): number {
    // Drop id from the in-order FIFO (it is at the front when completions are in order).
    if (this.fifo[this.fifoHead] === id) {
      this.fifoHead = (this.fifoHead + 1) % this.size;
      this.fifoLen--;
    } else {
      for (let k = 1; k < this.fifoLen; k++) {
        const at = (this.fifoHead + k) % this.size;
        if (this.fifo[at] === id) {
          for (let j = k; j > 0; j--) this.fifo[(this.fifoHead + j) % this.size] = this.fifo[(this.fifoHead + j - 1) % this.size] as number;
          this.fifoHead = (this.fifoHead + 1) % this.size;
          this.fifoLen--;
          break;
        }
      }
    }
    const descs = this.chainDescs[id] as number;
    let tail = id;
    for (let s = 1; s < descs; s++) tail = this.next[tail] as number;
    this.next[tail] = this.freeHead;
    this.freeHead = id;
    this.numFree += descs;
    this.outstanding[id] = 0;
    this.stats.reaped++;
    return this.token[id] as number;
  }

  disableInterrupts(): void {
    if (this.o.eventIdx !== true) this.avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
  }

  enableInterrupts(): boolean {
    if (this.o.eventIdx === true) Atomics.store(this.avail, 2 + this.size, this.lastUsed); // used_event
    else Atomics.store(this.avail, 0, 0);
    return this.batchLeft > 0 || Atomics.load(this.used16, 1) !== this.lastUsed;
  }

  /** Sets used_event explicitly (event index), e.g. to be interrupted only after n more. */
  setUsedEvent(idx: number): void {
    Atomics.store(this.avail, 2 + this.size, idx & 0xffff);
  }
}
