// The trace: for a known sequence (initialisation, then frames through a
// queue small enough to wrap), the events are those VIRTIO 1.2 says should
// happen, in order, with the values the device compared. No privileges: the
// TAP is a socket-pair stand-in.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { NetDriver } from '../src/driver/net-driver.js';
import { NetDevice } from '../src/net/device.js';
import type { NetFeatureSwitches } from '../src/net/features.js';
import { Tap, TapPeer } from '../src/tap/tap.js';
import { traceToText } from '../src/trace/format.js';
import { Tracer, traceToJson, type TraceEvent } from '../src/trace/trace.js';
import { PcapWriter } from '../src/net/pcap.js';
import { makeQueueRig, type RingLayout } from '../src/driver/rig.js';
import { Pop } from '../src/virtio/descriptor-chain.js';
import { PackedQueue } from '../src/virtio/packed-queue.js';
import { SplitQueue } from '../src/virtio/split-queue.js';
import { traceQueue, TracedPackedQueue, TracedSplitQueue } from '../src/virtio/traced-queue.js';
import { tsharkFields } from './helpers/tshark.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const QUEUE = 8;

function rig(features: NetFeatureSwitches, tracer: Tracer | undefined) {
  const { tap, peers } = Tap.socketPair({ name: 'tr0' });
  let driver!: NetDriver;
  const dev = new NetDevice({ tap, interrupt: (k, q) => driver.interrupt(k, q), features, ...(tracer ? { trace: tracer } : {}) });
  driver = new NetDriver(dev, { queueSize: QUEUE });
  const peer = peers[0] as TapPeer;
  return {
    dev,
    driver,
    peer,
    close() {
      dev.close();
      tap.close();
      peer.close();
    },
  };
}

function frame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len).fill(seed);
  f.set([2, 0, 0, 0, 0, 1], 0);
  return f;
}

/** A started rig with a tracer; its events (from after initialisation unless `fromStart`). */
function traced(features: NetFeatureSwitches, fromStart = false) {
  const tracer = new Tracer();
  const events: TraceEvent[] = [];
  tracer.subscribe((e) => events.push(structuredClone(e)));
  const r = rig(features, tracer);
  open.push(r);
  r.driver.start();
  if (!fromStart) events.length = 0;
  return { ...r, events };
}

/** vring_need_event as §2.7 writes it, computed here rather than taken from the device. */
const specNeedEvent = (event: number, next: number, old: number) => ((next - event - 1) & 0xffff) < ((next - old) & 0xffff);

let open: { close(): void }[] = [];
afterEach(() => {
  for (const r of open) r.close();
  open = [];
});

describe.each(['split', 'packed'] as const)('trace, %s ring', (layout) => {
  const features: NetFeatureSwitches = { RING_PACKED: layout === 'packed', MRG_RXBUF: false, EVENT_IDX: true };

  it('shows initialisation in the order of §3.1.1', () => {
    const r = traced(features, true);
    const events = r.events;
    const steps = events.filter((e) => e.type === 'status' || e.type === 'features' || e.type === 'queue_ready' || e.type === 'reset');
    const kinds = steps.map((e) => (e.type === 'status' ? `status:${e.to}` : e.type));
    // reset, ACKNOWLEDGE, DRIVER, features accepted at FEATURES_OK, queues, DRIVER_OK.
    expect(kinds.slice(0, 5)).toEqual(['reset', 'status:1', 'status:3', 'features', 'status:11']);
    expect(kinds.filter((k) => k === 'queue_ready').length).toBe(r.dev.queues.length);
    expect(kinds.at(-1)).toBe('status:15');
    const f = steps.find((e) => e.type === 'features');
    expect(f?.type === 'features' && f.accepted).toBe(true);
    const q = steps.find((e) => e.type === 'queue_ready');
    expect(q?.type === 'queue_ready' && q.layout).toBe(layout);
    expect(q?.type === 'queue_ready' && q.size).toBe(QUEUE);
    expect(q?.type === 'queue_ready' && q.eventIdx).toBe(true);
  });

  it('follows a frame out: kick, pop with each descriptor, TAP write, used entry, notification decision, interrupt', async () => {
    const r = traced(features);
    const events = r.events;
    expect(r.driver.send(frame(100, 1))).toBe(true);
    const tx = 1;
    const seq = events.filter((e) => 'queue' in e && e.queue === tx).map((e) => e.type);
    // The device may ask for no kicks while it works and again after (§2.7/§2.8 suppression).
    const core = seq.filter((t) => t !== 'kick_suppression');
    // The driver had asked for an interrupt at the first used entry: the decision is to send one.
    expect(core).toEqual(['kick', 'pop', 'tap_write', 'used', 'notify_decision', 'interrupt']);
    const decision = events.find((e) => e.type === 'notify_decision');
    expect(decision?.type === 'notify_decision' && decision.send).toBe(true);
    const pop = events.find((e) => e.type === 'pop');
    expect(pop?.type).toBe('pop');
    if (pop?.type !== 'pop') return;
    expect(pop.result).toBe('chain');
    // NetDriver puts the header and the frame in two descriptors, as Linux does.
    expect(pop.descriptors.map((d) => d.len)).toEqual([12, 100]);
    expect(pop.descriptors[0]!.flags & 1).toBe(layout === 'split' ? 1 : 1); // NEXT on the header
    expect(pop.readableBytes).toBe(112);
    const write = events.find((e) => e.type === 'tap_write');
    expect(write?.type === 'tap_write' && write.result).toBe(112);
    const used = events.find((e) => e.type === 'used');
    expect(used?.type === 'used' && used.id).toBe(pop.head);
    expect(used?.type === 'used' && used.len).toBe(0);
    const got = new Uint8Array(2000);
    await sleep(5);
    expect(r.peer.read(got)).toBe(112);
    // Every line for people names a section of the spec; every JSON line parses.
    for (const e of events) {
      expect(traceToText(e)).toMatch(/§\d/);
      expect(JSON.parse(traceToJson(e)).type).toBe(e.type);
    }
  });

  it('decides each interrupt as the event index says, suppresses one, and wraps', async () => {
    const r = traced(features);
    const events = r.events;
    // Three laps of the transmit ring; the driver reaps only when it polls.
    let sent = 0;
    for (let i = 0; i < 3 * QUEUE; i++) {
      if (r.driver.send(frame(60, i))) sent++;
      if (i % 3 === 2) await sleep(1);
    }
    expect(sent).toBeGreaterThan(2 * QUEUE);
    const decisions = events.filter((e) => e.type === 'notify_decision' && e.queue === 1);
    expect(decisions.length).toBeGreaterThan(0);
    for (const d of decisions) {
      if (d.type !== 'notify_decision') continue;
      expect(d.mode).toBe('event_idx');
      if (layout === 'split') {
        expect(d.send).toBe(specNeedEvent(d.usedEvent!, d.new, d.old));
      } else {
        // §2.8: positions fold (index, wrap) into [0, 2 * size); the driver's event likewise.
        const span = 2 * QUEUE;
        const ev = d.eventWrap === 1 ? d.eventOffset! : d.eventOffset! + QUEUE;
        expect(d.send).toBe((d.new - ev - 1 + 2 * span) % span < (d.new - d.old + span) % span);
      }
    }
    // Used entries the driver had not yet seen: no interrupt for them.
    expect(decisions.some((d) => d.type === 'notify_decision' && !d.send)).toBe(true);
    expect(decisions.some((d) => d.type === 'notify_decision' && d.send)).toBe(true);
    const pops = events.filter((e) => e.type === 'pop' && e.queue === 1);
    const used = events.filter((e) => e.type === 'used' && e.queue === 1);
    if (layout === 'split') {
      // Free-running indices pass the ring size; the slot is the index modulo the size.
      expect(pops.some((e) => e.type === 'pop' && e.at >= QUEUE)).toBe(true);
      expect(used.some((e) => e.type === 'used' && e.at >= QUEUE)).toBe(true);
    } else {
      // Ring wrap counters flip after each lap (§2.8).
      const wraps = new Set(pops.map((e) => (e.type === 'pop' ? e.wrap : -1)));
      expect(wraps).toEqual(new Set([0, 1]));
      const usedWraps = new Set(used.map((e) => (e.type === 'used' ? e.wrap : -1)));
      expect(usedWraps).toEqual(new Set([0, 1]));
    }
    expect(r.dev.metrics.txPackets).toBe(sent);
  });
});

describe('tracing off', () => {
  it('emits nothing without a tracer, and stops when the tracer is removed', async () => {
    const tracer = new Tracer();
    const events: TraceEvent[] = [];
    tracer.subscribe((e) => events.push(e));
    const r = rig({ MRG_RXBUF: false }, undefined);
    open.push(r);
    r.driver.start();
    expect(r.driver.send(frame(60, 1))).toBe(true);
    expect(events.length).toBe(0);
    r.dev.setTracer(tracer);
    expect(r.driver.send(frame(60, 2))).toBe(true);
    const n = events.length;
    expect(events.some((e) => e.type === 'pop')).toBe(true);
    expect(events.some((e) => e.type === 'tap_write')).toBe(true);
    r.dev.setTracer(null);
    expect(r.driver.send(frame(60, 3))).toBe(true);
    await sleep(2);
    expect(events.length).toBe(n);
  });

  it('traces receive: TAP read into a buffer, used entry with the frame length, drops with their reason', async () => {
    const r = traced({ MRG_RXBUF: false });
    const events = r.events;
    const hdr = new Uint8Array(12);
    const f = frame(80, 9);
    f.set(r.dev.mac, 0);
    r.peer.write(Buffer.concat([hdr, f]));
    const deadline = Date.now() + 2000;
    while (!events.some((e) => e.type === 'tap_read') && Date.now() < deadline) await sleep(5);
    const read = events.find((e) => e.type === 'tap_read');
    expect(read?.type === 'tap_read' && read.bytes).toBe(92);
    const used = events.find((e) => e.type === 'used' && e.queue === 0);
    expect(used?.type === 'used' && used.len).toBe(92);
    // A transmit frame shorter than an Ethernet header: dropped, counted, and traced with its reason.
    expect(r.driver.send(new Uint8Array(8))).toBe(true);
    const drop = events.find((e) => e.type === 'drop');
    expect(drop?.type === 'drop' && drop.reason).toBe('tx_too_short');
    expect(r.dev.metrics.drops.tx_too_short).toBe(1);
  });
});

/** A queue in fresh memory, and a round of driver and device work on it: what each call returned. */
function queueRig(layout: RingLayout) {
  const rig = makeQueueRig({ layout, size: 8, eventIdx: true });
  const q = layout === 'split' ? new SplitQueue(rig.mem, rig.addresses, rig.features) : new PackedQueue(rig.mem, rig.addresses, rig.features);
  const chain = q.newChain();
  const bufs = [rig.alloc.alloc(256), rig.alloc.alloc(256), rig.alloc.alloc(256)];
  const round = (seed: number): number[] => {
    const out: number[] = [];
    for (let i = 0; i < 3; i++) {
      rig.driver.beginChain();
      rig.driver.addSegment(bufs[i]!, 20 + seed + i, false);
      if (i !== 1) rig.driver.addSegment(bufs[i]! + 128, 100, true);
      out.push(rig.driver.commitChain(10 * seed + i));
    }
    rig.driver.publish();
    q.disableNotifications();
    const at = q.savePosition();
    out.push(q.popChain(chain), chain.head);
    q.restorePosition(at); // un-pop it, as on EAGAIN
    for (let r = q.popChain(chain); r !== Pop.EMPTY; r = q.popChain(chain)) {
      out.push(r, chain.head, chain.count, chain.readableBytes, chain.writableBytes, chain.descriptors);
      q.addUsed(chain.head, chain.writableBytes / 2, chain.ringSlots);
    }
    out.push(Number(q.flushUsed()), Number(q.enableNotifications()), q.getBase());
    for (let t = rig.driver.popUsed(); t !== -1; t = rig.driver.popUsed()) out.push(t, rig.driver.usedLen);
    return out;
  };
  return { q, round, memory: () => Buffer.from(rig.mem.regions[0]!.bytes) };
}

describe.each(['split', 'packed'] as const)('traced queues, %s ring', (layout) => {
  const Plain = layout === 'split' ? SplitQueue : PackedQueue;
  const Traced = layout === 'split' ? TracedSplitQueue : TracedPackedQueue;

  it('an untraced queue is of the plain class; a tracer swaps the traced one in and out', () => {
    const tracer = new Tracer();
    const r = rig({ RING_PACKED: layout === 'packed', MRG_RXBUF: false }, undefined);
    open.push(r);
    r.driver.start();
    const protos = () => r.dev.queues.map((q) => Object.getPrototypeOf(q));
    expect(protos().every((p) => p === Plain.prototype)).toBe(true);
    r.dev.setTracer(tracer);
    expect(protos().every((p) => p === Traced.prototype)).toBe(true);
    r.dev.setTracer(null);
    expect(protos().every((p) => p === Plain.prototype)).toBe(true);
    // Given at construction, the queues are made traced.
    const t = traced({ RING_PACKED: layout === 'packed', MRG_RXBUF: false });
    expect(t.dev.queues.every((q) => Object.getPrototypeOf(q) === Traced.prototype)).toBe(true);
  });

  it('after tracing stops, a queue emits nothing and does what a queue never traced does', () => {
    const tracer = new Tracer();
    const events: TraceEvent[] = [];
    tracer.subscribe((e) => events.push(e));
    const once = queueRig(layout);
    const never = queueRig(layout);
    traceQueue(once.q, { tracer, queue: 0 });
    for (let i = 0; i < 3; i++) expect(once.round(i)).toEqual(never.round(i));
    const kinds = new Set(events.map((e) => e.type));
    expect([...kinds].sort()).toEqual(['kick_suppression', 'notify_decision', 'pop', 'unpop', 'used']);
    traceQueue(once.q, null);
    expect(Object.getPrototypeOf(once.q)).toBe(Plain.prototype);
    const n = events.length;
    for (let i = 3; i < 9; i++) expect(once.round(i)).toEqual(never.round(i));
    expect(events.length).toBe(n);
    expect(once.memory().equals(never.memory())).toBe(true);
    expect(once.q.stats).toEqual(never.q.stats);
  });
});

/** The packets of a pcapng file, read here byte by byte: what a capture holds, not what a tool shows. */
function pcapngPackets(file: string): Uint8Array[] {
  const b = readFileSync(file);
  const out: Uint8Array[] = [];
  for (let p = 0; p + 12 <= b.length; ) {
    const type = b.readUInt32LE(p);
    const len = b.readUInt32LE(p + 4);
    if (type === 6) out.push(new Uint8Array(b.subarray(p + 28, p + 28 + b.readUInt32LE(p + 20))));
    p += len;
  }
  return out;
}

describe('capture', () => {
  it('records each frame of a batched read byte for byte, large and small mixed (MRG_RXBUF, no IN_ORDER)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-pcap-'));
    try {
      const file = join(dir, 'b.pcapng');
      const capture = new PcapWriter(file);
      const r = rig({ MRG_RXBUF: true, IN_ORDER: false }, undefined);
      open.push(r);
      r.dev.setCapture(capture);
      r.driver.start();
      const sizes = [60, 9000, 60, 1514, 9000, 3000, 60, 1514];
      const sent = sizes.map((len, i) => {
        const f = frame(len, 50 + i);
        f.set(r.dev.mac, 0);
        return f;
      });
      for (const f of sent) r.peer.write(Buffer.concat([new Uint8Array(12), f]));
      const deadline = Date.now() + 2000;
      while (r.dev.metrics.rxPackets < sizes.length && Date.now() < deadline) await sleep(5);
      const out = sent.slice(0, 3).map((f, i) => frame(f.length, 90 + i));
      for (const f of out) expect(r.driver.send(f)).toBe(true);
      await capture.close();
      const got = pcapngPackets(file);
      const want = [...sent, ...out];
      expect(got.length).toBe(want.length);
      got.forEach((g, i) => expect(Buffer.from(g).equals(Buffer.from(want[i]!)), `frame ${i}`).toBe(true));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });


  it('records frames both ways whole, with the header each carried (num_buffers of a merged frame included)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-pcap-'));
    try {
      const file = join(dir, 'c.pcapng');
      const capture = new PcapWriter(file);
      const r = rig({ MRG_RXBUF: true }, undefined);
      open.push(r);
      r.dev.setCapture(capture);
      r.driver.start();
      expect(r.driver.send(frame(9000, 3))).toBe(true);
      const hdr = new Uint8Array(12);
      const f = frame(9000, 4);
      f.set(r.dev.mac, 0);
      r.peer.write(Buffer.concat([hdr, f]));
      const deadline = Date.now() + 2000;
      while (r.dev.metrics.rxPackets === 0 && Date.now() < deadline) await sleep(5);
      await capture.close();
      const rows = tsharkFields(file, ['frame.len', 'frame.comment']);
      expect(rows.map((x) => x[0])).toEqual(['9000', '9000']);
      expect(rows[0]![1]).toContain('from guest, transmitq 1');
      // 9000 bytes and the header take three 4096-byte buffers (§5.1.6.4).
      expect(rows[1]![1]).toContain('num_buffers=3; to guest, receiveq 0');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
