// Property tests: random interleavings of driver adds and device pops and
// completions, for both layouts and every ring feature: every buffer comes
// back exactly once, with the length the device gave it.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { makeQueueRig, type RingLayout } from '../src/driver/rig.js';
import { Pop } from '../src/virtio/descriptor-chain.js';
import { PackedQueue } from '../src/virtio/packed-queue.js';
import type { DeviceQueue } from '../src/virtio/queue.js';
import { SplitQueue } from '../src/virtio/split-queue.js';

type Op =
  | { kind: 'add'; segs: number; indirect: boolean; writable: number }
  | { kind: 'publish' }
  | { kind: 'pop'; n: number }
  | { kind: 'complete'; pick: number; n: number }
  | { kind: 'reap'; n: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), segs: fc.integer({ min: 1, max: 4 }), indirect: fc.boolean(), writable: fc.integer({ min: 0, max: 4 }) }),
  fc.constant({ kind: 'publish' as const }),
  fc.record({ kind: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ kind: fc.constant('complete' as const), pick: fc.nat(), n: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ kind: fc.constant('reap' as const), n: fc.integer({ min: 1, max: 8 }) }),
);

function run(layout: RingLayout, size: number, eventIdx: boolean, inOrder: boolean, ops: Op[]): void {
  const rig = makeQueueRig({ layout, size, indirect: true, eventIdx, inOrder, indirectEntries: 4 });
  const q: DeviceQueue = layout === 'split' ? new SplitQueue(rig.mem, rig.addresses, rig.features) : new PackedQueue(rig.mem, rig.addresses, rig.features);
  const chain = q.newChain();
  const buf = rig.alloc.alloc(4096);
  let nextToken = 0;
  const outstanding = new Map<number, number>(); // token -> total writable bytes
  const popped: { head: number; slots: number; writable: number }[] = [];
  const headToken = new Map<number, number>(); // head/id -> token (of chains not yet reaped)
  const expectLen = new Map<number, number>(); // token -> length the device used
  const returned = new Set<number>();

  const finishAll = () => {
    // Drain everything so the invariant is checked on every buffer.
    rig.driver.publish();
    for (;;) {
      const r = q.popChain(chain);
      if (r === Pop.EMPTY) break;
      expect(r).toBe(Pop.CHAIN);
      popped.push({ head: chain.head, slots: chain.ringSlots, writable: chain.writableBytes });
    }
    while (popped.length > 0) complete(0);
    q.flushUsed();
    reap(Infinity);
  };

  const complete = (i: number) => {
    const [p] = popped.splice(i, 1);
    if (p === undefined) return;
    const len = p.writable === 0 ? 0 : (p.head * 7) % (p.writable + 1);
    q.addUsed(p.head, len, p.slots);
    expectLen.set(headToken.get(p.head) as number, len);
  };

  const reap = (n: number) => {
    for (let k = 0; k < n; k++) {
      const tok = rig.driver.popUsed();
      if (tok < 0) return;
      expect(returned.has(tok)).toBe(false); // exactly once
      returned.add(tok);
      expect(outstanding.has(tok)).toBe(true);
      outstanding.delete(tok);
      if (!inOrder) expect(rig.driver.usedLen).toBe(expectLen.get(tok));
    }
  };

  for (const o of ops) {
    switch (o.kind) {
      case 'add': {
        rig.driver.beginChain();
        const w = Math.min(o.writable, o.segs);
        let writable = 0;
        for (let s = 0; s < o.segs; s++) {
          const isW = s >= o.segs - w;
          const len = 8 * (s + 1);
          rig.driver.addSegment(buf + 64 * s, len, isW);
          if (isW) writable += len;
        }
        const token = nextToken;
        const head = rig.driver.commitChain(token, o.indirect);
        if (head >= 0) {
          nextToken++;
          outstanding.set(token, writable);
          headToken.set(head, token);
        }
        break;
      }
      case 'publish':
        rig.driver.publish();
        break;
      case 'pop':
        for (let k = 0; k < o.n; k++) {
          const r = q.popChain(chain);
          if (r === Pop.EMPTY) break;
          expect(r).toBe(Pop.CHAIN);
          expect(chain.writableBytes).toBe(outstanding.get(headToken.get(chain.head) as number));
          popped.push({ head: chain.head, slots: chain.ringSlots, writable: chain.writableBytes });
        }
        break;
      case 'complete':
        // Out of order unless IN_ORDER was negotiated.
        for (let k = 0; k < o.n && popped.length > 0; k++) complete(inOrder ? 0 : o.pick % popped.length);
        q.flushUsed();
        break;
      case 'reap':
        reap(o.n);
        break;
    }
  }
  finishAll();
  expect(outstanding.size).toBe(0);
  expect(returned.size).toBe(nextToken);
  expect(rig.driver.numFree).toBe(size);
}

describe.each(['split', 'packed'] as const)('%s ring properties', (layout) => {
  for (const eventIdx of [false, true]) {
    for (const inOrder of [false, true]) {
      it(`every buffer comes back exactly once with its length (event_idx ${eventIdx}, in_order ${inOrder})`, () => {
        fc.assert(
          fc.property(fc.constantFrom(2, 4, 8, 16), fc.array(op, { maxLength: 300 }), (size, ops) => run(layout, size, eventIdx, inOrder, ops)),
          { numRuns: 150 },
        );
      });
    }
  }
});
