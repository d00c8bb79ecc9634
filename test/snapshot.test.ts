// Snapshot and restore (docs/snapshot.md): a device snapshotted mid-stream,
// closed, and restored on a TAP of another name over the same guest memory,
// with the same driver; every buffer the driver posted comes back exactly
// once, and every frame gets through exactly once. Then the refusals.
import { afterEach, describe, expect, it } from 'vitest';

import type { DriverQueue } from '../src/driver/driver-queue.js';
import { NetDriver } from '../src/driver/net-driver.js';
import {
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_ANNOUNCE,
} from '../src/net/constants.js';
import { NetDevice } from '../src/net/device.js';
import type { NetFeatureSwitches } from '../src/net/features.js';
import type { NetSnapshot } from '../src/net/snapshot.js';
import { Tap, type TapPeer } from '../src/tap/tap.js';
import type { InterruptKind } from '../src/virtio/device.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const HDR = 12;
// Frames of 9000 bytes (guest GSO is negotiated, so larger than the MTU is
// fine) take three of the driver's 4096-byte MRG_RXBUF buffers.
const BIG = 9000;
const QUEUE = 16;

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A frame for pair `pair`, numbered `seq`, of `len` bytes, from the host to `dst` (or from the guest, the other way). */
function frame(dst: Uint8Array, pair: number, seq: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst, 0);
  f.set([2, 0, 0, 0, 0, 0xfe], 6);
  f.set([0x88, 0xb5, pair, seq >>> 8, seq & 0xff], 12); // a local experimental ethertype
  for (let i = 17; i < len; i++) f[i] = (i + seq) & 0xff;
  return f;
}

const seqOf = (f: Uint8Array): number => (f[15]! << 8) | f[16]!;

/** Every token a driver queue hands out and gets back, checked: none back twice, none back unposted. */
function watchTokens(q: DriverQueue, posted: number[]) {
  const w = { out: new Set(posted), back: new Set<number>(), strays: 0 };
  const commit = q.commitChain.bind(q);
  const pop = q.popUsed.bind(q);
  q.commitChain = (token: number, indirect?: boolean): number => {
    const id = commit(token, indirect);
    if (id >= 0) {
      if (w.out.has(token)) w.strays++;
      w.out.add(token);
    }
    return id;
  };
  q.popUsed = (): number => {
    const t = pop();
    if (t >= 0) {
      if (!w.out.delete(t)) w.strays++;
      w.back.add(t);
    }
    return t;
  };
  return w;
}

/** Reads every frame waiting at a peer (header stripped). */
function drain(peer: TapPeer): Uint8Array[] {
  const buf = new Uint8Array(70000);
  const out: Uint8Array[] = [];
  for (let n = peer.read(buf); n >= 0; n = peer.read(buf)) out.push(buf.slice(HDR, n));
  return out;
}

function hostWrite(peer: TapPeer, f: Uint8Array): void {
  const b = new Uint8Array(HDR + f.length);
  b.set(f, HDR);
  expect(peer.write(b)).toBe(b.length);
}

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0).reverse()) c();
});

function socketTap(name: string, queues: number) {
  const { tap, peers } = Tap.socketPair({ name, queues });
  cleanup.push(() => {
    tap.close();
    for (const p of peers) p.close();
  });
  return { tap, peers };
}

export const measured: { name: string; bytes: number; restoreMs: number }[] = [];

// IN_ORDER is off, as Linux leaves it: with IN_ORDER and a filter on
// (CTRL_VLAN) frames are read one at a time, no chain stays popped ahead and
// no frame is held. The last run has it on.
describe.each([
  ['split', false, 1, false],
  ['split', true, 1, false],
  ['packed', false, 1, false],
  ['packed', true, 1, false],
  ['split', false, 2, false],
  ['split', true, 2, false],
  ['packed', false, 2, false],
  ['packed', true, 2, false],
  ['packed', false, 1, true],
] as const)('snapshot mid-stream and restore on another TAP: %s ring, MRG_RXBUF %s, %i pair(s), IN_ORDER %s', (layout, mrg, pairs, inOrder) => {
  const features: NetFeatureSwitches = { RING_PACKED: layout === 'packed', MRG_RXBUF: mrg, IN_ORDER: inOrder };

  it('goes on: every buffer posted comes back exactly once, every frame gets through exactly once', async () => {
    const a = socketTap('snapA', pairs);
    let deliver = true;
    let driver!: NetDriver;
    const irq = (kind: InterruptKind, q: number): void => {
      if (deliver) driver.interrupt(kind, q);
    };
    // A transmit timer keeps chains in the ring after the first of a burst.
    const dev = new NetDevice({ tap: a.tap, interrupt: irq, features, txTimerMs: 20 });
    cleanup.push(() => dev.close());
    driver = new NetDriver(dev, { queueSize: QUEUE, pairs });
    driver.start();
    if (pairs === 2) expect(driver.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(2, 0))).toBe(VIRTIO_NET_OK);
    const all = Array.from({ length: QUEUE }, (_, i) => i);
    const rxTokens = Array.from({ length: pairs }, (_, p) => watchTokens(driver.rxQueue(p), all));
    const txTokens = Array.from({ length: pairs }, (_, p) => watchTokens(driver.txQueue(p), []));
    const perPair = (): number[][] => Array.from({ length: pairs }, () => []);
    const [toGuest, atGuest, toHost, atHost] = [perPair(), perPair(), perPair(), perPair()];
    driver.onFrame = (f) => atGuest[f.pair]!.push(seqOf(f.frame));
    const mac = driver.mac;
    let seq = 0;
    let peers = a.peers;
    const fromHost = (p: number, len: number): void => {
      toGuest[p]!.push(seq);
      hostWrite(peers[p]!, frame(mac, p, seq++, len));
    };
    const fromGuest = (p: number): void => {
      toHost[p]!.push(seq);
      expect(driver.send(frame(mac, p, seq++, 100), {}, p)).toBe(true);
    };
    const hostReads = (): void => peers.forEach((peer, p) => atHost[p]!.push(...drain(peer).map(seqOf)));
    const each = (n: number, fn: (p: number) => void): void => {
      for (let p = 0; p < pairs; p++) for (let i = 0; i < n; i++) fn(p);
    };

    // Traffic both ways.
    each(3, (p) => fromHost(p, 200));
    each(2, fromGuest);
    await until(() => atGuest.every((g, p) => g.length === toGuest[p]!.length), 'the first frames');
    await sleep(70); // the transmit timer sends the second, looks again, finds nothing: kicks are on again
    hostReads();

    // Mid-stream: the driver stops reaping, so the ring runs short of
    // receive buffers: with MRG_RXBUF five big frames fill fifteen and the
    // sixth is held; without, six take one each and the rest stay pending.
    deliver = false;
    const rxBefore = dev.metrics.rxPackets;
    each(6, (p) => fromHost(p, mrg ? BIG : 200));
    await until(() => dev.metrics.rxPackets === rxBefore + (mrg ? 5 : 6) * pairs, 'the device to read what it has room for');
    // A burst to the host: the first goes at once, the rest wait in the ring for the timer.
    each(3, fromGuest);
    hostReads();

    const snap = dev.snapshot();
    const json = JSON.stringify(snap);
    const parsed = JSON.parse(json) as NetSnapshot;
    expect(parsed).toEqual(snap);
    for (let p = 0; p < pairs; p++) {
      expect(parsed.pairs[p]!.heldFrame !== null).toBe(mrg);
      const rx = parsed.core.queues[2 * p]!;
      const tx = parsed.core.queues[2 * p + 1]!;
      // No receive chain is popped ahead in a snapshot; two transmit chains wait in the ring.
      expect([rx.nextAvail, rx.availWrap]).toEqual([rx.usedIdx, rx.usedWrap]);
      expect(atHost[p]!.length).toBe(toHost[p]!.length - 2);
      expect(tx.nextAvail).toBe(((layout === 'split' ? 1 : 2) * atHost[p]!.length) % (layout === 'split' ? 0x10000 : QUEUE));
    }
    const outAtSnapshot = rxTokens.map((w) => new Set(w.out));
    dev.close();
    a.tap.close();
    for (const p of a.peers) p.close();

    // Restore on a TAP of another name, over the same memory, with the same driver.
    const b = socketTap('snapB', pairs);
    peers = b.peers;
    const t0 = performance.now();
    const dev2 = NetDevice.restore(parsed, { tap: b.tap, memory: driver.mem, interrupt: irq, paused: true });
    const restoreMs = performance.now() - t0;
    cleanup.push(() => dev2.close());
    measured.push({ name: `${layout}${mrg ? ' MRG_RXBUF' : ''} ${pairs} pair(s)`, bytes: json.length, restoreMs });
    driver.attach(dev2);
    for (const w of rxTokens) w.back.clear();
    deliver = true;
    dev2.resume();
    // GUEST_ANNOUNCE was negotiated: the restored device asks the guest to announce itself.
    expect(dev2.config.status & VIRTIO_NET_S_ANNOUNCE).toBe(VIRTIO_NET_S_ANNOUNCE);
    expect(driver.control(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK)).toBe(VIRTIO_NET_OK);
    expect(dev2.config.status & VIRTIO_NET_S_ANNOUNCE).toBe(0);
    driver.poll(); // reaps what the first device filled and posts the buffers again: the held frame goes in

    // Traffic goes on both ways, round after round, until every buffer posted at the snapshot has come back.
    for (let round = 0; round < 4; round++) {
      each(QUEUE / 2, (p) => fromHost(p, 300));
      each(1, fromGuest);
      await until(() => atGuest.every((g, p) => g.length === toGuest[p]!.length), `round ${round}`);
    }
    await sleep(50); // the transmit timer's last look
    driver.poll();
    hostReads();

    for (let p = 0; p < pairs; p++) {
      expect(atGuest[p]).toEqual(toGuest[p]);
      expect(atHost[p]).toEqual(toHost[p]);
      const rx = rxTokens[p]!;
      const tx = txTokens[p]!;
      expect(rx.strays + tx.strays).toBe(0);
      expect([...outAtSnapshot[p]!].filter((t) => !rx.back.has(t))).toEqual([]);
      expect(rx.out.size).toBe(QUEUE); // every receive buffer is in the ring again
      expect(tx.out.size).toBe(0); // every transmit chain was completed
    }
    expect(dev2.metrics.rxPackets).toBe(toGuest.flat().length);
  });
});
