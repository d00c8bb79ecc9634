// Snapshot and restore (docs/snapshot.md): a device snapshotted mid-stream,
// closed, and restored on a TAP of another name over the same guest memory,
// with the same driver; every buffer the driver posted comes back exactly
// once, and every frame gets through exactly once. Then the refusals.
import { afterAll, afterEach, describe, expect, it } from 'vitest';

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
import { MMIO, MmioTransport } from '../src/transport/mmio.js';
import { MmioDeviceHandle } from '../src/driver/mmio-handle.js';
import { parseIpv4 } from '../src/util/addr.js';
import { BROADCAST_MAC, parseArp } from '../src/util/packet.js';
import { VirtioDeviceCore, type InterruptKind } from '../src/virtio/device.js';
import { GuestMemory } from '../src/virtio/guest-memory.js';
import { SnapshotError } from '../src/virtio/snapshot-fields.js';
import { startNet } from './helpers/net-rig.js';
import { describePrivileged } from './helpers/privileged.js';

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

/** The size of each snapshot's JSON and how long its restore took, printed at the end. */
const measured: { name: string; bytes: number; restoreMs: number }[] = [];
afterAll(() => {
  for (const m of measured) console.log(`snapshot ${m.name}: ${m.bytes} bytes of JSON, restored in ${m.restoreMs.toFixed(2)} ms`);
});

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
    cleanup.push(() => dev2.close());
    const t1 = performance.now();
    expect(dev2.snapshot()).toEqual(parsed); // restored, not yet resumed: the same state, the held frame included
    const snapMs = performance.now() - t1;
    driver.attach(dev2);
    for (const w of rxTokens) w.back.clear();
    deliver = true;
    dev2.resume();
    const restoreMs = performance.now() - t0 - snapMs; // checks, the device made, its state taken on, its queues served
    measured.push({ name: `${layout}${mrg ? ' MRG_RXBUF' : ''} ${pairs} pair(s)${inOrder ? ' IN_ORDER' : ''}`, bytes: json.length, restoreMs });
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

/** A device on a stand-in TAP with the driver started: one pair, queues of QUEUE entries. */
function running(name: string, features: NetFeatureSwitches, memory?: GuestMemory) {
  const t = socketTap(name, 1);
  let driver!: NetDriver;
  const dev = new NetDevice({ tap: t.tap, interrupt: (k, q) => driver.interrupt(k, q), features });
  cleanup.push(() => dev.close());
  driver = new NetDriver(dev, { queueSize: QUEUE, ...(memory ? { memory } : {}) });
  driver.start();
  return { ...t, dev, driver };
}

const clone = (s: NetSnapshot): NetSnapshot & Record<string, unknown> => JSON.parse(JSON.stringify(s)) as NetSnapshot & Record<string, unknown>;

describe.each(['split', 'packed'] as const)('restore refuses a snapshot it cannot take, %s ring, and changes nothing', (layout) => {
  it('names the field: wrong types, missing fields, out of range, outside memory, cut short, newer', () => {
    const src = running('snapR', { RING_PACKED: layout === 'packed' });
    const good = src.dev.snapshot();
    const mem = src.driver.mem;
    const memBefore = Buffer.from(mem.regions[0]!.bytes);
    const target = socketTap('snapT', 1);
    let interrupts = 0;
    const restore = (s: unknown, tap = target.tap) => NetDevice.restore(s, { tap, memory: mem, interrupt: () => interrupts++ });
    const q0 = good.core.queues[0]!;
    const cases: [string, (s: ReturnType<typeof clone>) => unknown, string, string | null][] = [
      ['a newer version', (s) => ({ ...s, version: 2 }), 'ERR_SNAPSHOT_VERSION', 'version'],
      ['another format', (s) => ({ ...s, format: 'virtio-tap/mmio' }), 'ERR_SNAPSHOT_FORMAT', 'format'],
      ['not an object', () => [1, 2], 'ERR_SNAPSHOT_FIELD', '(the snapshot)'],
      ['no core', (s) => ({ ...s, core: undefined }), 'ERR_SNAPSHOT_FIELD', 'core'],
      ['no metrics (cut short)', (s) => ({ ...s, metrics: undefined }), 'ERR_SNAPSHOT_FIELD', 'metrics'],
      ['JSON cut short', (s) => JSON.stringify(s).slice(0, 500), 'ERR_SNAPSHOT_JSON', null],
      ['a status as text', (s) => ((s.core.status = '15' as unknown as number), s), 'ERR_SNAPSHOT_FIELD', 'core.status'],
      ['promisc as a number', (s) => ((s.filter.promisc = 1 as unknown as boolean), s), 'ERR_SNAPSHOT_FIELD', 'filter.promisc'],
      ['a counter missing', (s) => (delete (s.metrics.counters as Partial<typeof s.metrics.counters>).txPackets, s), 'ERR_SNAPSHOT_FIELD', 'metrics.counters.txPackets'],
      ['a MAC of three bytes', (s) => ((s.filter.unicast = [[1, 2, 3]]), s), 'ERR_SNAPSHOT_FIELD', 'filter.unicast[0]'],
      ['no pairs', (s) => ((s.pairs = []), s), 'ERR_SNAPSHOT_FIELD', 'pairs'],
      ['a queue missing', (s) => (s.core.queues.pop(), s), 'ERR_SNAPSHOT_FIELD', 'core.queues'],
      ['more pairs in use than there are', (s) => ((s.activePairs = 2), s), 'ERR_SNAPSHOT_FIELD', 'activePairs'],
      ['a config space cut short', (s) => ((s.config = 'AAAA'), s), 'ERR_SNAPSHOT_FIELD', 'config'],
      ['an offer as a number', (s) => ((s.device.offeredFeatures = 12 as unknown as string), s), 'ERR_SNAPSHOT_FIELD', 'device.offeredFeatures'],
      ['an offer this device never makes (MQ with one pair)', (s) => ((s.device.offeredFeatures = `0x${(BigInt(s.device.offeredFeatures) | (1n << 22n)).toString(16)}`), s), 'ERR_SNAPSHOT_FIELD', 'device.offeredFeatures'],
      ['an unknown fault', (s) => ((s.core.queues[0]!.fault = 'NOPE'), s), 'ERR_SNAPSHOT_FIELD', 'core.queues[0].fault'],
      ['a held frame larger than any', (s) => ((s.pairs[0]!.heldFrame = Buffer.alloc(70000).toString('base64')), s), 'ERR_SNAPSHOT_FIELD', 'pairs[0].heldFrame'],
      ['a level for a bucket there is not', (s) => ((s.pairs[0]!.rx = { bytes: 5, ops: null }), s), 'ERR_SNAPSHOT_FIELD', 'pairs[0].rx.bytes'],
      [
        'an available index out of range',
        (s) => ((s.core.queues[0]!.nextAvail = layout === 'split' ? (q0.usedIdx + QUEUE + 1) & 0xffff : QUEUE), s),
        'ERR_SNAPSHOT_FIELD',
        'core.queues[0].nextAvail',
      ],
      ['a wrap counter of 2', (s) => ((s.core.queues[1]!.usedWrap = 2), s), 'ERR_SNAPSHOT_FIELD', 'core.queues[1].usedWrap'],
      ['a ring outside guest memory', (s) => ((s.core.queues[1]!.desc = mem.regions[0]!.size + 4096), s), 'ERR_SNAPSHOT_MISMATCH', 'core.queues[1]'],
      ['a ring of the other layout', (s) => ((s.core.queues[0]!.layout = layout === 'split' ? 'packed' : 'split'), s), 'ERR_SNAPSHOT_FIELD', 'core.queues[0].layout'],
    ];
    for (const [what, mutate, code, field] of cases) {
      let err: unknown = null;
      try {
        restore(mutate(clone(good)));
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(SnapshotError);
      expect({ what, code: (err as SnapshotError).code, field: (err as SnapshotError).field }).toEqual({ what, code, field });
      if (field !== null) expect((err as Error).message).toContain(field);
    }
    // A TAP with another number of queues.
    const two = socketTap('snapT2', 2);
    expect(() => restore(clone(good), two.tap)).toThrow(expect.objectContaining({ code: 'ERR_SNAPSHOT_MISMATCH', field: 'device.pairs' }));
    // Nothing changed: no TAP watched or programmed, no interrupt, guest memory as it was.
    for (const t of [target.tap, two.tap]) {
      for (const q of t.queues) expect(q.listenerCount('readable')).toBe(0);
      expect(t.offloads).toBe(0);
    }
    expect(interrupts).toBe(0);
    expect(Buffer.compare(Buffer.from(mem.regions[0]!.bytes), memBefore)).toBe(0);
    // The snapshot itself restores.
    src.dev.close();
    expect(restore(clone(good)).running).toBe(true);
  });
});

describe('what snapshot() refuses', () => {
  it('a closed device, and a device the transport cannot snapshot, with a typed error', () => {
    const r = running('snapC', {});
    r.dev.close();
    expect(() => r.dev.snapshot()).toThrow(expect.objectContaining({ name: 'SnapshotError', code: 'ERR_SNAPSHOT_CLOSED' }));
    class Bare extends VirtioDeviceCore {
      protected processQueue(): void {}
      readConfig(): number {
        return 0;
      }
    }
    const t = new MmioTransport(new Bare({ features: 1n << 32n, numQueues: 1, interrupt: () => {} }), { memory: GuestMemory.create(1 << 16), interrupt: () => {} });
    expect(() => t.snapshot()).toThrow(expect.objectContaining({ code: 'ERR_SNAPSHOT_UNSUPPORTED' }));
  });
});

describe('announcing the guest after a restore', () => {
  it('without GUEST_ANNOUNCE, a gratuitous ARP for the guest\'s MAC goes out on the new TAP', async () => {
    const a = running('snapG', { GUEST_ANNOUNCE: false });
    const snap = a.dev.snapshot();
    a.dev.close();
    const b = socketTap('snapH', 1);
    const dev = NetDevice.restore(snap, { tap: b.tap, memory: a.driver.mem, interrupt: (k, q) => a.driver.interrupt(k, q), guestIpv4: '198.18.0.2' });
    cleanup.push(() => dev.close());
    a.driver.attach(dev);
    const frames = drain(b.peers[0]!);
    expect(frames.length).toBe(1);
    const arp = parseArp(frames[0]!);
    expect(arp).toMatchObject({ op: 1, senderMac: a.driver.mac, senderIp: parseIpv4('198.18.0.2'), targetIp: parseIpv4('198.18.0.2') });
    expect(frames[0]!.subarray(0, 6)).toEqual(BROADCAST_MAC);
    expect(dev.config.status & VIRTIO_NET_S_ANNOUNCE).toBe(0);
  });

  it('announce: false restores quietly', () => {
    const a = running('snapQ', { GUEST_ANNOUNCE: false });
    const snap = a.dev.snapshot();
    a.dev.close();
    const b = socketTap('snapQ2', 1);
    const dev = NetDevice.restore(snap, { tap: b.tap, memory: a.driver.mem, announce: false });
    cleanup.push(() => dev.close());
    expect(drain(b.peers[0]!)).toEqual([]);
  });
});

describe('the virtio-mmio transport', () => {
  /** A VMM's wiring: device, transport, the driver through registers; the interrupt handler acks unless held. */
  function vmm(name: string) {
    const ram = GuestMemory.create(16 << 20);
    const t = socketTap(name, 1);
    const w = { ack: true, lines: [] as boolean[], transport: null as MmioTransport | null, handle: null as MmioDeviceHandle | null };
    let driver!: NetDriver;
    const line = (up: boolean): void => {
      w.lines.push(up);
      if (up) queueMicrotask(() => irq());
    };
    const irq = (): void => {
      if (!w.ack || w.handle === null) return;
      const { vring, config } = w.handle.acknowledge();
      if (config) driver.interrupt('config', -1);
      if (vring) driver.interrupt('vring', 0);
    };
    const device = new NetDevice({ tap: t.tap, interrupt: (kind) => w.transport!.notify(kind), features: { GUEST_ANNOUNCE: false } });
    cleanup.push(() => device.close());
    w.transport = new MmioTransport(device, { memory: ram, queueNumMax: 64, interrupt: line });
    w.handle = new MmioDeviceHandle(w.transport);
    driver = new NetDriver(w.handle, { memory: ram, queueSize: 64 });
    driver.start();
    return { ...t, ram, w, device, driver, line };
  }

  it('registers, interrupt status and the device round trip; traffic goes on through the registers', async () => {
    const v = vmm('snapM');
    const mac = v.driver.mac;
    const got: number[] = [];
    v.driver.onFrame = (f) => got.push(seqOf(f.frame));
    hostWrite(v.peers[0]!, frame(mac, 0, 1, 200));
    await until(() => got.length === 1, 'a frame through mmio');
    // An interrupt left unacknowledged, and registers left pointing somewhere.
    v.w.ack = false;
    hostWrite(v.peers[0]!, frame(mac, 0, 2, 200));
    await until(() => v.device.metrics.rxPackets === 2, 'the second frame');
    const t1 = v.w.transport!;
    t1.write(MMIO.QueueSel, 4, 1);
    t1.write(MMIO.DeviceFeaturesSel, 4, 1);
    t1.write(MMIO.DriverFeaturesSel, 4, 1);
    const regs = (t: MmioTransport) =>
      [MMIO.QueueNumMax, MMIO.QueueReady, MMIO.InterruptStatus, MMIO.Status, MMIO.DeviceFeatures, MMIO.ConfigGeneration].map((r) => t.read(r, 4));
    const before = regs(t1);
    expect(before[2]).toBe(1); // VIRTIO_MMIO_INT_VRING pending
    const json = JSON.stringify(t1.snapshot());
    v.device.close();

    // The new VMM: the device first (paused), then the transport around it, then the device resumes.
    const b = socketTap('snapN', 1);
    const w2 = { transport: null as MmioTransport | null };
    const lines: boolean[] = [];
    const dev2 = NetDevice.restore((JSON.parse(json) as { device: unknown }).device, { tap: b.tap, memory: v.ram, interrupt: (k) => w2.transport!.notify(k), paused: true });
    cleanup.push(() => dev2.close());
    const line = (up: boolean): void => {
      lines.push(up);
      v.line(up);
    };
    w2.transport = MmioTransport.restore(json, dev2, { memory: v.ram, interrupt: line });
    expect(lines).toEqual([true]); // InterruptStatus was not 0: the line is up at once
    expect(regs(w2.transport)).toEqual(before);
    const again = JSON.parse(JSON.stringify(w2.transport.snapshot())) as Record<string, unknown>;
    const first = JSON.parse(json) as Record<string, unknown>;
    expect({ ...again, device: null }).toEqual({ ...first, device: null });

    // The VMM acknowledges and the guest goes on through the new transport's registers.
    v.w.transport = w2.transport;
    v.w.handle = new MmioDeviceHandle(w2.transport);
    v.driver.attach(v.w.handle);
    v.w.ack = true;
    dev2.resume();
    v.w.handle.acknowledge();
    v.driver.poll();
    await until(() => got.length === 2, 'the frame read before the snapshot');
    hostWrite(b.peers[0]!, frame(mac, 0, 3, 200));
    expect(v.driver.send(frame(mac, 0, 4, 100))).toBe(true);
    await until(() => got.length === 3, 'a frame after the restore');
    expect(got).toEqual([1, 2, 3]);
    expect(drain(b.peers[0]!).map(seqOf)).toContain(4);
  });

  it('refuses registers that do not match the restored device', () => {
    const v = vmm('snapO');
    const s = v.w.transport!.snapshot();
    v.device.close();
    const b = socketTap('snapP', 1);
    const dev2 = NetDevice.restore(s.device, { tap: b.tap, memory: v.ram, paused: true });
    cleanup.push(() => dev2.close());
    const bad = JSON.parse(JSON.stringify(s)) as typeof s;
    bad.queues[0]!.desc += 4096;
    expect(() => MmioTransport.restore(bad, dev2, { memory: v.ram, interrupt: () => {} })).toThrow(expect.objectContaining({ code: 'ERR_SNAPSHOT_MISMATCH', field: 'queues[0]' }));
    const short = { ...s, queues: s.queues.slice(1) };
    expect(() => MmioTransport.restore(short, dev2, { memory: v.ram, interrupt: () => {} })).toThrow(expect.objectContaining({ code: 'ERR_SNAPSHOT_FIELD', field: 'queues' }));
    expect(() => MmioTransport.restore({ ...s, version: 9 }, dev2, { memory: v.ram, interrupt: () => {} })).toThrow(expect.objectContaining({ code: 'ERR_SNAPSHOT_VERSION' }));
  });
});

describePrivileged('snapshot and restore on real TAPs', () => {
  it('a device on one kernel TAP goes on on another, of another name; the host reaches the guest after', async () => {
    const a = await startNet({ subnet: 151, tapName: 'vtsnapa', features: { GUEST_ANNOUNCE: false } });
    cleanup.push(() => a.close());
    await a.resolveHost();
    const snap = JSON.stringify(a.dev.snapshot());
    a.close();
    const tap = Tap.open({ name: 'vtsnapb', vnetHdr: true });
    cleanup.push(() => tap.close());
    tap.setUp();
    tap.setIpv4(a.hostIp, 24);
    const dev = NetDevice.restore(snap, { tap, memory: a.driver.mem, interrupt: (k, q) => a.driver.interrupt(k, q) });
    cleanup.push(() => dev.close());
    a.driver.attach(dev);
    expect(tap.name).toBe('vtsnapb');
    // The host asks for the guest's MAC again (its neighbour entry is on the other TAP): the guest answers through the restored device.
    await a.resolveHost();
    // The counters went on from the snapshot's.
    const counted = (JSON.parse(snap) as NetSnapshot).metrics.counters;
    expect(counted.txPackets).toBeGreaterThan(0);
    expect(dev.metrics.txPackets).toBeGreaterThan(counted.txPackets);
    expect(dev.metrics.rxPackets).toBeGreaterThan(counted.rxPackets);
  });

  it('a pair in a worker thread is refused with a typed error, and the device goes on', async () => {
    const r = await startNet({ subnet: 152, queues: 2, driver: { pairs: 2, shared: true }, device: { workers: [1] } });
    cleanup.push(() => r.close());
    expect(() => r.dev.snapshot()).toThrow(expect.objectContaining({ name: 'SnapshotError', code: 'ERR_SNAPSHOT_WORKER' }));
    await r.resolveHost();
  });
});
