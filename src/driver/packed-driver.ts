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
import { packedDescState, packedViews, storeAddress, type PackedViews } from '../virtio/ring-views.js';
import { AvailOrder, ChainBuilder } from './chain-builder.js';
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
  private readonly v: PackedViews;
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
  private readonly order: AvailOrder;
  private readonly chain: ChainBuilder;
  private batchLeft = 0;
  private batchLen = 0;

  constructor(mem: GuestMemory, addresses: QueueAddresses, options: DriverQueueOptions = {}) {
    const n = addresses.size;
    this.mem = mem;
    this.size = n;
    this.addresses = { ...addresses };
    this.o = { ...options };
    this.v = packedViews(mem, addresses);
    this.freeIds = new Uint16Array(n);
    this.token = new Float64Array(n);
    this.slots = new Uint16Array(n);
    this.outstanding = new Uint8Array(n);
    this.order = new AvailOrder(n);
    this.chain = new ChainBuilder(Math.max(n, options.indirectArea?.entries ?? 0));
    this.numFree = n;
    this.reset();
  }

  reset(): void {
    this.v.desc32.fill(0);
    this.v.driverEvent.fill(0);
    this.v.deviceEvent.fill(0);
    this.nextAvail = 0;
    this.availWrap = 1;
    this.nextUsed = 0;
    this.usedWrap = 1;
    this.published = 0;
    for (let i = 0; i < this.size; i++) this.freeIds[i] = this.size - 1 - i;
    this.freeCount = this.size;
    this.numFree = this.size;
    this.outstanding.fill(0);
    this.order.clear();
    this.batchLeft = 0;
    this.chain.begin();
  }

  beginChain(): void {
    this.chain.begin();
  }

  addSegment(addr: number, len: number, writable: boolean): boolean {
    return this.chain.add(addr, len, writable);
  }

  private availFlags(wrap: number): number {
    // §2.8: made available with AVAIL = the wrap counter, USED = its inverse.
    return wrap === 1 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  private writeDesc(i: number, addr: number, len: number, id: number): void {
    const { desc32, desc16 } = this.v;
    storeAddress(desc32, i * 4, addr);
    desc32[i * 4 + 2] = len;
    desc16[i * 8 + 6] = id;
  }

  commitChain(token: number, indirect = false): number {
    const c = this.chain;
    const n = c.count;
    if (n === 0 || this.freeCount === 0) return -1;
    const area = this.o.indirectArea;
    if (indirect && (area === undefined || n > area.entries)) return -1;
    const ringSlots = indirect ? 1 : n;
    if (ringSlots > this.numFree) return -1;
    const id = this.freeIds[--this.freeCount] as number;
    const headIdx = this.nextAvail;
    let headFlags = 0;
    if (indirect && area !== undefined) {
      const table = area.addr + id * area.entries * 16;
      const t = this.mem.view(table, n * 16);
      const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
      for (let s = 0; s < n; s++) {
        const a = c.addr[s] as number;
        dv.setUint32(s * 16, a % 0x1_0000_0000, true);
        dv.setUint32(s * 16 + 4, Math.floor(a / 0x1_0000_0000), true);
        dv.setUint32(s * 16 + 8, c.len[s] as number, true);
        dv.setUint16(s * 16 + 12, 0, true);
        dv.setUint16(s * 16 + 14, c.writable[s] === 1 ? VIRTQ_DESC_F_WRITE : 0, true);
      }
      this.writeDesc(headIdx, table, n * 16, id);
      headFlags = VIRTQ_DESC_F_INDIRECT | this.availFlags(this.availWrap);
      this.advance();
    } else {
      for (let s = 0; s < n; s++) {
        const i = this.nextAvail;
        const flags = (s < n - 1 ? VIRTQ_DESC_F_NEXT : 0) | (c.writable[s] === 1 ? VIRTQ_DESC_F_WRITE : 0) | this.availFlags(this.availWrap);
        this.writeDesc(i, c.addr[s] as number, c.len[s] as number, id);
        if (s === 0) headFlags = flags;
        else this.v.desc16[i * 8 + 7] = flags;
        this.advance();
      }
    }
    // VIRTIO 1.2 §2.8, "Updating flags": the head's flags last, so the device never sees a partial chain.
    Atomics.store(this.v.desc16, headIdx * 8 + 7, headFlags);
    this.token[id] = token;
    this.slots[id] = ringSlots;
    this.outstanding[id] = 1;
    this.numFree -= ringSlots;
    this.order.push(id);
    this.stats.added++;
    c.begin();
    return id;
  }

  private advance(): void {
    if (++this.nextAvail === this.size) {
      this.nextAvail = 0;
      this.availWrap ^= 1;
    }
  }

  publish(): boolean {
    const now = foldPosition(this.size, this.nextAvail, this.availWrap);
    const old = this.published;
    if (now === old) return false;
    this.published = now;
    const flags = Atomics.load(this.v.deviceEvent, 1) & 3;
    let kick: boolean;
    if (flags === RING_EVENT_FLAGS_DISABLE) kick = false;
    else if (flags === RING_EVENT_FLAGS_DESC && this.o.eventIdx === true) {
      kick = packedNeedEvent(this.size, Atomics.load(this.v.deviceEvent, 0), now, old);
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
    if (packedDescState(this.v.desc16, i, this.usedWrap) !== 2) return -1;
    const id = this.v.desc16[i * 8 + 6] as number;
    const len = this.v.desc32[i * 4 + 2] as number;
    if (id >= this.size || this.outstanding[id] !== 1) {
      throw new DriverError(`device returned used id ${id}, which is not an outstanding buffer (queue size ${this.size})`);
    }
    if (this.o.inOrder === true) {
      // VIRTIO 1.2 §2.8, "In-order use of descriptors": one used descriptor may stand for every buffer up to it.
      const k = this.order.countThrough(id);
      let skip = 0;
      for (let j = 0; j < k; j++) skip += this.slots[this.order.at(j)] as number;
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
    this.batchLeft--;
    this.usedLen = this.batchLen;
    return this.release(this.order.at(0));
  }

  private release(id: number): number {
    this.order.remove(id);
    this.numFree += this.slots[id] as number;
    this.freeIds[this.freeCount++] = id;
    this.outstanding[id] = 0;
    this.stats.reaped++;
    return this.token[id] as number;
  }

  disableInterrupts(): void {
    Atomics.store(this.v.driverEvent, 1, RING_EVENT_FLAGS_DISABLE);
  }

  enableInterrupts(): boolean {
    if (this.o.eventIdx === true) {
      Atomics.store(this.v.driverEvent, 0, this.nextUsed | (this.usedWrap << 15));
      Atomics.store(this.v.driverEvent, 1, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(this.v.driverEvent, 1, RING_EVENT_FLAGS_ENABLE);
    }
    return this.batchLeft > 0 || packedDescState(this.v.desc16, this.nextUsed, this.usedWrap) === 2;
  }
}
