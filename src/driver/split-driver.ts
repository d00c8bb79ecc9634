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
import type { DriverQueue, DriverQueueOptions } from './driver-queue.js';
import { DriverRing } from './driver-ring.js';

export class SplitDriver extends DriverRing implements DriverQueue {
  readonly layout = 'split';
  private readonly mask: number;
  private readonly v: SplitViews;
  /** Chain links and the free list share one array, as the ring's next fields do. */
  private readonly next: Uint16Array;
  private freeHead = 0;
  private availIdx = 0;
  private publishedAvail = 0;
  private lastUsed = 0;

  constructor(mem: GuestMemory, addresses: QueueAddresses, options: DriverQueueOptions = {}) {
    super(mem, addresses, options);
    this.mask = this.size - 1;
    this.v = splitViews(mem, addresses);
    this.next = new Uint16Array(this.size);
    this.reset();
  }

  reset(): void {
    this.v.desc32.fill(0);
    this.v.avail.fill(0);
    this.v.used16.fill(0);
    for (let i = 0; i < this.size; i++) this.next[i] = i + 1;
    this.freeHead = 0;
    this.availIdx = 0;
    this.publishedAvail = 0;
    this.lastUsed = 0;
    this.resetBuffers();
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
    return this.makeAvailable(head, n, token);
  }

  private commitIndirect(token: number): number {
    if (this.numFree < 1) return -1;
    const head = this.freeHead;
    const table = this.writeIndirect(head, true);
    if (table < 0) return -1;
    this.freeHead = this.next[head] as number;
    this.writeDesc(head, table, this.chain.count * 16, VIRTQ_DESC_F_INDIRECT, 0);
    return this.makeAvailable(head, 1, token);
  }

  private makeAvailable(head: number, descs: number, token: number): number {
    this.v.avail[2 + (this.availIdx & this.mask)] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.markAvailable(head, token, descs);
    return head;
  }

  publish(): boolean {
    const old = this.publishedAvail;
    const now = this.availIdx;
    if (old === now) return false;
    Atomics.store(this.v.avail, 1, now); // release: ring entries before the index
    this.publishedAvail = now;
    return this.countKick(
      this.o.eventIdx === true
        ? needEvent(Atomics.load(this.v.used16, 2 + 4 * this.size), now, old) // avail_event
        : (Atomics.load(this.v.used16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0,
    );
  }

  popUsed(): number {
    if (this.batchLeft > 0) return this.release(this.nextInBatch());
    if (Atomics.load(this.v.used16, 1) === this.lastUsed) return -1;
    const slot = this.lastUsed & this.mask;
    const id = this.v.used32[1 + slot * 2] as number;
    const len = this.v.used32[2 + slot * 2] as number;
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    this.checkUsed(id);
    if (this.o.inOrder === true) {
      this.startBatch(id, len);
      return this.release(this.nextInBatch());
    }
    this.usedLen = len;
    return this.release(id);
  }

  /** Puts buffer `id`'s descriptors back on the free list. */
  private release(id: number): number {
    const descs = this.held[id] as number;
    let tail = id;
    for (let s = 1; s < descs; s++) tail = this.next[tail] as number;
    this.next[tail] = this.freeHead;
    this.freeHead = id;
    return this.retire(id);
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
