// The native layer's checks on I/O plans, over a FIFO: no privileges needed.
// Whatever a plan says, native I/O touches only registered, attached memory.
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { native } from '../src/host/binding.js';
import { IoPlan, registerIoRegion, unregisterIoRegion } from '../src/host/io-plan.js';

const EFAULT = -14;
const EINVAL = -22;
const EAGAIN = -11;
const EMSGSIZE = -90;

describe('batched I/O plans', () => {
  let dir: string;
  let fd: number;
  const regions: number[] = [];
  const n = native();

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vt-plan-'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    fd = openSync(join(dir, 'fifo'), constants.O_RDWR | constants.O_NONBLOCK);
  });
  afterEach(() => {
    for (const r of regions.splice(0)) n.unregisterRegion(r);
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  function region(view: ArrayBufferView): number {
    const r = registerIoRegion(view);
    regions.push(r);
    return r;
  }

  function drain(): number[] {
    const buf = new Uint8Array(65536);
    const got = n.readFrame(fd, buf);
    return got > 0 ? Array.from(buf.subarray(0, got)) : [];
  }

  it('writes the planned segments in order, gathering across regions', () => {
    const a = region(Uint8Array.of(1, 2, 3, 4));
    const b = region(new Uint8Array(new SharedArrayBuffer(4)).fill(9));
    const plan = new IoPlan(2);
    plan.beginFrame();
    plan.addSegment(a, 2, 2);
    plan.addSegment(b, 0, 1);
    plan.addSegment(a, 0, 1);
    expect(n.writevBatch(fd, plan.plan, plan.frames, plan.results)).toBe(1);
    expect(plan.results[0]).toBe(4);
    expect(drain()).toEqual([3, 4, 9, 1]);
  });

  it('segments that are one run of memory are written as one, in order', () => {
    const a = region(Uint8Array.of(1, 2, 3, 4, 5, 6));
    const b = region(Uint8Array.of(9));
    const plan = new IoPlan(1);
    plan.beginFrame();
    plan.addSegment(a, 0, 2); // a header right before its frame ...
    plan.addSegment(a, 2, 3); // ... is one iovec
    plan.addSegment(b, 0, 1);
    plan.addSegment(a, 5, 1);
    expect(n.writevBatch(fd, plan.plan, 1, plan.results)).toBe(1);
    expect(plan.results[0]).toBe(7);
    expect(drain()).toEqual([1, 2, 3, 4, 5, 9, 6]);
  });

  describe('mergeable reads place the bytes in the groups, in group order', () => {
    const data = Uint8Array.from({ length: 2500 }, (_, i) => (i * 7) & 0xff);
    function readInto(offsets: number[]): Uint8Array {
      const mem = new Uint8Array(4096).fill(0xaa);
      const r = region(mem);
      const plan = new IoPlan(offsets.length);
      for (const o of offsets) {
        plan.beginFrame();
        plan.addSegment(r, o, 1024);
      }
      expect(n.writeFrame(fd, data)).toBe(data.length);
      const results = new Int32Array(8);
      const state = new Int32Array(1);
      // Room for one frame: at least 1000 bytes, at most all four groups.
      expect(n.readvMergeable(fd, plan.plan, offsets.length, 1000, 4096, results, new Uint8Array(4097), state)).toBe(2);
      expect(Array.from(results.subarray(0, 4))).toEqual([2500, 3, EAGAIN, 0]);
      expect(state[0]).toBe(0);
      return mem;
    }
    it('groups that are one run of memory', () => {
      const mem = readInto([0, 1024, 2048, 3072]);
      expect(mem.subarray(0, 2500)).toEqual(data);
      expect(mem.subarray(2500).every((b) => b === 0xaa)).toBe(true);
    });
    it('a frame larger than the groups left is held, then placed first when there is room', () => {
      const mem = new Uint8Array(4096).fill(0xaa);
      const r = region(mem);
      const hold = new Uint8Array(4097);
      const state = new Int32Array(1);
      const results = new Int32Array(8);
      const planOf = (count: number) => {
        const plan = new IoPlan(count);
        for (let i = 0; i < count; i++) {
          plan.beginFrame();
          plan.addSegment(r, i * 1024, 1024);
        }
        return plan;
      };
      expect(n.writeFrame(fd, data)).toBe(data.length);
      const small = planOf(2); // 2048 bytes: too few for 2500
      expect(n.readvMergeable(fd, small.plan, 2, 1000, 4096, results, hold, state)).toBe(0);
      expect(state[0]).toBe(2500);
      expect(mem.every((b) => b === 0xaa)).toBe(true); // nothing placed, nothing cut short
      // Still too few: nothing more is read, the frame stays held.
      expect(n.writeFrame(fd, Uint8Array.of(1, 2, 3))).toBe(3);
      expect(n.readvMergeable(fd, small.plan, 2, 1000, 4096, results, hold, state)).toBe(0);
      expect(state[0]).toBe(2500);
      const big = planOf(4);
      // The held frame first, then the later one, in order.
      expect(n.readvMergeable(fd, big.plan, 4, 1000, 4096, results, hold, state)).toBe(2);
      expect(Array.from(results.subarray(0, 4))).toEqual([2500, 3, 3, 1]);
      expect(state[0]).toBe(0);
      expect(mem.subarray(0, 2500)).toEqual(data);
      expect(Array.from(mem.subarray(3072, 3076))).toEqual([1, 2, 3, 0xaa]);
    });

    it('a frame larger than maxRoom is reported (EMSGSIZE), takes no group, and reading goes on', () => {
      const mem = new Uint8Array(4096).fill(0xaa);
      const r = region(mem);
      const plan = new IoPlan(4);
      for (let i = 0; i < 4; i++) {
        plan.beginFrame();
        plan.addSegment(r, i * 1024, 1024);
      }
      // A FIFO hands out bytes, not frames: the first read takes 4097 (one
      // more than maxRoom, so: too large), the next the 903 left.
      expect(n.writeFrame(fd, new Uint8Array(5000).fill(3))).toBe(5000);
      const results = new Int32Array(8);
      const state = new Int32Array(1);
      expect(n.readvMergeable(fd, plan.plan, 4, 1000, 4096, results, new Uint8Array(4097), state)).toBe(3);
      expect(Array.from(results.subarray(0, 6))).toEqual([EMSGSIZE, 0, 903, 1, EAGAIN, 0]);
      expect(mem.subarray(0, 903).every((b) => b === 3)).toBe(true);
      expect(mem.subarray(903).every((b) => b === 0xaa)).toBe(true);
    });

    it('groups scattered in memory (through the bounce buffer)', () => {
      const mem = readInto([3072, 1024, 2048, 0]);
      expect(mem.subarray(3072, 4096)).toEqual(data.subarray(0, 1024));
      expect(mem.subarray(1024, 2048)).toEqual(data.subarray(1024, 2048));
      expect(mem.subarray(2048, 2048 + 452)).toEqual(data.subarray(2048));
      expect(mem.subarray(2500, 3072).every((b) => b === 0xaa)).toBe(true);
      expect(mem.subarray(0, 1024).every((b) => b === 0xaa)).toBe(true);
    });
  });

  it('refuses segments outside their region and writes nothing for that frame', () => {
    const r = region(new Uint8Array(16).fill(7));
    const cases: [number, number, number][] = [
      [r, 8, 9], // one byte past the end
      [r, 17, 0], // starts past the end
      [r, -1, 1],
      [r, 0.5, 1],
      [r, Number.NaN, 1],
      [r, 0, Number.POSITIVE_INFINITY],
      [r + 100, 0, 1], // no such region
      [-1, 0, 1],
      [r, 2 ** 53, 1],
    ];
    const plan = new IoPlan(cases.length + 1);
    for (const [reg, off, len] of cases) {
      plan.beginFrame();
      plan.addSegment(reg, off, len);
    }
    plan.beginFrame();
    plan.addSegment(r, 15, 1); // the last byte: fine
    expect(n.writevBatch(fd, plan.plan, plan.frames, plan.results)).toBe(cases.length + 1);
    expect(Array.from(plan.results.subarray(0, cases.length))).toEqual(cases.map(() => EFAULT));
    expect(plan.results[cases.length]).toBe(1);
    expect(drain()).toEqual([7]);
  });

  it('reads never land outside the planned segment', () => {
    const mem = new Uint8Array(32).fill(0xaa);
    const r = region(mem);
    expect(n.writeFrame(fd, Uint8Array.of(1, 2, 3, 4, 5, 6))).toBe(6);
    const plan = new IoPlan(1);
    plan.beginFrame();
    plan.addSegment(r, 10, 4);
    expect(n.readvBatch(fd, plan.plan, 1, plan.results)).toBe(1);
    expect(plan.results[0]).toBe(4);
    expect(Array.from(mem.subarray(8, 16))).toEqual([0xaa, 0xaa, 1, 2, 3, 4, 0xaa, 0xaa]);
    drain();
  });

  it('a detached (transferred) buffer is refused, not written', () => {
    const ab = new ArrayBuffer(64);
    const r = region(new Uint8Array(ab));
    structuredClone(ab, { transfer: [ab] });
    expect(ab.byteLength).toBe(0);
    const plan = new IoPlan(1);
    plan.beginFrame();
    plan.addSegment(r, 0, 8);
    expect(n.writevBatch(fd, plan.plan, 1, plan.results)).toBe(1);
    expect(plan.results[0]).toBe(EFAULT);
  });

  it('a malformed plan stops the batch with EINVAL', () => {
    const r = region(new Uint8Array(8));
    const plan = new Float64Array([1, r, 0, 1, 5, r, 0, 1]); // second frame claims 5 segments
    const results = new Int32Array(4);
    expect(n.writevBatch(fd, plan, 3, results)).toBe(2);
    expect(Array.from(results.subarray(0, 2))).toEqual([1, EINVAL]);
    expect(n.writevBatch(fd, new Float64Array([2000]), 1, results)).toBe(1); // over IOV_MAX
    expect(results[0]).toBe(EINVAL);
    expect(() => n.writevBatch(fd, plan, 9, results)).toThrow(RangeError); // more frames than results
    drain();
  });

  it('stops at EAGAIN, leaving later frames unprocessed', () => {
    const r = region(new Uint8Array(4));
    const plan = new IoPlan(3);
    for (let i = 0; i < 3; i++) {
      plan.beginFrame();
      plan.addSegment(r, 0, 4);
    }
    // Empty FIFO: the first read would block.
    expect(n.readvBatch(fd, plan.plan, plan.frames, plan.results)).toBe(1);
    expect(plan.results[0]).toBe(EAGAIN);
  });

  it('an unregistered region index is refused', () => {
    const r = registerIoRegion(new Uint8Array(8));
    unregisterIoRegion(r);
    const plan = new IoPlan(1);
    plan.beginFrame();
    plan.addSegment(r, 0, 1);
    expect(n.writevBatch(fd, plan.plan, 1, plan.results)).toBe(1);
    expect(plan.results[0]).toBe(EFAULT);
  });

  it('IoPlan reports full instead of overflowing', () => {
    const plan = new IoPlan(1, 1);
    expect(plan.beginFrame()).toBe(true);
    expect(plan.addSegment(0, 0, 1)).toBe(true);
    expect(plan.addSegment(0, 0, 1)).toBe(false);
    expect(plan.beginFrame()).toBe(false);
    expect(plan.frames).toBe(1);
  });

  it('IoPlan accessors walk frames and segments by plan position', () => {
    const plan = new IoPlan(3, 4);
    plan.beginFrame();
    plan.addSegment(5, 10, 100);
    plan.addSegment(6, 20, 200);
    plan.beginFrame();
    plan.addSegment(7, 30, 300);
    plan.beginFrame();
    plan.addSegment(8, 40, 400);
    expect(plan.segments(0)).toBe(2);
    const second = plan.next(0);
    expect([plan.region(0, 1), plan.offset(0, 1), plan.length(0, 1)]).toEqual([6, 20, 200]);
    expect([plan.segments(second), plan.region(second, 0), plan.offset(second, 0), plan.length(second, 0)]).toEqual([1, 7, 30, 300]);
    expect(plan.skip(0, 2)).toBe(plan.next(second));
    expect(plan.skip(0, 3)).toBe(plan.end);
    // Keeping frames 0 and 2 moves the third frame up behind the first.
    expect(plan.keepFrames(Uint8Array.of(1, 0, 1))).toBe(2);
    expect([plan.segments(second), plan.region(second, 0), plan.length(second, 0)]).toEqual([1, 8, 400]);
    expect(plan.end).toBe(plan.next(second));
  });

  it('gatherFrames copies frames across segments and entries, and only from inside registered regions', () => {
    const a = new Uint8Array(64).map((_, i) => i);
    const b = new Uint8Array(64).map((_, i) => 100 + i);
    const ra = region(a);
    const rb = region(b);
    const plan = new IoPlan(4, 8);
    plan.beginFrame();
    plan.addSegment(ra, 10, 4);
    plan.addSegment(rb, 0, 3);
    plan.beginFrame(); // a merged frame runs on into the next entry
    plan.addSegment(ra, 60, 4);
    const dst = new Uint8Array(16).fill(0xff);
    // Two jobs: 9 bytes from the start to dst[2]; 3 bytes after skipping 5 (into the second segment) to dst[12].
    const jobs = Float64Array.of(0, 0, 9, 2, 0, 5, 3, 12);
    expect(n.gatherFrames(plan.plan, jobs, 2, dst)).toBe(2);
    expect([...dst]).toEqual([0xff, 0xff, 10, 11, 12, 13, 100, 101, 102, 60, 61, 0xff, 101, 102, 60, 0xff]);
    // Never past the destination's end, whatever `want` says.
    expect(n.gatherFrames(plan.plan, Float64Array.of(0, 0, 100, 14), 1, dst)).toBe(1);
    expect([...dst.subarray(14)]).toEqual([10, 11]);
    // A segment outside its region: refused, nothing read from outside.
    const bad = new IoPlan(1, 1);
    bad.beginFrame();
    bad.addSegment(ra, 60, 8);
    expect(n.gatherFrames(bad.plan, Float64Array.of(0, 0, 8, 0), 1, dst)).toBe(EFAULT);
    expect(n.gatherFrames(plan.plan, Float64Array.of(0, 0, 4, 17), 1, dst)).toBe(EFAULT);
    expect(n.gatherFrames(plan.plan, Float64Array.of(-1, 0, 4, 0), 1, dst)).toBe(EINVAL);
    expect(n.gatherFrames(plan.plan, Float64Array.of(0, 0, 4, 0), 2, dst)).toBe(EINVAL); // jobs too short for the count
  });
});
