// Packed virtqueue, driver side (VIRTIO 1.2 §2.8).
import {
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from '../virtio/constants.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import { foldPosition, packedNeedEvent } from '../virtio/packed-queue.js';
import type { QueueAddresses } from '../virtio/queue.js';
import { ringView } from '../virtio/split-queue.js';
import { DriverError, type DriverQueue, type DriverQueueOptions, type DriverStats } from './driver-queue.js';

export class PackedDriver implements DriverQueue {
  readonly layout = 'packed';
  readonly size: number;
  readonly addresses: QueueAddresses;
  readonly stats: DriverStats = { added: 0, reaped: 0, kicks: 0, kicksSuppressed: 0 };
  usedLen = 0;
  numFree: number;
  private readonly mem: GuestMemory;
  private readonly o: DriverQueueOptions;
  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  private readonly driverEvent: Uint16Array;
  private readonly deviceEvent: Uint16Array;
  private nextAvail = 0;
  private availWrap = 1;
  private nextUsed = 0;
  private usedWrap = 1;
  private published = 0;
  private readonly freeIds: Uint16Array;
  private freeCount = 0;
  private readonly token: Float64Array;
  private readonly slots: Uint16Array;
  private readonly outstanding: Uint8Array;
  private readonly fifo: Uint16Array;
  private fifoHead = 0;
  private fifoLen = 0;
  private batchLeft = 0;
  private batchLen = 0;
  private readonly segAddr: Float64Array;
  private readonly segLen: Uint32Array;
  private readonly segWrite: Uint8Array;
  private segs = 0;

  constructor(mem: GuestMemory, addresses: QueueAddresses, options: DriverQueueOptions = {}) {
    const n = addresses.size;
    this.mem = mem;
    this.size = n;
    this.addresses = { ...addresses };
    this.o = { ...options };
    this.desc32 = ringView(mem, addresses.desc, 16 * n, Uint32Array, 'descriptor ring');
    this.desc16 = new Uint16Array(this.desc32.buffer, this.desc32.byteOffset, 8 * n);
    this.driverEvent = ringView(mem, addresses.driver, 4, Uint16Array, 'driver event suppression area');
    this.deviceEvent = ringView(mem, addresses.device, 4, Uint16Array, 'device event suppression area');
    this.freeIds = new Uint16Array(n);
    this.token = new Float64Array(n);
    this.slots = new Uint16Array(n);
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
    this.driverEvent.fill(0);
    this.deviceEvent.fill(0);
    this.nextAvail = 0;
    this.availWrap = 1;
    this.nextUsed = 0;
    this.usedWrap = 1;
    this.published = 0;
    for (let i = 0; i < this.size; i++) this.freeIds[i] = this.size - 1 - i;
    this.freeCount = this.size;
    this.numFree = this.size;
    this.outstanding.fill(0);
    this.fifoHead = 0;
    this.fifoLen = 0;
    this.batchLeft = 0;
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

  private availFlags(wrap: number): number {
    // §2.8, "Driver and Device Ring Wrap Counters": made available with AVAIL = wrap counter, USED = its inverse.
    return wrap === 1 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  private writeDesc(i: number, addr: number, len: number, id: number): void {
    this.desc32[i * 4] = addr % 0x1_0000_0000;
    this.desc32[i * 4 + 1] = Math.floor(addr / 0x1_0000_0000);
    this.desc32[i * 4 + 2] = len;
    this.desc16[i * 8 + 6] = id;
  }

  commitChain(token: number, indirect = false): number {
    const n = this.segs;
    if (n === 0 || this.freeCount === 0) return -1;
    const area = this.o.indirectArea;
    if (indirect && (area === undefined || n > area.entries)) return -1;
    const ringSlots = indirect ? 1 : n;
    if (ringSlots > this.numFree) return -1;
    const id = this.freeIds[--this.freeCount] as number;
    const headIdx = this.nextAvail;
    const headWrap = this.availWrap;
    let headFlags: number;
    if (indirect && area !== undefined) {
      const table = area.addr + id * area.entries * 16;
      const t = this.mem.view(table, n * 16);
      const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
      for (let s = 0; s < n; s++) {
        const a = this.segAddr[s] as number;
        dv.setUint32(s * 16, a % 0x1_0000_0000, true);
        dv.setUint32(s * 16 + 4, Math.floor(a / 0x1_0000_0000), true);
        dv.setUint32(s * 16 + 8, this.segLen[s] as number, true);
        dv.setUint16(s * 16 + 12, 0, true);
        dv.setUint16(s * 16 + 14, this.segWrite[s] === 1 ? VIRTQ_DESC_F_WRITE : 0, true);
      }
      this.writeDesc(headIdx, table, n * 16, id);
      headFlags = VIRTQ_DESC_F_INDIRECT | this.availFlags(headWrap);
      this.advance(1);
    } else {
      headFlags = 0;
      for (let s = 0; s < n; s++) {
        const i = this.nextAvail;
        const flags = (s < n - 1 ? VIRTQ_DESC_F_NEXT : 0) | (this.segWrite[s] === 1 ? VIRTQ_DESC_F_WRITE : 0) | this.availFlags(this.availWrap);
        this.writeDesc(i, this.segAddr[s] as number, this.segLen[s] as number, id);
        if (s === 0) headFlags = flags;
        else this.desc16[i * 8 + 7] = flags;
        this.advance(1);
      }
    }
    // VIRTIO 1.2 §2.8, "Updating flags": the head's flags last, so the device never sees a partial chain.
    Atomics.store(this.desc16, headIdx * 8 + 7, headFlags);
    this.token[id] = token;
    this.slots[id] = ringSlots;
    this.outstanding[id] = 1;
    this.numFree -= ringSlots;
    this.fifo[(this.fifoHead + this.fifoLen) % this.size] = id;
    this.fifoLen++;
    this.stats.added++;
    this.segs = 0;
    return id;
  }

  private advance(k: number): void {
    this.nextAvail += k;
    if (this.nextAvail >= this.size) {
      this.nextAvail -= this.size;
      this.availWrap ^= 1;
    }
  }

  publish(): boolean {
    const now = foldPosition(this.size, this.nextAvail, this.availWrap);
    const old = this.published;
    if (now === old) return false;
    this.published = now;
    const flags = Atomics.load(this.deviceEvent, 1) & 3;
    let kick: boolean;
    if (flags === RING_EVENT_FLAGS_DISABLE) kick = false;
    else if (flags === RING_EVENT_FLAGS_DESC && this.o.eventIdx === true) {
      kick = packedNeedEvent(this.size, Atomics.load(this.deviceEvent, 0), now, old);
    } else kick = true;
    if (kick) {
      this.stats.kicks++;
      this.o.onKick?.();
    } else this.stats.kicksSuppressed++;
    return kick;
  }

  popUsed(): number {
    if (this.batchLeft > 0) return this.takeFromBatch();
    const i = this.nextUsed;
    const flags = Atomics.load(this.desc16, i * 8 + 7);
    const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0;
    const used = (flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0;
    if (avail !== this.usedWrap || used !== this.usedWrap) return -1;
    const id = this.desc16[i * 8 + 6] as number;
    const len = this.desc32[i * 4 + 2] as number;
    if (id >= this.size || this.outstanding[id] !== 1) {
      throw new DriverError(`device returned used id ${id}, which is not an outstanding buffer (queue size ${this.size})`);
    }
    if (this.o.inOrder === true) {
      // VIRTIO 1.2 §2.8, "In-order use of descriptors": one used descriptor may stand for every buffer up to it.
      let k = 0;
      let skip = 0;
      while (k < this.fifoLen) {
        const f = this.fifo[(this.fifoHead + k) % this.size] as number;
        skip += this.slots[f] as number;
        k++;
        if (f === id) break;
      }
      this.moveUsed(skip);
      this.batchLeft = k;
      this.batchLen = len;
      return this.takeFromBatch();
    }
    this.moveUsed(this.slots[id] as number);
    this.usedLen = len;
    return this.release(id);
  }

  private moveUsed(k: number): void {
    this.nextUsed += k;
    while (this.nextUsed >= this.size) {
      this.nextUsed -= this.size;
      this.usedWrap ^= 1;
    }
  }

  private takeFromBatch(): number {
    const id = this.fifo[this.fifoHead] as number;
    this.batchLeft--;
    this.usedLen = this.batchLen;
    return this.release(id);
  }

  private release(id: number): number {
    if (this.fifo[this.fifoHead] === id) {
      this.fifoHead = (this.fifoHead + 1) % this.size;
      this.fifoLen--;
    } else {
      for (let k = 1; k < this.fifoLen; k++) {
        if (this.fifo[(this.fifoHead + k) % this.size] === id) {
          for (let j = k; j > 0; j--) this.fifo[(this.fifoHead + j) % this.size] = this.fifo[(this.fifoHead + j - 1) % this.size] as number;
          this.fifoHead = (this.fifoHead + 1) % this.size;
          this.fifoLen--;
          break;
        }
      }
    }
    this.numFree += this.slots[id] as number;
    this.freeIds[this.freeCount++] = id;
    this.outstanding[id] = 0;
    this.stats.reaped++;
    return this.token[id] as number;
  }

  disableInterrupts(): void {
    Atomics.store(this.driverEvent, 1, RING_EVENT_FLAGS_DISABLE);
  }

  enableInterrupts(): boolean {
    if (this.o.eventIdx === true) {
      Atomics.store(this.driverEvent, 0, this.nextUsed | (this.usedWrap << 15));
      Atomics.store(this.driverEvent, 1, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(this.driverEvent, 1, RING_EVENT_FLAGS_ENABLE);
    }
    if (this.batchLeft > 0) return true;
    const flags = Atomics.load(this.desc16, this.nextUsed * 8 + 7);
    return ((flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0) === this.usedWrap && ((flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0) === this.usedWrap;
  }
}
