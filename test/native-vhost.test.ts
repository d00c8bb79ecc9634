// The system pieces of a vhost-user backend: Unix sockets with SCM_RIGHTS,
// shared memory mappings, and eventfds. No privileges needed.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { native, nativeAddonPath } from '../src/host/binding.js';
import { IoPlan, registerIoRegion, unregisterIoRegion } from '../src/host/io-plan.js';

const EAGAIN = -11;
const EFAULT = -14;
const EINVAL = -22;
const n = native();
const openFds = () => readdirSync('/proc/self/fd').length;

describe('vhost-user system pieces', () => {
  let dir: string;
  const fds: number[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vt-vhost-'));
  });
  afterEach(() => {
    for (const fd of fds.splice(0)) n.close(fd);
    rmSync(dir, { recursive: true, force: true });
  });
  const keep = (fd: number) => {
    expect(fd).toBeGreaterThanOrEqual(0);
    fds.push(fd);
    return fd;
  };

  function connected(): [number, number] {
    const path = join(dir, 'sock');
    const l = keep(n.unixListen(path));
    expect(n.unixAccept(l)).toBe(EAGAIN); // nobody yet
    const c = keep(n.unixConnect(path));
    const s = keep(n.unixAccept(l));
    return [c, s];
  }

  it('passes fds with a message; a passed memfd maps the same memory', () => {
    const [c, s] = connected();
    const mem = keep(n.memfdCreate('guest-ram', 1 << 20));
    const ev = keep(n.eventfdCreate());
    expect(n.sendWithFds(c, Uint8Array.of(1, 2, 3), Int32Array.of(mem, ev))).toBe(3);
    const buf = new Uint8Array(16);
    const got = new Int32Array(9);
    expect(n.recvWithFds(s, buf, got)).toBe(3);
    expect(got[0]).toBe(2);
    const memB = keep(got[1]!);
    const evB = keep(got[2]!);
    const a = n.mmapShared(mem, 1 << 20, 0);
    const b = n.mmapShared(memB, 1 << 20, 0);
    if (typeof a === 'number' || typeof b === 'number') throw new Error(`mmap failed: ${a} ${b}`);
    new Uint8Array(a)[4096] = 0x5a;
    expect(new Uint8Array(b)[4096]).toBe(0x5a);
    // The eventfd is the same object too.
    expect(n.eventfdWrite(ev)).toBe(0);
    expect(n.eventfdWrite(ev)).toBe(0);
    expect(n.eventfdRead(evB)).toBe(2);
    expect(n.eventfdRead(evB)).toBe(EAGAIN);
    expect(n.unmap(a)).toBe(0);
    expect(n.unmap(b)).toBe(0);
  });

  it('more fds than the caller takes are all closed, none handed over, and the message is marked', () => {
    const [c, s] = connected();
    const sent = [0, 1, 2, 3, 4].map(() => keep(n.eventfdCreate()));
    const before = openFds();
    expect(n.sendWithFds(c, Uint8Array.of(9), Int32Array.from(sent))).toBe(1);
    const got = new Int32Array(3); // room for 2
    expect(n.recvWithFds(s, new Uint8Array(4), got)).toBe(1);
    expect(got[0]).toBe(-1);
    // regression: the two that fitted were handed over and leaked (the caller refuses the message and never sees them).
    expect(openFds()).toBe(before);
  });

  it('an unmapped region reads as empty and native I/O refuses it', () => {
    const mem = keep(n.memfdCreate('r', 8192));
    const ab = n.mmapShared(mem, 8192, 0);
    if (typeof ab === 'number') throw new Error(`mmap failed: ${ab}`);
    const view = new Uint8Array(ab);
    const region = registerIoRegion(view);
    expect(n.unmap(ab)).toBe(0);
    expect(view.length).toBe(0); // detached: no JavaScript access reaches the unmapped pages
    expect(ab.byteLength).toBe(0);
    const [c] = connected();
    const plan = new IoPlan(1);
    plan.beginFrame();
    plan.addSegment(region, 0, 16);
    expect(n.writevBatch(c, plan.plan, 1, plan.results)).toBe(1);
    expect(plan.results[0]).toBe(EFAULT);
    unregisterIoRegion(region);
    expect(n.unmap(ab)).toBe(EINVAL); // twice
  });

  it('an address mapped again after unmap is unmapped by the new buffer', () => {
    const mem = keep(n.memfdCreate('again', 8192));
    for (let i = 0; i < 4; i++) {
      const ab = n.mmapShared(mem, 8192, 0);
      if (typeof ab === 'number') throw new Error(`mmap failed: ${ab}`);
      expect(n.unmap(ab)).toBe(0);
    }
  });

  it("a worker's mappings are its own and are unmapped when the worker goes", async () => {
    const name = `vt-worker-map-${process.pid}`;
    const mapped = () => readFileSync('/proc/self/maps', 'utf8').includes(name);
    const mine = n.mmapShared(keep(n.memfdCreate('main', 4096)), 4096, 0);
    if (typeof mine === 'number') throw new Error(`mmap failed: ${mine}`);
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const n = require(workerData.addon);
       const fd = n.memfdCreate(workerData.name, 1 << 20);
       const left = n.mmapShared(fd, 1 << 20, 0);
       const gone = n.mmapShared(fd, 4096, 0);
       n.close(fd);
       new Uint8Array(left)[0] = 1;
       parentPort.postMessage([n.unmap(gone), n.unmap(workerData.probe)]);
       setInterval(() => left, 1000);`,
      { eval: true, workerData: { addon: nativeAddonPath(), name, probe: new ArrayBuffer(8) } },
    );
    const [unmapped, foreign] = await new Promise<number[]>((r) => worker.once('message', r));
    expect(unmapped).toBe(0);
    expect(foreign).toBe(EINVAL); // not a mapping of this environment
    expect(mapped()).toBe(true); // the mapping the worker left in use
    await worker.terminate();
    expect(mapped()).toBe(false);
    expect(n.unmap(mine)).toBe(0); // the main thread's table is untouched
  });

  it('a socket path too long for sun_path is a RangeError', () => {
    expect(() => n.unixListen(join(dir, 'x'.repeat(200)))).toThrow(RangeError);
  });
});
