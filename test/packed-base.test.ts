// SET_VRING_BASE for a packed ring (vhost-user.rst: bits 0-14 the next
// available index, bit 15 its wrap counter), including the 0 that Linux's
// virtio_uml sends for every ring, split or packed.
import { describe, expect, it } from 'vitest';

import { makeQueueRig } from '../src/driver/rig.js';
import { Pop } from '../src/virtio/descriptor-chain.js';
import { PackedQueue } from '../src/virtio/packed-queue.js';

function rig(size = 4) {
  const r = makeQueueRig({ layout: 'packed', size });
  const q = new PackedQueue(r.mem, r.addresses, r.features);
  const buf = r.alloc.alloc(64);
  const post = (token: number) => {
    r.driver.beginChain();
    r.driver.addSegment(buf, 64, true);
    r.driver.commitChain(token);
    r.driver.publish();
  };
  return { ...r, q, post, chain: q.newChain() };
}

describe('packed ring base', () => {
  it('a base of 0 on a new ring starts on wrap 1, where the driver starts', () => {
    const r = rig();
    r.q.setBase(0);
    expect(r.q.getBase() & 0xffff).toBe(0x8000);
    r.post(1);
    expect(r.q.popChain(r.chain)).toBe(Pop.CHAIN);
  });

  it('a base of 0 after buffers were posted on the first lap still finds them', () => {
    const r = rig();
    r.post(1);
    r.q.setBase(0);
    expect(r.q.popChain(r.chain)).toBe(Pop.CHAIN);
  });

  it('a base of 0 on a ring that went round once is honoured as wrap 0', () => {
    const r = rig(2);
    // One full lap: two chains posted, popped, used and reaped.
    for (let lap = 0; lap < 2; lap++) {
      r.post(lap + 1);
      expect(r.q.popChain(r.chain)).toBe(Pop.CHAIN);
      r.q.addUsed(r.chain.head, 0, r.chain.ringSlots);
      r.q.flushUsed();
      expect(r.driver.popUsed()).toBe(lap + 1);
    }
    const before = r.q.getBase();
    expect(before & 0xffff).toBe(0); // index 0, wrap 0
    r.q.setBase(0);
    expect(r.q.getBase()).toBe(before);
    r.post(3);
    expect(r.q.popChain(r.chain)).toBe(Pop.CHAIN);
  });

  it('an explicit wrap bit is taken as given', () => {
    const r = rig();
    r.q.setBase(0x8002);
    expect(r.q.getBase() & 0xffff).toBe(0x8002);
  });

  // What a back-end that died leaves in the ring: the new one reads the used position from the USED flags.
  describe('the used position read from the ring', () => {
    function used(r: ReturnType<typeof rig>, n: number, popAhead = 0) {
      for (let k = 0; k < n; k++) {
        r.post(k + 1);
        expect(r.q.popChain(r.chain)).toBe(Pop.CHAIN);
        r.q.addUsed(r.chain.head, 0, r.chain.ringSlots);
        r.q.flushUsed();
        r.driver.popUsed();
      }
      for (let k = 0; k < popAhead; k++) {
        r.post(100 + k);
        expect(r.q.popChain(r.chain)).toBe(Pop.CHAIN); // popped, never used (in flight when the back-end died)
      }
    }

    it('a new ring, posted or not, is at index 0 on wrap 1', () => {
      const r = rig(8);
      expect(r.q.usedPositionInRing()).toBe(0x8000);
      r.post(1);
      expect(r.q.usedPositionInRing()).toBe(0x8000);
    });

    it('follows the device through laps, and ignores chains popped but not used', () => {
      const r = rig(8);
      for (const [n, want] of [[3, 3 | 0x8000], [5, 0], [6, 6], [2, 0x8000]] as const) {
        used(r, n);
        expect(r.q.usedPositionInRing(), `after ${n} more`).toBe(want);
        expect(r.q.getBase() >>> 16).toBe(want);
      }
      used(r, 1, 2);
      expect(r.q.usedPositionInRing()).toBe(1 | 0x8000);
    });

    it('a fresh queue given a stale base is put where the ring stands', () => {
      const r = rig(8);
      used(r, 11, 1);
      const q = new PackedQueue(r.mem, r.addresses, r.features);
      q.setBase(0x80008000); // what QEMU 7.2 sends after its back-end died
      expect(q.usedPositionInRing()).toBe(3);
      q.setBase(q.usedPositionInRing()!);
      expect(q.getBase()).toBe((3 | (3 << 16)) >>> 0);
      expect(q.popChain(q.newChain())).toBe(Pop.CHAIN); // the chain in flight is popped again
    });

    it('a ring with two steps (chains of several slots, or scribbled on) says nothing', () => {
      const r = rig(8);
      used(r, 4);
      // slot 1 flipped by hand: USED differs at 1, and again at 2
      const ring = r.mem.view(r.addresses.desc, 16 * 8);
      const flags = new DataView(ring.buffer, ring.byteOffset, ring.byteLength);
      flags.setUint16(16 + 14, flags.getUint16(16 + 14, true) ^ 0x8000, true);
      expect(r.q.usedPositionInRing()).toBeNull();
    });
  });
});

