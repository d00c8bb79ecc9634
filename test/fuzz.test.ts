// Fuzz target: arbitrary ring bytes and queue parameters for both layouts.
// The invariant: only declared errors escape (QueueConfigError at set-up; Pop
// codes after), nothing outside guest memory is written (guard bytes around
// the region stay intact) or read (views are bounded: a stray read would
// throw), every segment lies inside its region, and afterwards the queue
// carries a good chain. VIRTIO_TAP_FUZZ_RUNS sets the number of cases.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { packedLayout, splitLayout } from '../src/driver/layout.js';
import { PackedDriver } from '../src/driver/packed-driver.js';
import { SplitDriver } from '../src/driver/split-driver.js';
import { Pop } from '../src/virtio/descriptor-chain.js';
import { GuestMemory } from '../src/virtio/guest-memory.js';
import { PackedQueue } from '../src/virtio/packed-queue.js';
import { QueueConfigError, type DeviceQueue, type QueueAddresses, type QueueFeatures } from '../src/virtio/queue.js';
import { SplitQueue } from '../src/virtio/split-queue.js';

const RUNS = Number(process.env['VIRTIO_TAP_FUZZ_RUNS'] ?? 1500);
const GUEST = 8192;
const GUARD = 4096;
const GUARD_BYTE = 0xa5;

interface Case {
  layout: 'split' | 'packed';
  size: number;
  features: QueueFeatures;
  desc: number;
  driver: number;
  device: number;
  bytes: Uint8Array;
  ops: number[];
  /** Make the ring's head plausible, so that chains get walked rather than refused at once. */
  bias?: boolean;
}

/** How often each Pop result came up over the whole run: the fuzz must reach them all. */
const seen = new Map<number, number>();

const arbCase: fc.Arbitrary<Case> = fc
  .record({
    layout: fc.constantFrom('split' as const, 'packed' as const),
    sizeExp: fc.integer({ min: 0, max: 6 }),
    sizeAny: fc.integer({ min: 0, max: 70 }),
    features: fc.record({ eventIdx: fc.boolean(), indirect: fc.boolean(), inOrder: fc.boolean() }),
    // Addresses mostly inside memory and aligned, sometimes anywhere.
    desc: fc.oneof(fc.integer({ min: 0, max: GUEST / 16 }).map((x) => x * 16), fc.integer({ min: -16, max: GUEST + 64 })),
    driver: fc.oneof(fc.integer({ min: 0, max: GUEST / 4 }).map((x) => x * 4), fc.integer({ min: -16, max: GUEST + 64 })),
    device: fc.oneof(fc.integer({ min: 0, max: GUEST / 4 }).map((x) => x * 4), fc.integer({ min: -16, max: GUEST + 64 })),
    bytes: fc.uint8Array({ minLength: GUEST, maxLength: GUEST }),
    ops: fc.array(fc.nat(), { maxLength: 40 }),
    bias: fc.boolean(),
  })
  .map((r) => ({
    layout: r.layout,
    size: r.layout === 'split' ? (r.sizeAny === 0 ? 0 : 2 ** r.sizeExp) : r.sizeAny,
    features: r.features,
    desc: r.desc,
    driver: r.driver,
    device: r.device,
    bytes: r.bytes,
    ops: r.ops,
    bias: r.bias,
  }));

function makeQueue(layout: 'split' | 'packed', mem: GuestMemory, a: QueueAddresses, f: QueueFeatures): DeviceQueue {
  return layout === 'split' ? new SplitQueue(mem, a, f) : new PackedQueue(mem, a, f);
}

function ringRanges(layout: 'split' | 'packed', a: QueueAddresses): [number, number][] {
  const n = a.size;
  return layout === 'split'
    ? [[a.desc, a.desc + 16 * n], [a.driver, a.driver + 2 * (n + 3)], [a.device, a.device + 8 * n + 6]]
    : [[a.desc, a.desc + 16 * n], [a.driver, a.driver + 4], [a.device, a.device + 4]];
}

function disjoint(r: [number, number][]): boolean {
  for (let i = 0; i < r.length; i++) for (let j = i + 1; j < r.length; j++) if (r[i]![0] < r[j]![1] && r[j]![0] < r[i]![1]) return false;
  return true;
}

function fuzzOne(c: Case): void {
  const backing = new Uint8Array(GUARD + GUEST + GUARD).fill(GUARD_BYTE);
  const region = backing.subarray(GUARD, GUARD + GUEST);
  region.set(c.bytes);
  const mem = new GuestMemory([{ gpa: 0, bytes: region }]);
  if (c.bias === true && c.size > 0) {
    const dv = new DataView(region.buffer, region.byteOffset, region.byteLength);
    const sane = (c.bytes[1] ?? 0) % 2 === 0; // and, half the time, a head descriptor that makes sense
    if (c.layout === 'split' && c.driver >= 0 && c.driver + 6 <= GUEST) {
      dv.setUint16(c.driver + 2, (c.bytes[0] ?? 0) % (c.size + 1), true); // avail idx within the queue size
      if (sane) dv.setUint16(c.driver + 4, 0, true);
    }
    if (c.desc >= 0 && c.desc + 16 <= GUEST) {
      if (sane) {
        dv.setUint32(c.desc, (c.bytes[2] ?? 0) * 64, true); // inside memory, or past its end
        if (c.layout === 'packed') dv.setUint16(c.desc + 12, (c.bytes[4] ?? 0) % c.size, true); // a valid buffer id
        dv.setUint32(c.desc + 4, 0, true);
        dv.setUint32(c.desc + 8, (c.bytes[3] ?? 0) % 64, true);
      }
      const off = c.layout === 'split' ? 12 : 14;
      const flags = dv.getUint16(c.desc + off, true);
      // split: no NEXT/INDIRECT when sane; packed: head available in wrap 1.
      const f = c.layout === 'split' ? (sane ? flags & 2 : flags) : ((sane ? flags & 2 : flags) | 0x80) & 0x7fff;
      dv.setUint16(c.desc + off, f, true);
    }
  }
  const a: QueueAddresses = { size: c.size, desc: c.desc, driver: c.driver, device: c.device };
  let q: DeviceQueue | null = null;
  try {
    q = makeQueue(c.layout, mem, a, c.features);
  } catch (err) {
    expect(err).toBeInstanceOf(QueueConfigError); // the only error set-up may raise
  }
  if (q !== null) {
    const chain = q.newChain();
    let steps = 0;
    for (const op of c.ops) {
      if (++steps > 200) break;
      switch (op % 4) {
        case 0:
        case 1: {
          const r = q.popChain(chain);
          expect([Pop.CHAIN, Pop.EMPTY, Pop.BAD_CHAIN, Pop.BROKEN]).toContain(r);
          seen.set(r, (seen.get(r) ?? 0) + 1);
          if (r === Pop.CHAIN) {
            for (let i = 0; i < chain.count; i++) {
              const reg = mem.regions[chain.region[i]!]!;
              expect(chain.offset[i]! + chain.len[i]!).toBeLessThanOrEqual(reg.size);
            }
          }
          if (r === Pop.CHAIN || r === Pop.BAD_CHAIN) q.addUsed(chain.head, r === Pop.CHAIN ? op % (chain.writableBytes + 1) : 0, chain.ringSlots);
          break;
        }
        case 2:
          q.flushUsed();
          break;
        default:
          if (op % 8 === 3) q.enableNotifications();
          else q.disableNotifications();
      }
    }
    q.flushUsed();
  }
  // Nothing outside guest memory was written.
  for (let i = 0; i < GUARD; i++) {
    if (backing[i] !== GUARD_BYTE || backing[GUARD + GUEST + i] !== GUARD_BYTE) {
      throw new Error(`guard byte ${i < GUARD ? i : GUARD + GUEST + i} changed`);
    }
  }
  // Afterwards (reset, as a driver would), the queue carries a good chain:
  // the same queue when its rings fit without overlap, else a fresh layout.
  region.fill(0);
  let addr = a;
  if (q === null || !disjoint(ringRanges(c.layout, a))) {
    const size = c.layout === 'split' ? 8 : 5;
    const l = c.layout === 'split' ? splitLayout(0, size) : packedLayout(0, size);
    addr = { size, desc: l.desc, driver: l.driver, device: l.device };
    q = makeQueue(c.layout, mem, addr, c.features);
  }
  q.reset();
  const driver = c.layout === 'split' ? new SplitDriver(mem, addr, c.features) : new PackedDriver(mem, addr, c.features);
  const ends = ringRanges(c.layout, addr).map((r) => r[1]);
  const buf = Math.max(...ends);
  const target = buf + 64 <= GUEST ? buf : 0; // any in-memory buffer will do when the rings fill memory
  driver.beginChain();
  driver.addSegment(target, 8, true);
  expect(driver.commitChain(99)).toBeGreaterThanOrEqual(0);
  driver.publish();
  const chain = q.newChain();
  expect(q.popChain(chain)).toBe(Pop.CHAIN);
  q.addUsed(chain.head, 8, chain.ringSlots);
  q.flushUsed();
  expect(driver.popUsed()).toBe(99);
}

describe('fuzz: arbitrary rings', () => {
  it(`only declared errors escape and guest memory bounds hold (${RUNS} cases)`, () => {
    fc.assert(fc.property(arbCase, fuzzOne), { numRuns: RUNS });
    // The cases reached good chains, bad chains and broken rings, not only empty ones.
    expect([Pop.CHAIN, Pop.BAD_CHAIN, Pop.BROKEN, Pop.EMPTY].map((r) => (seen.get(r) ?? 0) > 0)).toEqual([true, true, true, true]);
  }, 120_000);

  it('a hand-picked hostile case: every byte 0xff', () => {
    fuzzOne({ layout: 'split', size: 16, features: { eventIdx: true, indirect: true, inOrder: false }, desc: 0, driver: 256, device: 512, bytes: new Uint8Array(GUEST).fill(0xff), ops: [0, 0, 1, 2, 3, 0] });
    fuzzOne({ layout: 'packed', size: 16, features: { eventIdx: true, indirect: true, inOrder: false }, desc: 0, driver: 256, device: 260, bytes: new Uint8Array(GUEST).fill(0xff), ops: [0, 0, 1, 2, 3, 0] });
  });
});
