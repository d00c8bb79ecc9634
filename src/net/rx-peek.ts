// The receive filter's look at a frame just read into guest buffers: its
// first bytes after the virtio_net_hdr (the Ethernet header), found through
// the I/O plan the frame was read by.
import type { IoPlan } from '../host/io-plan.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import { NET_HDR_SIZE } from './constants.js';
import type { RxFilter } from './filter.js';
import type { DropReason } from './metrics.js';

/** Bytes of the frame the filter looks at: destination, source, and a VLAN tag's worth. */
const PEEK = 18;

export class RxPeek {
  private readonly mem: GuestMemory;
  private readonly plan: IoPlan;
  private readonly peek = new Uint8Array(PEEK);
  /** Region index by native I/O index (small integers; an array, not a Map, on the hot path). */
  private readonly ioToRegion: number[] = [];

  constructor(mem: GuestMemory, plan: IoPlan) {
    this.mem = mem;
    this.plan = plan;
    mem.regions.forEach((_, r) => {
      const io = mem.ioRegion(r);
      if (io < 0) return;
      while (this.ioToRegion.length <= io) this.ioToRegion.push(0);
      this.ioToRegion[io] = r;
    });
  }

  /**
   * Why the filter refuses the frame of `bytes` whose segments start at plan
   * position `at` (running on into the following groups, for a merged
   * frame), or null when it takes it.
   */
  check(filter: RxFilter, at: number, bytes: number): DropReason | null {
    if (!filter.active) return null;
    const plan = this.plan;
    const want = Math.min(bytes, NET_HDR_SIZE + PEEK) - NET_HDR_SIZE;
    // Usually the header and the Ethernet header share the first segment: look in place.
    if (plan.segments(at) >= 1 && plan.length(at, 0) >= NET_HDR_SIZE + want) {
      const bytesOfRegion = this.mem.regions[this.regionOfIo(plan.region(at, 0))]!.bytes;
      return filter.check(bytesOfRegion, plan.offset(at, 0) + NET_HDR_SIZE, want);
    }
    return filter.check(this.peek, 0, this.gather(at, want));
  }

  // Copies `want` bytes after the header into peek; returns how many there were.
  private gather(from: number, want: number): number {
    const plan = this.plan;
    const regions = this.mem.regions;
    let got = 0;
    let skip = NET_HDR_SIZE;
    for (let at = from; got < want && at < plan.end; at = plan.next(at)) {
      const count = plan.segments(at);
      for (let s = 0; s < count && got < want; s++) {
        const off = plan.offset(at, s);
        const len = plan.length(at, s);
        const start = Math.min(skip, len);
        skip -= start;
        const take = Math.min(len - start, want - got);
        if (take > 0) {
          this.peek.set(regions[this.regionOfIo(plan.region(at, s))]!.bytes.subarray(off + start, off + start + take), got);
          got += take;
        }
      }
    }
    return got;
  }

  private regionOfIo(ioIndex: number): number {
    return this.ioToRegion[ioIndex] ?? 0;
  }
}
