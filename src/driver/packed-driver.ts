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
import { packedDecide, type PackedSignal } from '../virtio/packed-queue.js';
import type { QueueAddresses } from '../virtio/queue.js';
import { packedDescState, packedViews, storeAddress, type PackedViews } from '../virtio/ring-views.js';
import type { DriverQueue, DriverQueueOptions } from './driver-queue.js';
import { DriverRing } from './driver-ring.js';

export class PackedDriver extends DriverRing implements DriverQueue {
  readonly layout = 'packed';
  private readonly v: PackedViews;
  private nextAvail = 0;
  private availWrap = 1;
  private nextUsed = 0;
  private usedWrap = 1;
  private readonly freeIds: Uint16Array;
  private freeCount = 0;
  /** The available position at the last publish, and what it read from the device's event area. */
  private readonly signal: PackedSignal = { last: 0, flags: 0, offWrap: -1 };

  constructor(mem: GuestMemory, addresses: QueueAddresses, options: DriverQueueOptions = {}) {
    super(mem, addresses, options);
    this.v = packedViews(mem, addresses);
    this.freeIds = new Uint16Array(this.size);
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
    this.signal.last = 0;
    for (let i = 0; i < this.size; i++) this.freeIds[i] = this.size - 1 - i;
    this.freeCount = this.size;
    this.resetBuffers();
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
    const n = this.chain.count;
    if (n === 0 || this.freeCount === 0) return -1;
    const ringSlots = indirect ? 1 : n;
    if (ringSlots > this.numFree) return -1;
    const id = this.freeIds[this.freeCount - 1] as number;
    const headIdx = this.nextAvail;
    let headFlags: number;
    if (indirect) {
      const table = this.writeIndirect(id, false);
      if (table < 0) return -1;
      this.writeDesc(headIdx, table, n * 16, id);
      headFlags = VIRTQ_DESC_F_INDIRECT | this.availFlags(this.availWrap);
      this.advance();
    } else headFlags = this.writeDirect(id);
    this.freeCount--;
    // VIRTIO 1.2 §2.8, "Updating flags": the head's flags last, so the device never sees a partial chain.
    Atomics.store(this.v.desc16, headIdx * 8 + 7, headFlags);
    this.markAvailable(id, token, ringSlots);
    return id;
  }

  /** Writes the chain being built into the ring as buffer `id`, all flags but the head's; returns the head's. */
  private writeDirect(id: number): number {
    const c = this.chain;
    const n = c.count;
    let headFlags = 0;
    for (let s = 0; s < n; s++) {
      const i = this.nextAvail;
      const flags = (s < n - 1 ? VIRTQ_DESC_F_NEXT : 0) | (c.writable[s] === 1 ? VIRTQ_DESC_F_WRITE : 0) | this.availFlags(this.availWrap);
      this.writeDesc(i, c.addr[s] as number, c.len[s] as number, id);
      if (s === 0) headFlags = flags;
      else this.v.desc16[i * 8 + 7] = flags;
      this.advance();
    }
    return headFlags;
  }

  private advance(): void {
    if (++this.nextAvail === this.size) {
      this.nextAvail = 0;
      this.availWrap ^= 1;
    }
  }

  publish(): boolean {
    const d = packedDecide(this.size, this.nextAvail, this.availWrap, this.v.deviceEvent, this.o.eventIdx === true, this.signal);
    return d >= 0 && this.countKick(d === 1);
  }

  popUsed(): number {
    if (this.batchLeft > 0) return this.release(this.nextInBatch());
    const i = this.nextUsed;
    if (packedDescState(this.v.desc16, i, this.usedWrap) !== 2) return -1;
    const id = this.v.desc16[i * 8 + 6] as number;
    const len = this.v.desc32[i * 4 + 2] as number;
    this.checkUsed(id);
    if (this.o.inOrder === true) {
      // One used descriptor for the batch: the ring moves past all of its buffers' slots.
      const k = this.startBatch(id, len);
      let skip = 0;
      for (let j = 0; j < k; j++) skip += this.held[this.order.at(j)] as number;
      this.moveUsed(skip);
      return this.release(this.nextInBatch());
    }
    this.moveUsed(this.held[id] as number);
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

  /** Puts buffer `id` back among the free ids. */
  private release(id: number): number {
    this.freeIds[this.freeCount++] = id;
    return this.retire(id);
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
