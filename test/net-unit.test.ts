// The net device without privileges: its TAP is a stand-in whose queues are
// SOCK_SEQPACKET socket pairs (the same native I/O and readiness as a TAP);
// the test is the host on the other end.
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';

import { NetDriver } from '../src/driver/net-driver.js';
import { NetDevice, type NetDeviceOptions } from '../src/net/device.js';
import type { NetFeatureSwitches } from '../src/net/features.js';
import { readNetHeader } from '../src/net/net-header.js';
import type { NetQueueContext } from '../src/net/queue-context.js';
import { RxBuffers } from '../src/net/rx-buffers.js';
import { makeQueueRig } from '../src/driver/rig.js';
import { SplitQueue } from '../src/virtio/split-queue.js';
import { Tap, TapPeer } from '../src/tap/tap.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../src/virtio/constants.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rig(features: NetFeatureSwitches = {}, device: Partial<NetDeviceOptions> = {}, queueSize = 64) {
  const { tap, peers } = Tap.socketPair({ name: 'sp0' });
  let driver!: NetDriver;
  const dev = new NetDevice({ tap, interrupt: (k, q) => driver.interrupt(k, q), features, ...device });
  const errors: Error[] = [];
  dev.on('error', (e: Error) => errors.push(e));
  driver = new NetDriver(dev, { queueSize });
  driver.start();
  const peer = peers[0] as TapPeer;
  return {
    tap,
    dev,
    driver,
    peer,
    errors,
    close() {
      dev.close();
      tap.close();
      peer.close();
    },
  };
}

/** Reads what the device wrote to the stand-in TAP, waiting up to ms. */
async function readPeer(peer: TapPeer, ms = 1000): Promise<Uint8Array | null> {
  const buf = new Uint8Array(70000);
  const deadline = Date.now() + ms;
  for (;;) {
    const n = peer.read(buf);
    if (n >= 0) return buf.slice(0, n);
    if (Date.now() > deadline) return null;
    await sleep(2);
  }
}

function frameOf(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len).map((_, i) => (i * 7 + seed) & 0xff);
  f.set([2, 0, 0, 0, 0, 1], 0); // unicast destination
  return f;
}

let open: { close(): void }[] = [];
afterEach(() => {
  for (const r of open) r.close();
  open = [];
});

describe.each([
  ['split', false],
  ['split', true],
  ['packed', false],
  ['packed', true],
] as const)('net device over a socket pair: %s ring, MRG_RXBUF %s', (layout, mrg) => {
  const features: NetFeatureSwitches = { RING_PACKED: layout === 'packed', MRG_RXBUF: mrg };

  it('transmit: each frame reaches the host end with its header', async () => {
    const r = rig(features);
    open.push(r);
    for (const len of [14, 60, 1514, 9000]) {
      expect(r.driver.send(frameOf(len, len))).toBe(true);
      const got = await readPeer(r.peer);
      expect(got?.length).toBe(12 + len);
      expect(Buffer.from(got!.subarray(12)).equals(Buffer.from(frameOf(len, len)))).toBe(true);
    }
    expect(r.dev.metrics.txPackets).toBe(4);
  });

  it('receive: frames the host end writes arrive whole; num_buffers is little-endian; flags cleared without GUEST_CSUM', async () => {
    const r = rig({ ...features, GUEST_CSUM: false, GUEST_TSO4: false, GUEST_TSO6: false, GUEST_ECN: false, GUEST_UFO: false, GUEST_USO4: false, GUEST_USO6: false });
    open.push(r);
    const frames: Uint8Array[] = [];
    r.driver.onFrame = (f) => {
      frames.push(f.frame);
      expect(f.header.flags).toBe(0); // §5.1.6.4.1, although the host end set DATA_VALID
      expect(f.header.numBuffers).toBeGreaterThanOrEqual(1);
    };
    const sizes = [14, 100, 1514, 1514];
    for (const [i, len] of sizes.entries()) {
      const buf = new Uint8Array(12 + len);
      buf[0] = 2; // VIRTIO_NET_HDR_F_DATA_VALID from the host
      buf[10] = 0xee; // garbage where num_buffers goes: the device must overwrite it
      buf[11] = 0xee;
      buf.set(frameOf(len, i), 12);
      expect(r.peer.write(buf)).toBe(buf.length);
    }
    const t0 = Date.now();
    while (frames.length < sizes.length && Date.now() - t0 < 1000) await sleep(2);
    expect(frames.map((f) => f.length)).toEqual(sizes);
    expect(Buffer.from(frames[2]!).equals(Buffer.from(frameOf(1514, 2)))).toBe(true);
  });

  it('receive: a burst of small and large frames in any order arrives whole, each with its own bytes', async () => {
    // With guest GSO, a mergeable read offers room for 64 KiB; large frames
    // after small ones (and small after large) in one batch must all land right.
    // Without IN_ORDER, as Linux guests negotiate, reads are batched.
    const r = rig({ ...features, IN_ORDER: false });
    open.push(r);
    const frames: Uint8Array[] = [];
    r.driver.onFrame = (f) => frames.push(f.frame);
    const sizes = [60, 9000, 60, 1514, 9000, 3000, 60, 1514, 12000, 60];
    for (const [i, len] of sizes.entries()) {
      const buf = new Uint8Array(12 + len);
      buf.set(frameOf(len, 40 + i), 12);
      expect(r.peer.write(buf)).toBe(buf.length);
    }
    const t0 = Date.now();
    while (frames.length < sizes.length && Date.now() - t0 < 2000) await sleep(2);
    expect(frames.map((f) => f.length)).toEqual(sizes);
    frames.forEach((f, i) => expect(Buffer.from(f).equals(Buffer.from(frameOf(sizes[i]!, 40 + i))), `frame ${i}`).toBe(true));
    expect(r.dev.metrics.dropped).toBe(0);
  });

  it('receive backpressure: with few buffers, a burst waits in the host end and all of it arrives', async () => {
    const r = rig(features, {}, 8);
    open.push(r);
    let got = 0;
    r.driver.onFrame = () => got++;
    for (let i = 0; i < 200; i++) expect(r.peer.write(new Uint8Array(12 + 60).fill(i & 0xff))).toBe(72);
    const t0 = Date.now();
    while (got < 200 && Date.now() - t0 < 3000) await sleep(5);
    expect(got).toBe(200);
    expect(r.dev.metrics.rxNoBuffer).toBeGreaterThan(0);
    expect(r.dev.metrics.dropped).toBe(0);
  });
});

describe('net device over a socket pair: bad input from the guest', () => {
  it('regression: num_buffers written little-endian with MRG_RXBUF', async () => {
    const r = rig({ MRG_RXBUF: true }, {}, 64);
    open.push(r);
    let hdr: ReturnType<typeof readNetHeader> | null = null;
    r.driver.onFrame = (f) => (hdr = f.header);
    const buf = new Uint8Array(12 + 9000); // takes three 4 KiB buffers
    buf.set(frameOf(9000, 1), 12);
    r.peer.write(buf);
    const t0 = Date.now();
    while (hdr === null && Date.now() - t0 < 1000) await sleep(2);
    expect(hdr).not.toBeNull();
    expect(hdr!.numBuffers).toBe(3);
  });

  it('a frame larger than the buffers left waits for more buffers, never cut short (MRG_RXBUF)', async () => {
    const r = rig({ MRG_RXBUF: true, IN_ORDER: false }, {}, 8); // eight 4 KiB buffers
    open.push(r);
    const got: Uint8Array[] = [];
    r.driver.onFrame = (f) => got.push(f.frame);
    // 14 buffers' worth in all: the second 9000-byte frame finds two buffers left.
    const sent = [60, 9000, 60, 1514, 9000, 3000, 60, 1514].map((len, i) => frameOf(len, 10 + i));
    for (const f of sent) r.peer.write(Buffer.concat([new Uint8Array(12), f]));
    const t0 = Date.now();
    while (got.length < sent.length && Date.now() - t0 < 2000) await sleep(5);
    expect(got.map((f) => f.length)).toEqual(sent.map((f) => f.length));
    got.forEach((f, i) => expect(Buffer.from(f).equals(Buffer.from(sent[i]!)), `frame ${i}`).toBe(true));
    expect(r.dev.metrics.dropped).toBe(0);
  });

  it('a frame larger than every buffer the ring offers is counted, and later frames still come (MRG_RXBUF)', async () => {
    const r = rig({ MRG_RXBUF: true, IN_ORDER: false }, {}, 2); // two 4 KiB buffers in all
    open.push(r);
    const got: number[] = [];
    r.driver.onFrame = (f) => got.push(f.frame.length);
    r.peer.write(Buffer.concat([new Uint8Array(12), frameOf(9000, 1)]));
    r.peer.write(Buffer.concat([new Uint8Array(12), frameOf(100, 2)]));
    const t0 = Date.now();
    while (got.length < 1 && Date.now() - t0 < 2000) await sleep(5);
    expect(got).toEqual([100]);
    expect(r.dev.metrics.drops.rx_frame_truncated).toBe(1);
  });

  it('transmit timer: the first frame goes on its kick, the burst after it without kicks, and kicks come back when the ring is quiet', async () => {
    const r = rig({}, { txTimerMs: 25 }, 64);
    open.push(r);
    const m = r.dev.metrics;
    const kicks0 = m.kicks;
    const t0 = Date.now();
    expect(r.driver.send(frameOf(100, 1))).toBe(true);
    expect((await readPeer(r.peer, 20))?.length).toBe(12 + 100); // at once, on its kick
    expect(Date.now() - t0).toBeLessThan(20);
    expect(m.kicks).toBe(kicks0 + 1);
    // Within the timer's period: kicks stay off, and the timer sends them.
    for (let i = 0; i < 5; i++) expect(r.driver.send(frameOf(200 + i, 2 + i))).toBe(true);
    expect(m.kicks).toBe(kicks0 + 1);
    for (let i = 0; i < 5; i++) expect((await readPeer(r.peer, 500))?.length).toBe(12 + 200 + i);
    // Two periods with nothing: the device asks for kicks again.
    await sleep(80);
    const t1 = Date.now();
    expect(r.driver.send(frameOf(300, 9))).toBe(true);
    expect(m.kicks).toBe(kicks0 + 2);
    expect((await readPeer(r.peer, 20))?.length).toBe(12 + 300);
    expect(Date.now() - t1).toBeLessThan(20);
    expect(m.txPackets).toBe(7);
    expect(() => rig({}, { txTimerMs: -1 })).toThrow(RangeError);
    expect(() => rig({}, { txTimerMs: 0.5 })).toThrow(/txTimerMs/);
  });

  it('fuzz: random transmit chains are sent or dropped and counted, never thrown, and a good frame goes after', async () => {
    const r = rig({}, {}, 64);
    open.push(r);
    const txq = r.driver.txQueue(0);
    const scratch = r.driver.allocate(70000);
    const memSize = r.driver.mem.regions[0]!.size;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            hdr: fc.uint8Array({ minLength: 12, maxLength: 12 }),
            segs: fc.array(fc.record({ off: fc.integer({ min: -64, max: 70000 }), len: fc.integer({ min: 0, max: 70000 }), w: fc.boolean() }), { minLength: 1, maxLength: 4 }),
            outside: fc.boolean(),
          }),
          { minLength: 1, maxLength: 8 },
        ),
        async (chains) => {
          const before = r.dev.metrics.txPackets + r.dev.metrics.dropped;
          for (const c of chains) {
            r.driver.mem.write(scratch, c.hdr);
            txq.beginChain();
            for (const s of c.segs) {
              const addr = c.outside ? memSize + Math.abs(s.off) : Math.max(0, scratch + s.off);
              txq.addSegment(addr, s.len, s.w);
            }
            if (txq.commitChain(1) < 0) continue;
            txq.publish();
            while (txq.popUsed() >= 0);
          }
          // Every chain was sent or counted as a drop.
          const handled = r.dev.metrics.txPackets + r.dev.metrics.dropped - before;
          expect(handled).toBe(chains.length);
          // Drain what reached the host end.
          const buf = new Uint8Array(70000);
          while (r.peer.read(buf) >= 0);
        },
      ),
      { numRuns: 200 },
    );
    expect(r.errors).toEqual([]);
    expect(r.dev.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    expect(r.driver.send(frameOf(60, 9))).toBe(true);
    const got = await readPeer(r.peer);
    expect(got?.length).toBe(72);
  });

  it('a corrupt transmit ring: DEVICE_NEEDS_RESET, a config interrupt, kicks ignored, then a reset works', async () => {
    const r = rig({ RING_PACKED: false }, {}, 16);
    open.push(r);
    let config = 0;
    r.driver.onConfigChange = () => config++;
    const txq = r.driver.txQueue(0);
    // Make the available index jump past the queue size (§2.7).
    const a = txq.addresses.driver;
    const v = r.driver.mem.view(a + 2, 2);
    v[0] = 0x40;
    r.dev.kick(1);
    expect(r.dev.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(r.dev.brokenReason).toBe('AVAIL_INDEX_JUMP');
    expect(config).toBe(1);
    r.dev.kick(1);
    expect(r.dev.coreStats.kicksIgnored).toBe(1);
    r.driver.start(); // the driver resets and sets the device up again
    expect(r.driver.send(frameOf(60, 3))).toBe(true);
    expect((await readPeer(r.peer))?.length).toBe(72);
  });
});

describe('receive buffers', () => {
  it('a frame fills its chains in order: bytes split, num_buffers and flags set, the rest stay pending or go back', () => {
    const rig = makeQueueRig({ layout: 'split', size: 8 });
    const q = new SplitQueue(rig.mem, rig.addresses, rig.features);
    const bufs = [0, 1, 2].map(() => rig.alloc.alloc(100));
    bufs.forEach((b, i) => {
      rig.mem.view(b, 12).fill(0xff); // flags set, to be cleared without GUEST_CSUM
      rig.driver.beginChain();
      rig.driver.addSegment(b, 100, true);
      rig.driver.commitChain(i);
    });
    rig.driver.publish();
    const drops: string[] = [];
    const ctx = { markBroken: () => {} } as unknown as NetQueueContext;
    const rx = new RxBuffers(q, ctx, { drop: (r) => drops.push(r) }, false, 4, 4);
    expect(rx.fill(12)).toBe(true);
    expect([rx.pending, rx.plan.frames]).toEqual([3, 3]);
    rx.beginRead();
    expect(rx.chainsFor(0, 150, 3)).toBe(2);
    rx.markUsed(0, 150, 2);
    rx.endRead();
    expect([rx.pending, rx.plan.frames, rx.entries.head[0]]).toEqual([1, 1, 2]);
    const hdr = readNetHeader(new DataView(rig.mem.view(bufs[0]!, 12).slice().buffer), 0);
    expect([hdr.numBuffers, hdr.flags]).toEqual([2, 0]);
    q.flushUsed();
    const used: [number, number][] = [];
    for (let t = rig.driver.popUsed(); t >= 0; t = rig.driver.popUsed()) used.push([t, rig.driver.usedLen]);
    expect(used).toEqual([
      [0, 100],
      [1, 50],
    ]);
    // The chain left pending goes back to the ring and is popped again.
    rx.giveBack();
    expect(rx.pending).toBe(0);
    expect(rx.fill(12)).toBe(true);
    expect([rx.pending, rx.entries.head[0], drops.length]).toEqual([1, 2, 0]);
  });
});

describe('Tap.socketPair', () => {
  it('refuses what only a kernel interface can do, clearly', () => {
    const { tap, peers } = Tap.socketPair({ name: 'sp1' });
    try {
      expect(() => tap.setIpv4('198.18.0.1', 24)).toThrow(expect.objectContaining({ code: 'ERR_TAP_NOT_KERNEL' }));
      expect(() => tap.setPersistent(true)).toThrow(expect.objectContaining({ code: 'ERR_TAP_NOT_KERNEL' }));
      tap.setMtu(9000);
      expect(tap.mtu).toBe(9000);
      expect(tap.setOffloads(0x7f | 0x100)).toEqual({ accepted: 0x7f, refused: 0x100 });
    } finally {
      tap.close();
      for (const p of peers) p.close();
    }
  });
});
