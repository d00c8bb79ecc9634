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
});
