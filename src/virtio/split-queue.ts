// Split virtqueue, device side (VIRTIO 1.2 §2.7). Validated once when it
// becomes ready, then served from typed-array views cached at activation.
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from './constants.js';
import { ChainFault, Pop, type DescriptorChain } from './descriptor-chain.js';
import { DeviceRing, requireAligned, requireQueueSize } from './device-ring.js';
import { u64, type GuestMemory } from './guest-memory.js';
import { splitViews } from './ring-views.js';
import type { DeviceQueue, QueueAddresses, QueueFeatures, RingPositions } from './queue.js';

/** vring_need_event (§2.7, "Used Buffer Notification Suppression"): did [old, new) cross event? 16-bit arithmetic. */
export function needEvent(event: number, newIdx: number, old: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}

export class SplitQueue extends DeviceRing implements DeviceQueue {
  readonly layout = 'split';
  /** Next available ring entry to read (last_avail_idx), free-running 16-bit. */
  nextAvail = 0;
  /** Next used ring entry to write, free-running 16-bit. */
  usedIdx = 0;
  /** Used index at the last notification decision. */
  protected signalledUsed = 0;
  /** What the last notification decision read from the driver: used_event with EVENT_IDX, else the available ring's flags. */
  protected decidedOn = 0;
  private readonly mask: number;
  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  protected readonly avail: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;

  /** Validates the configuration (§2.7: size a power of 2, alignments, rings in memory); throws QueueConfigError. */
  constructor(mem: GuestMemory, a: QueueAddresses, features: QueueFeatures) {
    requireQueueSize('split', a.size);
    // VIRTIO 1.2 §2.7: alignment 16 for the descriptor table, 2 for the available ring, 4 for the used ring.
    requireAligned(a.desc, 16, 'descriptor table');
    requireAligned(a.driver, 2, 'available ring');
    requireAligned(a.device, 4, 'used ring');
    super(mem, a, features);
    this.mask = a.size - 1;
    ({ desc32: this.desc32, desc16: this.desc16, avail: this.avail, used16: this.used16, used32: this.used32 } = splitViews(mem, a));
  }

  hasAvailable(): boolean {
    return !this.broken && Atomics.load(this.avail, 1) !== this.nextAvail;
  }

  popChain(chain: DescriptorChain): number {
    if (this.broken) return Pop.BROKEN;
    const availIdx = Atomics.load(this.avail, 1); // acquire: ring entries are read after the index
    const pending = (availIdx - this.nextAvail) & 0xffff;
    if (pending === 0) return Pop.EMPTY;
    // VIRTIO 1.2 §2.7, "The Virtqueue Available Ring": the driver never has more than Queue Size entries outstanding.
    if (pending > this.size) return this.breakRing(chain, ChainFault.AVAIL_INDEX_JUMP);
    const head = this.avail[2 + (this.nextAvail & this.mask)] as number;
    chain.reset(head);
    if (head >= this.size) return this.breakRing(chain, ChainFault.INDEX_OUT_OF_RANGE);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    const fault = this.walk(chain, head);
    this.stats.chains++;
    if (fault === ChainFault.NONE) return Pop.CHAIN;
    return this.faulted(chain, fault);
  }

  // Walks the chain from `head`, direct descriptors then at most one indirect
  // table, with a budget of Queue Size descriptors against loops.
  private walk(chain: DescriptorChain, head: number): number {
    const mem = this.mem;
    const d32 = this.desc32;
    const d16 = this.desc16;
    let idx = head;
    let budget = this.size;
    for (;;) {
      if (budget-- === 0) return ChainFault.LOOP;
      const addr = u64(d32[idx * 4] as number, d32[idx * 4 + 1] as number);
      const len = d32[idx * 4 + 2] as number;
      const flags = d16[idx * 8 + 6] as number;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // VIRTIO 1.2 §2.7, "Indirect Descriptors": not with NEXT; a table of whole descriptors.
        if (!this.features.indirect) return ChainFault.INDIRECT_NOT_NEGOTIATED;
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) return ChainFault.INDIRECT_WITH_NEXT;
        return this.walkIndirect(chain, addr, len);
      }
      const fault = chain.addBuffer(mem, addr, len, (flags & VIRTQ_DESC_F_WRITE) !== 0, flags);
      if (fault !== ChainFault.NONE) return fault;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return ChainFault.NONE;
      idx = d16[idx * 8 + 7] as number;
      if (idx >= this.size) return ChainFault.INDEX_OUT_OF_RANGE;
    }
  }

  private walkIndirect(chain: DescriptorChain, addr: number, len: number): number {
    const r = this.indirectTable(chain, addr, len);
    if (r < 0) return -r;
    const count = len / 16;
    const dv = this.views[r] as DataView;
    const base = this.tableOffset;
    let i = 0;
    let left = count; // a walk inside the table visits each entry at most once
    for (;;) {
      if (left-- === 0) return ChainFault.LOOP;
      const o = base + i * 16;
      const a = u64(dv.getUint32(o, true), dv.getUint32(o + 4, true));
      const l = dv.getUint32(o + 8, true);
      const flags = dv.getUint16(o + 12, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) return ChainFault.NESTED_INDIRECT;
      const fault = chain.addBuffer(this.mem, a, l, (flags & VIRTQ_DESC_F_WRITE) !== 0, flags);
      if (fault !== ChainFault.NONE) return fault;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return ChainFault.NONE;
      i = dv.getUint16(o + 14, true);
      if (i >= count) return ChainFault.INDEX_OUT_OF_RANGE;
    }
  }

  addUsed(id: number, len: number, _slots: number): void {
    const slot = this.usedIdx & this.mask;
    this.used32[1 + slot * 2] = id;
    this.used32[2 + slot * 2] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  flushUsed(): boolean {
    const newIdx = this.usedIdx;
    Atomics.store(this.used16, 1, newIdx); // release: entries before the index
    const old = this.signalledUsed;
    if (newIdx === old) return false;
    this.signalledUsed = newIdx;
    let notify: boolean;
    let seen: number;
    if (this.features.eventIdx) {
      // VIRTIO 1.2 §2.7, "Used Buffer Notification Suppression": interrupt when the used index passes used_event.
      seen = Atomics.load(this.avail, 2 + this.size);
      notify = needEvent(seen, newIdx, old);
    } else {
      seen = Atomics.load(this.avail, 0);
      notify = (seen & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    this.decidedOn = seen;
    return this.counted(notify);
  }

  disableNotifications(): void {
    if (!this.features.eventIdx) this.used16[0] = (this.used16[0] as number) | VIRTQ_USED_F_NO_NOTIFY;
  }

  enableNotifications(): boolean {
    if (this.features.eventIdx) {
      // avail_event: kick me when you add the entry at nextAvail (§2.7, "Available Buffer Notification Suppression").
      Atomics.store(this.used16, 2 + 4 * this.size, this.nextAvail);
    } else {
      Atomics.store(this.used16, 0, (this.used16[0] as number) & ~VIRTQ_USED_F_NO_NOTIFY);
    }
    return this.hasAvailable();
  }

  setBase(base: number): void {
    this.nextAvail = base & 0xffff;
    this.usedIdx = Atomics.load(this.used16, 1);
    this.signalledUsed = this.usedIdx;
  }

  getBase(): number {
    return this.nextAvail;
  }

  positions(): RingPositions {
    const u = this.used16;
    return { nextAvail: this.nextAvail, availWrap: 1, usedIdx: this.usedIdx, usedWrap: 1, signalled: this.signalledUsed, suppressFlags: u[0]!, suppressEvent: u[2 + 4 * this.size]! };
  }

  setPositions(p: RingPositions): void {
    this.nextAvail = p.nextAvail & 0xffff;
    this.usedIdx = p.usedIdx & 0xffff;
    this.signalledUsed = p.signalled & 0xffff;
    Atomics.store(this.used16, 0, p.suppressFlags);
    Atomics.store(this.used16, 2 + 4 * this.size, p.suppressEvent);
  }

  savePosition(): number {
    return this.nextAvail;
  }

  restorePosition(position: number): void {
    this.nextAvail = position & 0xffff;
  }

  reset(): void {
    this.nextAvail = 0;
    this.usedIdx = 0;
    this.signalledUsed = 0;
    this.repair();
  }
}
