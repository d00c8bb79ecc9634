// Ring semantics for both layouts, driven by the TypeScript driver.
import { describe, expect, it } from 'vitest';

import { makeQueueRig, type RingLayout } from '../src/driver/rig.js';
import { ChainFault, DescriptorChain, Pop } from '../src/virtio/descriptor-chain.js';
import { checkedAdd, GuestMemory, GuestMemoryError, u64 } from '../src/virtio/guest-memory.js';
import { foldPosition, PackedQueue, packedNeedEvent } from '../src/virtio/packed-queue.js';
import { QueueConfigError, type DeviceQueue, type QueueFeatures } from '../src/virtio/queue.js';
import { needEvent, SplitQueue } from '../src/virtio/split-queue.js';

function deviceQueue(layout: RingLayout, mem: GuestMemory, addresses: Parameters<typeof makeQueueRig>[0] extends never ? never : ReturnType<typeof makeQueueRig>['addresses'], f: QueueFeatures): DeviceQueue {
  return layout === 'split' ? new SplitQueue(mem, addresses, f) : new PackedQueue(mem, addresses, f);
}

function setup(layout: RingLayout, size: number, f: Partial<QueueFeatures> & { onKick?: () => void } = {}) {
  const rig = makeQueueRig({ layout, size, ...f });
  const q = deviceQueue(layout, rig.mem, rig.addresses, rig.features);
  return { ...rig, q, chain: q.newChain() };
}

/** A queue of 8 whose driver counts its kicks; add() makes one 16-byte chain available and says whether it kicked. */
function kickSetup(layout: RingLayout, f: Partial<QueueFeatures> = {}) {
  const kicked = { count: 0 };
  const t = setup(layout, 8, { ...f, onKick: () => kicked.count++ });
  const buf = t.alloc.alloc(16);
  const add = () => {
    t.driver.beginChain();
    t.driver.addSegment(buf, 16, true);
    t.driver.commitChain(1);
    return t.driver.publish();
  };
  return { ...t, kicked, add };
}

describe('GuestMemory', () => {
  it('resolves ranges across regions into several views without copying', () => {
    const a = new Uint8Array(16);
    const b = new Uint8Array(16);
    const mem = new GuestMemory([{ gpa: 0x1000, bytes: a }, { gpa: 0x1010, bytes: b }]);
    const views = mem.resolve(0x100c, 8);
    expect(views.map((v) => v.length)).toEqual([4, 4]);
    views[0]![0] = 7;
    views[1]![0] = 9;
    expect(a[12]).toBe(7);
    expect(b[0]).toBe(9);
    expect(mem.regionOf(0x100c, 8)).toBe(-1); // crosses a boundary
    expect(mem.regionOf(0x1010, 16)).toBe(1);
  });

  it('refuses what is outside, overlapping, or past 2^53', () => {
    const mem = GuestMemory.create(64, { gpa: 0x100 });
    expect(() => mem.resolve(0xf0, 32)).toThrow(GuestMemoryError);
    expect(() => mem.resolve(0x130, 32)).toThrow(GuestMemoryError);
    expect(mem.regionOf(2 ** 53, 1)).toBe(-1);
    expect(checkedAdd(2 ** 53 - 1, 1)).toBe(-1);
    expect(checkedAdd(5, 6)).toBe(11);
    expect(u64(0, 0x200000)).toBe(-1); // 2^53
    expect(u64(5, 1)).toBe(2 ** 32 + 5);
    expect(() => new GuestMemory([{ gpa: 0, bytes: new Uint8Array(8) }, { gpa: 4, bytes: new Uint8Array(8) }])).toThrow(/overlaps/);
  });
});

describe('event index arithmetic', () => {
  it('vring_need_event across the 2^16 wrap', () => {
    expect(needEvent(0xffff, 0x0000, 0xfffe)).toBe(true); // crossed 0xffff
    expect(needEvent(0xffff, 0xfffe, 0xfffd)).toBe(false); // not yet
    expect(needEvent(0x0001, 0x0003, 0xfffe)).toBe(true); // the batch wraps and passes 1
    expect(needEvent(0x0005, 0x0003, 0xfffe)).toBe(false);
  });

  it('packed event position with wrap counters', () => {
    const n = 8;
    // Event at index 7 in the second lap (wrap 0): position 15.
    const ev = 7 | (0 << 15);
    expect(packedNeedEvent(n, ev, foldPosition(n, 0, 1), foldPosition(n, 6, 0))).toBe(true); // passed 15 going to 16 = 0 mod 16
    expect(packedNeedEvent(n, ev, foldPosition(n, 7, 0), foldPosition(n, 5, 0))).toBe(false);
    expect(packedNeedEvent(n, 2 | (1 << 15), foldPosition(n, 4, 1), foldPosition(n, 1, 1))).toBe(true);
  });
});

describe.each(['split', 'packed'] as const)('%s ring', (layout) => {
  it('carries a chain: pop, add used, reap', () => {
    const t = setup(layout, 8);
    const out = t.alloc.alloc(100);
    const inb = t.alloc.alloc(200);
    t.mem.write(out, new Uint8Array(100).fill(1));
    t.driver.beginChain();
    t.driver.addSegment(out, 100, false);
    t.driver.addSegment(inb, 200, true);
    expect(t.driver.commitChain(42)).toBeGreaterThanOrEqual(0);
    t.driver.publish();
    t.chain.recordDescriptors = true; // what a trace turns on
    expect(t.q.popChain(t.chain)).toBe(Pop.CHAIN);
    expect([t.chain.readable, t.chain.count, t.chain.readableBytes, t.chain.writableBytes]).toEqual([1, 2, 100, 200]);
    expect([t.chain.descriptors, t.chain.descAddr[0], t.chain.descLen[1], t.chain.descFlags[1]! & 2]).toEqual([2, out, 200, 2]);
    expect(t.chain.addr[1]).toBe(inb);
    expect(t.q.popChain(t.chain)).toBe(Pop.EMPTY);
    t.q.addUsed(t.chain.head, 150, t.chain.ringSlots);
    expect(t.q.flushUsed()).toBe(true);
    expect(t.driver.popUsed()).toBe(42);
    expect(t.driver.usedLen).toBe(150);
    expect(t.driver.popUsed()).toBe(-1);
    expect(t.driver.numFree).toBe(8);
  });

  it(layout === 'split' ? 'addUsed wraps the used index at 2^16' : 'wrap counters flip at every lap', () => {
    const t = setup(layout, 4);
    const buf = t.alloc.alloc(64);
    const seen: number[] = [];
    for (let i = 0; i < 70_000; i++) {
      t.driver.beginChain();
      t.driver.addSegment(buf, 64, true);
      expect(t.driver.commitChain(i)).toBeGreaterThanOrEqual(0);
      t.driver.publish();
      expect(t.q.popChain(t.chain)).toBe(Pop.CHAIN);
      t.q.addUsed(t.chain.head, i % 65, t.chain.ringSlots);
      t.q.flushUsed();
      const tok = t.driver.popUsed();
      if (tok !== i || t.driver.usedLen !== i % 65) seen.push(i);
    }
    expect(seen).toEqual([]);
    if (t.q instanceof SplitQueue) {
      expect(t.q.usedIdx).toBe(70_000 % 65536);
      expect(t.q.nextAvail).toBe(70_000 % 65536);
    } else if (t.q instanceof PackedQueue) {
      expect(t.q.usedWrap).toBe(1); // 70 000 / 4 laps = 17 500, even
    }
  });

  it('indirect chains arrive whole', () => {
    const t = setup(layout, 8, { indirect: true });
    const bufs = [t.alloc.alloc(10), t.alloc.alloc(20), t.alloc.alloc(30)];
    t.driver.beginChain();
    t.driver.addSegment(bufs[0]!, 10, false);
    t.driver.addSegment(bufs[1]!, 20, true);
    t.driver.addSegment(bufs[2]!, 30, true);
    t.driver.commitChain(7, true);
    t.driver.publish();
    expect(t.q.popChain(t.chain)).toBe(Pop.CHAIN);
    expect(t.chain.indirect).toBe(true);
    expect(t.chain.ringSlots).toBe(layout === 'packed' ? 1 : 0);
    expect([t.chain.readableBytes, t.chain.writableBytes, t.chain.count]).toEqual([10, 50, 3]);
    t.q.addUsed(t.chain.head, 50, t.chain.ringSlots);
    t.q.flushUsed();
    expect(t.driver.popUsed()).toBe(7);
    expect(t.driver.numFree).toBe(8);
  });

  it('in-order completion: one used entry stands for a batch', () => {
    const t = setup(layout, 8, { inOrder: true });
    const buf = t.alloc.alloc(64);
    for (let i = 0; i < 5; i++) {
      t.driver.beginChain();
      t.driver.addSegment(buf, 16, false);
      if (i % 2 === 0) t.driver.addSegment(buf + 16, 16, true);
      t.driver.commitChain(100 + i);
    }
    t.driver.publish();
    let slots = 0;
    let last = 0;
    for (let i = 0; i < 5; i++) {
      expect(t.q.popChain(t.chain)).toBe(Pop.CHAIN);
      slots += t.chain.ringSlots;
      last = t.chain.head;
    }
    t.q.addUsed(last, 16, slots); // VIRTIO_F_IN_ORDER: only the last of the batch
    t.q.flushUsed();
    const got: number[] = [];
    for (let tok = t.driver.popUsed(); tok >= 0; tok = t.driver.popUsed()) got.push(tok);
    expect(got).toEqual([100, 101, 102, 103, 104]);
    expect(t.driver.numFree).toBe(8);
  });

  it('notification suppression both ways (flags)', () => {
    const { q, chain, driver, kicked, add } = kickSetup(layout);
    expect(add()).toBe(true);
    q.disableNotifications();
    expect(add()).toBe(false);
    expect(q.enableNotifications()).toBe(true); // chains arrived while disabled
    expect(add()).toBe(true);
    expect(kicked.count).toBe(2);
    while (q.popChain(chain) === Pop.CHAIN) q.addUsed(chain.head, 1, chain.ringSlots);
    driver.disableInterrupts();
    expect(q.flushUsed()).toBe(false);
    expect(q.stats.notificationsSuppressed).toBe(1);
  });

  it('notification suppression with the event index', () => {
    const { q, chain, driver, kicked, add } = kickSetup(layout, { eventIdx: true });
    q.enableNotifications(); // avail_event = 0: kick on the first entry
    expect(add()).toBe(true);
    expect(add()).toBe(false); // the event (entry 0) is behind us
    expect(q.popChain(chain)).toBe(Pop.CHAIN);
    expect(q.popChain(chain)).toBe(Pop.CHAIN);
    expect(q.enableNotifications()).toBe(false); // avail_event = 2
    expect(add()).toBe(true);
    expect(kicked.count).toBe(2);
    // Used side: the driver asks to hear only when the used index passes its event.
    driver.enableInterrupts(); // event at the next used entry
    q.addUsed(chain.head, 1, chain.ringSlots);
    expect(q.flushUsed()).toBe(true);
    driver.popUsed();
    q.addUsed(chain.head, 1, chain.ringSlots); // event still at the first entry: passed already
    expect(q.flushUsed()).toBe(false);
  });

  it('the event-index decision across the used index wrap', () => {
    const t = setup(layout, 8, { eventIdx: true });
    const buf = t.alloc.alloc(16);
    const round = (n: number) => {
      for (let i = 0; i < n; i++) {
        t.driver.beginChain();
        t.driver.addSegment(buf, 16, true);
        t.driver.commitChain(i);
      }
      t.driver.publish();
      while (t.q.popChain(t.chain) === Pop.CHAIN) t.q.addUsed(t.chain.head, 16, t.chain.ringSlots);
      const notify = t.q.flushUsed();
      while (t.driver.popUsed() >= 0);
      return notify;
    };
    // Bring the used index (split) or the wrap counters (packed) to just before a wrap.
    const laps = layout === 'split' ? 65534 : 8 * 2 - 2;
    for (let done = 0; done < laps; ) {
      const n = Math.min(8, laps - done);
      round(n);
      done += n;
    }
    t.driver.enableInterrupts(); // event at the next used entry: the last before the wrap
    expect(round(4)).toBe(true); // the batch crosses the wrap and passes the event
    expect(round(4)).toBe(false); // the event is behind now, and the driver has not moved it
    t.driver.enableInterrupts();
    expect(round(1)).toBe(true);
  });

  it('a queue configuration the spec forbids is refused once, at activation', () => {
    const rig = makeQueueRig({ layout, size: 8 });
    const f = rig.features;
    expect(() => deviceQueue(layout, rig.mem, { ...rig.addresses, desc: rig.addresses.desc + 8 }, f)).toThrow(QueueConfigError);
    expect(() => deviceQueue(layout, rig.mem, { ...rig.addresses, desc: rig.mem.regions[0]!.size - 16 }, f)).toThrow(/not inside/);
    expect(() => deviceQueue(layout, rig.mem, { ...rig.addresses, size: 0 }, f)).toThrow(QueueConfigError);
    if (layout === 'split') expect(() => deviceQueue(layout, rig.mem, { ...rig.addresses, size: 6 }, f)).toThrow(/power of 2/);
  });
});

describe('DescriptorChain', () => {
  it('a zero-length writable buffer still fixes the direction', () => {
    const mem = GuestMemory.create(64);
    const c = new DescriptorChain(4);
    c.reset(0);
    expect(c.addBuffer(mem, 0, 0, true, 2)).toBe(ChainFault.NONE);
    expect(c.addBuffer(mem, 0, 4, false, 0)).toBe(ChainFault.READABLE_AFTER_WRITABLE);
  });
});
