// Packed virtqueue, device side (VIRTIO 1.2 §2.8). One descriptor ring shared
// both ways, wrap counters instead of indices, event suppression structures
// in the driver and device areas.
import {
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from './constants.js';
import { ChainFault, Pop, type DescriptorChain } from './descriptor-chain.js';
import { DeviceRing, requireAligned, requireQueueSize } from './device-ring.js';
import { u64, type GuestMemory } from './guest-memory.js';
import type { DeviceQueue, QueueAddresses, QueueFeatures, RingPositions } from './queue.js';
import { packedDescState, packedViews } from './ring-views.js';

/**
 * Packed-ring event check (§2.8, "Event Suppression Structure Format"): did the move from `old` to `next` pass
 * the event position? Positions are (index, wrap) folded into [0, 2 * size).
 */
export function packedNeedEvent(size: number, offWrap: number, next: number, old: number): boolean {
  const span = 2 * size;
  const off = offWrap & 0x7fff;
  const event = (offWrap >>> 15) === 1 ? off : off + size;
  return (next - event - 1 + 2 * span) % span < (next - old + span) % span;
}

/** A ring position (index, wrap counter) folded into [0, 2 * size); wrap 1 is the first lap. */
export function foldPosition(size: number, index: number, wrap: number): number {
  return wrap === 1 ? index : index + size;
}

/** One side's notification state on a packed ring: where it was at its last decision, and what that read. */
export interface PackedSignal {
  /** This side's folded position at the last decision. */
  last: number;
  /** The other side's event flags (§2.8: ENABLE, DISABLE or DESC). */
  flags: number;
  /** The other side's off_wrap when the decision compared against it (flags DESC with EVENT_IDX), else -1. */
  offWrap: number;
}

/**
 * The packed ring's notification decision, the same both ways (§2.8, "Event
 * Suppression Structure Format"): this side has moved to (index, wrap); must
 * the other side hear of it, per its event suppression area `area` (off_wrap,
 * flags)? -1 when nothing moved since the last decision (none is made), else
 * 1 (yes) or 0 (no), with `s` updated.
 */
export function packedDecide(size: number, index: number, wrap: number, area: Uint16Array, eventIdx: boolean, s: PackedSignal): number {
  const next = foldPosition(size, index, wrap);
  const old = s.last;
  if (next === old) return -1;
  s.last = next;
  const flags = Atomics.load(area, 1) & 3;
  s.flags = flags;
  s.offWrap = -1;
  if (flags === RING_EVENT_FLAGS_DISABLE) return 0;
  if (flags !== RING_EVENT_FLAGS_DESC || !eventIdx) return 1;
  const offWrap = Atomics.load(area, 0);
  s.offWrap = offWrap;
  return packedNeedEvent(size, offWrap, next, old) ? 1 : 0;
}

export class PackedQueue extends DeviceRing implements DeviceQueue {
  readonly layout = 'packed';
  nextAvail = 0;
  availWrap = 1;
  usedIdx = 0;
  usedWrap = 1;
  /** The used position at the last notification decision, and what it read from the driver's event area. @internal */
  protected readonly signal: PackedSignal = { last: 0, flags: 0, offWrap: -1 };
  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  /** Driver event suppression: off_wrap, flags. */
  private readonly driverEvent: Uint16Array;
  /** Device event suppression: off_wrap, flags. */
  private readonly deviceEvent: Uint16Array;

  constructor(mem: GuestMemory, a: QueueAddresses, features: QueueFeatures) {
    // VIRTIO 1.2 §2.8: any size up to 32768; descriptor ring 16-byte aligned, event areas 4-byte aligned.
    requireQueueSize('packed', a.size);
    requireAligned(a.desc, 16, 'descriptor ring');
    requireAligned(a.driver, 4, 'driver area');
    requireAligned(a.device, 4, 'device area');
    super(mem, a, features);
    ({ desc32: this.desc32, desc16: this.desc16, driverEvent: this.driverEvent, deviceEvent: this.deviceEvent } = packedViews(mem, a));
  }

  private isAvailable(i: number, wrap: number): boolean {
    return packedDescState(this.desc16, i, wrap) === 1;
  }

  hasAvailable(): boolean {
    return !this.broken && this.isAvailable(this.nextAvail, this.availWrap);
  }

  popChain(chain: DescriptorChain): number {
    if (this.broken) return Pop.BROKEN;
    if (!this.isAvailable(this.nextAvail, this.availWrap)) return Pop.EMPTY;
    const d32 = this.desc32;
    const d16 = this.desc16;
    chain.reset(0);
    let idx = this.nextAvail;
    let slots = 0;
    let fault: number = ChainFault.NONE;
    let id = 0;
    // Walk to the chain's end even after a tier-1 fault: the buffer id is in
    // the last descriptor, and the ring position must move past the chain.
    const size = this.size;
    for (;;) {
      if (slots >= size) return this.breakRing(chain, ChainFault.LOOP);
      const flags = d16[idx * 8 + 7] as number;
      slots++;
      if (fault === ChainFault.NONE) {
        if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
          if (!this.features.indirect) fault = ChainFault.INDIRECT_NOT_NEGOTIATED;
          else if ((flags & VIRTQ_DESC_F_NEXT) !== 0) fault = ChainFault.INDIRECT_WITH_NEXT;
          else fault = this.walkIndirect(chain, u64(d32[idx * 4] as number, d32[idx * 4 + 1] as number), d32[idx * 4 + 2] as number);
        } else {
          const addr = u64(d32[idx * 4] as number, d32[idx * 4 + 1] as number);
          fault = chain.addBuffer(this.mem, addr, d32[idx * 4 + 2] as number, (flags & VIRTQ_DESC_F_WRITE) !== 0, flags);
        }
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) {
        id = d16[idx * 8 + 6] as number; // §2.8: the buffer id is in the chain's last descriptor
        break;
      }
      idx = idx + 1 === size ? 0 : idx + 1;
    }
    chain.head = id;
    chain.ringSlots = slots;
    this.nextAvail += slots;
    if (this.nextAvail >= this.size) {
      this.nextAvail -= this.size;
      this.availWrap ^= 1;
    }
    this.stats.chains++;
    if (id >= this.size) return this.breakRing(chain, ChainFault.BUFFER_ID_OUT_OF_RANGE);
    if (fault === ChainFault.NONE) return Pop.CHAIN;
    return this.faulted(chain, fault);
  }

  // §2.8, "Indirect Flag: Scatter-Gather Support": an indirect table holds packed descriptors used in order; NEXT and ids there are ignored.
  private walkIndirect(chain: DescriptorChain, addr: number, len: number): number {
    const r = this.indirectTable(chain, addr, len);
    if (r < 0) return -r;
    const dv = this.views[r] as DataView;
    const base = this.tableOffset;
    for (let i = 0; i < len / 16; i++) {
      const o = base + i * 16;
      const flags = dv.getUint16(o + 14, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) return ChainFault.NESTED_INDIRECT;
      const a = u64(dv.getUint32(o, true), dv.getUint32(o + 4, true));
      const fault = chain.addBuffer(this.mem, a, dv.getUint32(o + 8, true), (flags & VIRTQ_DESC_F_WRITE) !== 0, flags);
      if (fault !== ChainFault.NONE) return fault;
    }
    return ChainFault.NONE;
  }

  addUsed(id: number, len: number, slots: number): void {
    const i = this.usedIdx;
    this.desc32[i * 4 + 2] = len;
    this.desc16[i * 8 + 6] = id;
    // §2.8, "Driver and Device Ring Wrap Counters": a used descriptor has AVAIL and USED both equal to the used wrap counter.
    let flags = this.usedWrap === 1 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
    if (len > 0) flags |= VIRTQ_DESC_F_WRITE;
    Atomics.store(this.desc16, i * 8 + 7, flags); // release: id and len before the flags
    this.usedIdx += slots > 0 ? slots : 1;
    while (this.usedIdx >= this.size) {
      this.usedIdx -= this.size;
      this.usedWrap ^= 1;
    }
  }

  flushUsed(): boolean {
    const d = packedDecide(this.size, this.usedIdx, this.usedWrap, this.driverEvent, this.features.eventIdx, this.signal);
    return d >= 0 && this.counted(d === 1);
  }

  disableNotifications(): void {
    Atomics.store(this.deviceEvent, 1, RING_EVENT_FLAGS_DISABLE);
  }

  enableNotifications(): boolean {
    if (this.features.eventIdx) {
      Atomics.store(this.deviceEvent, 0, this.nextAvail | (this.availWrap << 15));
      Atomics.store(this.deviceEvent, 1, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(this.deviceEvent, 1, RING_EVENT_FLAGS_ENABLE);
    }
    return this.hasAvailable();
  }

  setBase(base: number): void {
    // vhost-user.rst, SET_VRING_BASE: for a packed ring, bits 0-14 are the next
    // available index and bit 15 its wrap counter. Linux's virtio_uml sends 0
    // for every ring it sets up (the split-ring meaning): read literally, that
    // is index 0 on wrap 0, a lap behind a driver that starts on wrap 1 (§2.8.1),
    // so no buffer would look available and every kick request would be a lap
    // off. A ring really at index 0 on wrap 0 has been round once, and then
    // slot 0 has its USED flag set (the device wrote it on wrap 1, and a driver
    // re-posting it on wrap 0 sets USED too); with USED clear, the ring is on
    // its first lap.
    if ((base & 0xffff) === 0 && (Atomics.load(this.desc16, 7) & VIRTQ_DESC_F_USED) === 0) base |= 0x8000;
    this.nextAvail = (base & 0x7fff) % this.size;
    this.availWrap = (base >>> 15) & 1;
    const used = base >>> 16;
    this.usedIdx = used === 0 ? this.nextAvail : (used & 0x7fff) % this.size;
    this.usedWrap = used === 0 ? this.availWrap : (used >>> 15) & 1;
    this.signal.last = foldPosition(this.size, this.usedIdx, this.usedWrap);
  }

  getBase(): number {
    return (this.nextAvail | (this.availWrap << 15) | ((this.usedIdx | (this.usedWrap << 15)) << 16)) >>> 0;
  }

  positions(): RingPositions {
    const e = this.deviceEvent;
    return { nextAvail: this.nextAvail, availWrap: this.availWrap, usedIdx: this.usedIdx, usedWrap: this.usedWrap, signalled: this.signal.last, suppressFlags: e[1]!, suppressEvent: e[0]! };
  }

  setPositions(p: RingPositions): void {
    this.nextAvail = p.nextAvail;
    this.availWrap = p.availWrap & 1;
    this.usedIdx = p.usedIdx;
    this.usedWrap = p.usedWrap & 1;
    this.signal.last = p.signalled;
    Atomics.store(this.deviceEvent, 0, p.suppressEvent);
    Atomics.store(this.deviceEvent, 1, p.suppressFlags);
  }

  /**
   * The used position as the ring shows it. A slot's USED flag changes only
   * when the device writes it used (on lap w it sets USED = w; the driver
   * posting a buffer on lap d writes USED = !d, which is what the slot held
   * since the device's last lap). So while every chain is one slot (a single
   * buffer or an indirect table, as Linux's virtio_net posts them with
   * INDIRECT_DESC), the slots before the device's used index U carry USED = w
   * (its wrap counter) and the slots from U on carry !w: one step. A ring
   * with all slots alike is at index 0 (wrap !USED). More than one step
   * (chains of several slots, or a ring scribbled on) says nothing: null.
   */
  usedPositionInRing(): number | null {
    const used = (i: number): number => ((Atomics.load(this.desc16, i * 8 + 7) & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0);
    const first = used(0);
    let step = 0; // the first slot whose USED differs from slot 0's (0: none does)
    for (let i = 1; i < this.size; i++) {
      const u = used(i);
      if (step === 0) {
        if (u !== first) step = i;
      } else if (u === first) return null; // a second step
    }
    return step === 0 ? (first === 1 ? 0 : 0x8000) : step | (first << 15);
  }

  savePosition(): number {
    return this.nextAvail | (this.availWrap << 16);
  }

  restorePosition(position: number): void {
    this.nextAvail = position & 0xffff;
    this.availWrap = (position >>> 16) & 1;
  }

  reset(): void {
    this.nextAvail = 0;
    this.availWrap = 1;
    this.usedIdx = 0;
    this.usedWrap = 1;
    this.signal.last = 0;
    this.repair();
  }
}
