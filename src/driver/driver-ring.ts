// What the split and packed drivers share, whatever the ring's layout: the
// options, the chain being built, each buffer's token and the ring room it
// holds while outstanding, the in-order batch being reaped, indirect tables,
// and the counts. Each layout's ring logic stays in its own file; the methods
// here are leaves the layouts call, so a driver's hot calls stay on its class.
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../virtio/constants.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import type { QueueAddresses } from '../virtio/queue.js';
import { ringView, storeAddress } from '../virtio/ring-views.js';
import { AvailOrder, ChainBuilder } from './chain-builder.js';
import { DriverError, type DriverQueueOptions, type DriverStats } from './driver-queue.js';

export abstract class DriverRing {
  readonly size: number;
  readonly addresses: QueueAddresses;
  readonly stats: DriverStats = { added: 0, reaped: 0, kicks: 0, kicksSuppressed: 0 };
  usedLen = 0;
  /** Descriptors (split) or ring slots (packed) free for new chains. */
  numFree: number;
  protected readonly o: DriverQueueOptions;
  protected readonly chain: ChainBuilder;
  protected readonly order: AvailOrder;
  /** Per buffer id (split: head index): the descriptors or ring slots it holds while outstanding. */
  protected readonly held: Uint16Array;
  /** In-order buffers still to hand out from the last used entry. */
  protected batchLeft = 0;
  private batchLen = 0;
  private readonly token: Float64Array;
  private readonly outstanding: Uint8Array;
  /** The indirect area as descriptors, one table of `entries` per buffer id; null without one. */
  private readonly table32: Uint32Array | null;
  private readonly table16: Uint16Array | null;

  constructor(mem: GuestMemory, addresses: QueueAddresses, options: DriverQueueOptions) {
    const n = addresses.size;
    this.size = n;
    this.addresses = { ...addresses };
    this.o = { ...options };
    this.numFree = n;
    this.token = new Float64Array(n);
    this.held = new Uint16Array(n);
    this.outstanding = new Uint8Array(n);
    this.order = new AvailOrder(n);
    const area = options.indirectArea;
    this.chain = new ChainBuilder(Math.max(n, area?.entries ?? 0));
    this.table32 = area === undefined ? null : ringView(mem, area.addr, n * area.entries * 16, Uint32Array, 'indirect area');
    this.table16 = this.table32 === null ? null : new Uint16Array(this.table32.buffer, this.table32.byteOffset, this.table32.length * 2);
  }

  beginChain(): void {
    this.chain.begin();
  }

  addSegment(addr: number, len: number, writable: boolean): boolean {
    return this.chain.add(addr, len, writable);
  }

  /** Back to no buffer outstanding; the layout resets its ring. */
  protected resetBuffers(): void {
    this.numFree = this.size;
    this.outstanding.fill(0);
    this.order.clear();
    this.batchLeft = 0;
    this.chain.begin();
  }

  /**
   * Writes the chain being built as buffer `id`'s indirect table and returns
   * its guest address, or -1 without an indirect area or when the chain does
   * not fit a table. Split tables link their entries with NEXT (§2.7,
   * "Indirect Descriptors"); packed ones are read in order, ids unused (§2.8,
   * "Indirect Flag: Scatter-Gather Support").
   */
  protected writeIndirect(id: number, linked: boolean): number {
    const area = this.o.indirectArea;
    const t32 = this.table32;
    const t16 = this.table16;
    const c = this.chain;
    const n = c.count;
    if (area === undefined || t32 === null || t16 === null || n > area.entries) return -1;
    const first = id * area.entries;
    for (let s = 0; s < n; s++) {
      const i = first + s;
      const more = s < n - 1;
      const w = c.writable[s] === 1 ? VIRTQ_DESC_F_WRITE : 0;
      storeAddress(t32, i * 4, c.addr[s] as number);
      t32[i * 4 + 2] = c.len[s] as number;
      t16[i * 8 + 6] = linked ? (more ? VIRTQ_DESC_F_NEXT : 0) | w : 0;
      t16[i * 8 + 7] = linked ? (more ? s + 1 : 0) : w;
    }
    return area.addr + first * 16;
  }

  /** Records buffer `id`, holding `held` descriptors or slots, as made available. */
  protected markAvailable(id: number, token: number, held: number): void {
    this.token[id] = token;
    this.held[id] = held;
    this.outstanding[id] = 1;
    this.numFree -= held;
    this.order.push(id);
    this.stats.added++;
    this.chain.begin();
  }

  /** Counts a publish's notification decision and kicks when it says so. */
  protected countKick(kick: boolean): boolean {
    if (kick) {
      this.stats.kicks++;
      this.o.onKick?.();
    } else this.stats.kicksSuppressed++;
    return kick;
  }

  /** Throws DriverError unless `id` is a buffer the device holds. */
  protected checkUsed(id: number): void {
    if (id >= this.size || this.outstanding[id] !== 1) {
      throw new DriverError(`device returned used id ${id}, which is not an outstanding buffer (queue size ${this.size})`);
    }
  }

  /**
   * VIRTIO_F_IN_ORDER (§2.7, §2.8, "In-order use of descriptors"): one used
   * entry for `id` stands for every buffer made available up to it. Starts
   * handing them out; returns how many.
   */
  protected startBatch(id: number, len: number): number {
    this.batchLeft = this.order.countThrough(id);
    this.batchLen = len;
    return this.batchLeft;
  }

  /** The next buffer of the in-order batch; only the last of a batch has a meaningful length. */
  protected nextInBatch(): number {
    this.batchLeft--;
    this.usedLen = this.batchLen;
    return this.order.at(0);
  }

  /** Takes buffer `id` back from the device (its ring room is the layout's to free); returns its token. */
  protected retire(id: number): number {
    this.order.remove(id);
    this.numFree += this.held[id] as number;
    this.outstanding[id] = 0;
    this.stats.reaped++;
    return this.token[id] as number;
  }
}
