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
import { splitViews, storeAddress, type SplitViews } from '../virtio/ring-views.js';
import { needEvent } from '../virtio/split-queue.js';
import { AvailOrder, ChainBuilder } from './chain-builder.js';
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
  private readonly v: SplitViews;
  /** Chain links and the free list share one array, as the ring's next fields do. */
  private readonly next: Uint16Array;
  private freeHead = 0;
  private readonly token: Float64Array;
  private readonly chainDescs: Uint16Array;
  private readonly outstanding: Uint8Array;
  private readonly order: AvailOrder;
  private readonly chain: ChainBuilder;
  private batchLeft = 0;
  private batchLen = 0;
  private availIdx = 0;
  private publishedAvail = 0;
  private lastUsed = 0;

  constructor(mem: GuestMemory, addresses: QueueAddresses, options: DriverQueueOptions = {}) {
    const n = addresses.size;
    this.mem = mem;
    this.size = n;
    this.mask = n - 1;
    this.addresses = { ...addresses };
    this.o = { ...options };
    this.v = splitViews(mem, addresses);
    this.next = new Uint16Array(n);
    this.token = new Float64Array(n);
    this.chainDescs = new Uint16Array(n);
    this.outstanding = new Uint8Array(n);
    this.order = new AvailOrder(n);
    this.chain = new ChainBuilder(Math.max(n, options.indirectArea?.entries ?? 0));
    this.numFree = n;
    this.reset();
  }

  reset(): void {
    this.v.desc32.fill(0);
    this.v.avail.fill(0);
    this.v.used16.fill(0);
    for (let i = 0; i < this.size; i++) this.next[i] = i + 1;
    this.freeHead = 0;
    this.numFree = this.size;
    this.outstanding.fill(0);
    this.order.clear();
    this.batchLeft = 0;
    this.availIdx = 0;
    this.publishedAvail = 0;
    this.lastUsed = 0;
    this.chain.begin();
  }

  beginChain(): void {
    this.chain.begin();
  }

  addSegment(addr: number, len: number, writable: boolean): boolean {
    return this.chain.add(addr, len, writable);
  }

  private writeDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    const { desc32, desc16 } = this.v;
    storeAddress(desc32, i * 4, addr);
    desc32[i * 4 + 2] = len;
    desc16[i * 8 + 6] = flags;
    desc16[i * 8 + 7] = next;
  }

  commitChain(token: number, indirect = false): number {
    const c = this.chain;
    const n = c.count;
    if (n === 0) return -1;
    if (indirect) return this.commitIndirect(token);
    if (n > this.numFree) return -1;
    const head = this.freeHead;
    let i = head;
    for (let s = 0; s < n; s++) {
      const last = s === n - 1;
      const nxt = this.next[i] as number;
      const flags = (last ? 0 : VIRTQ_DESC_F_NEXT) | (c.writable[s] === 1 ? VIRTQ_DESC_F_WRITE : 0);
      this.writeDesc(i, c.addr[s] as number, c.len[s] as number, flags, last ? 0 : nxt);
      if (last) this.freeHead = nxt;
      else i = nxt;
    }
    this.numFree -= n;
    return this.makeAvailable(head, n, token);
  }

  private commitIndirect(token: number): number {
    const area = this.o.indirectArea;
    const c = this.chain;
    const n = c.count;
    if (area === undefined || n > area.entries || this.numFree < 1) return -1;
    const head = this.freeHead;
    this.freeHead = this.next[head] as number;
    this.numFree--;
    const table = area.addr + head * area.entries * 16;
    const t = this.mem.view(table, n * 16);
    const dv = new DataView(t.buffer, t.byteOffset, t.byteLength);
    for (let s = 0; s < n; s++) {
      const last = s === n - 1;
      const a = c.addr[s] as number;
      dv.setUint32(s * 16, a % 0x1_0000_0000, true);
      dv.setUint32(s * 16 + 4, Math.floor(a / 0x1_0000_0000), true);
      dv.setUint32(s * 16 + 8, c.len[s] as number, true);
      dv.setUint16(s * 16 + 12, (last ? 0 : VIRTQ_DESC_F_NEXT) | (c.writable[s] === 1 ? VIRTQ_DESC_F_WRITE : 0), true);
      dv.setUint16(s * 16 + 14, last ? 0 : s + 1, true);
    }
    this.writeDesc(head, table, n * 16, VIRTQ_DESC_F_INDIRECT, 0);
    return this.makeAvailable(head, 1, token);
  }

  private makeAvailable(head: number, descs: number, token: number): number {
    this.token[head] = token;
    this.chainDescs[head] = descs;
    this.outstanding[head] = 1;
    this.v.avail[2 + (this.availIdx & this.mask)] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.order.push(head);
    this.stats.added++;
    this.chain.begin();
    return head;
  }

  publish(): boolean {
    const old = this.publishedAvail;
    const now = this.availIdx;
    if (old === now) return false;
    Atomics.store(this.v.avail, 1, now); // release: ring entries before the index
    this.publishedAvail = now;
    const kick =
      this.o.eventIdx === true
        ? needEvent(Atomics.load(this.v.used16, 2 + 4 * this.size), now, old) // avail_event
        : (Atomics.load(this.v.used16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
    if (kick) {
      this.stats.kicks++;
      this.o.onKick?.();
    } else this.stats.kicksSuppressed++;
    return kick;
  }

  popUsed(): number {
    if (this.batchLeft > 0) return this.takeFromBatch();
    if (Atomics.load(this.v.used16, 1) === this.lastUsed) return -1;
    const slot = this.lastUsed & this.mask;
    const id = this.v.used32[1 + slot * 2] as number;
    const len = this.v.used32[2 + slot * 2] as number;
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    if (id >= this.size || this.outstanding[id] !== 1) {
      throw new DriverError(`device returned used id ${id}, which is not an outstanding chain (queue size ${this.size})`);
    }
    if (this.o.inOrder === true) {
      // VIRTIO 1.2 §2.7, "In-order use of descriptors": one used entry may stand for every buffer up to it.
      this.batchLeft = this.order.countThrough(id);
      this.batchLen = len;
      return this.takeFromBatch();
    }
    this.usedLen = len;
    return this.release(id);
  }

  private takeFromBatch(): number {
    this.batchLeft--;
    this.usedLen = this.batchLen; // only the last of a batch has a meaningful length
    return this.release(this.order.at(0));
  }

  private release(id: number): number {
    this.order.remove(id);
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
    if (this.o.eventIdx !== true) this.v.avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
  }

  enableInterrupts(): boolean {
    if (this.o.eventIdx === true) Atomics.store(this.v.avail, 2 + this.size, this.lastUsed); // used_event
    else Atomics.store(this.v.avail, 0, 0);
    return this.batchLeft > 0 || Atomics.load(this.v.used16, 1) !== this.lastUsed;
  }
}
