// `npm run bench -- net`: the virtio-net device with the in-process driver on
// a TAP, against the C loops of bench/c on the same TAP in the same run.
//   transmit: driver -> device -> TAP -> host UDP socket, vs C write()
//   receive:  host raw-socket sender -> TAP -> device -> driver, vs C read();
//             the driver negotiates as a Linux guest does (no VIRTIO_F_IN_ORDER)
//   super-frames: 64000-byte UDP (USO) super-frames both ways, vs C with IFF_VNET_HDR
// plus CPU time per frame, and resident memory over a soak run.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

import { NetDriver } from '../src/driver/net-driver.js';
import { NetDevice, type NetDeviceOptions } from '../src/net/device.js';
import { writeNetHeader } from '../src/net/net-header.js';
import type { NetFeatureSwitches } from '../src/net/features.js';
import { Tap } from '../src/tap/tap.js';
import { parseIpv4 as ip, parseMac } from '../src/util/addr.js';
import { buildUdp } from '../src/util/packet.js';
import { rate, runC, startSink, type LoopResult, type Sink } from './lib/c-loop.js';
import { median, row, type Row } from './lib/report.js';

const NAME = 'vtnbench0';
const HOST = '198.18.10.1';
const GUEST = '198.18.10.2';
const GUEST_MAC = '02:00:00:00:0a:02';
const BATCH = 64;

export interface NetBenchOptions {
  seconds: number;
  reps: number;
  soak: number;
  progress: (m: string) => void;
}

export interface Measured {
  frames: number;
  bytes: number;
  seconds: number;
  cpu: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const yieldLoop = () => new Promise((r) => setImmediate(r));

/**
 * The classes a bench run uses: virtio-tap's own, or the same code built
 * another way (the observe suite's copy without trace hooks).
 */
export interface DeviceLib {
  NetDevice: typeof NetDevice;
  NetDriver: typeof NetDriver;
}

export const OWN_LIB: DeviceLib = { NetDevice, NetDriver };

/** Device options a run adds (a capture, a tracer). */
export type DeviceExtras = Pick<NetDeviceOptions, 'trace' | 'capture'>;

function startDevice(features: NetFeatureSwitches, receive: boolean, lib: DeviceLib = OWN_LIB, extras: DeviceExtras = {}) {
  const tap = Tap.attach(NAME, { vnetHdr: true });
  let driver!: NetDriver;
  const dev = new lib.NetDevice({ tap, mac: GUEST_MAC, features, interrupt: receive ? (k, q) => driver.interrupt(k, q) : () => {}, ...extras });
  driver = new lib.NetDriver(dev, { copyFrames: false, queueSize: 256 });
  driver.start();
  return {
    tap,
    dev,
    driver,
    close() {
      dev.close();
      tap.close();
    },
  };
}

/** Transmit: chains over pre-written buffers, 64 per kick, as a guest with xmit_more would. */
export async function tsTransmit(hdrAndFrame: Uint8Array, seconds: number, lib: DeviceLib = OWN_LIB, extras: DeviceExtras = {}): Promise<Measured> {
  const d = startDevice({}, false, lib, extras);
  const txq = d.driver.txQueue(0);
  const bufs: number[] = [];
  for (let k = 0; k < 128; k++) {
    const a = d.driver.allocate(hdrAndFrame.length);
    d.driver.mem.write(a, hdrAndFrame);
    bufs.push(a);
  }
  const len = hdrAndFrame.length - 12;
  const m = d.dev.metrics;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let k = 0;
  let now = t0;
  let rounds = 0;
  while (now < end) {
    for (let b = 0; b < BATCH && txq.numFree >= 2; b++) {
      const a = bufs[k]!;
      k = (k + 1) & 127;
      txq.beginChain();
      txq.addSegment(a, 12, false);
      txq.addSegment(a + 12, len, false);
      txq.commitChain(k);
    }
    txq.publish(); // the kick: the device writes the batch before this returns
    while (txq.popUsed() >= 0);
    if ((++rounds & 63) === 0) await yieldLoop(); // writable events, if the TAP ever fills
    now = performance.now();
  }
  const cpu = process.cpuUsage(cpu0);
  const r = { frames: m.txPackets, bytes: m.txBytes - 12 * m.txPackets, seconds: (now - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 };
  if (m.dropped !== 0) throw new Error(`transmit bench dropped ${m.dropped} frames: ${JSON.stringify(m.drops)}`);
  d.close();
  return r;
}

/** Receive: the device reads on readiness events, the driver reaps on interrupts. */
export async function tsReceive(
  seconds: number,
  features: NetFeatureSwitches,
  sender: () => Promise<LoopResult>,
  lib: DeviceLib = OWN_LIB,
  extras: DeviceExtras = {},
): Promise<Measured> {
  const d = startDevice(features, true, lib, extras);
  const m = d.dev.metrics;
  const sending = sender();
  await sleep(100); // let the sender get going
  const f0 = m.rxPackets;
  const b0 = m.rxBytes;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const cpu = process.cpuUsage(cpu0);
  const frames = m.rxPackets - f0;
  const r = { frames, bytes: m.rxBytes - b0 - 12 * frames, seconds: (performance.now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 };
  if (frames < 1000) console.error(`receive moved ${frames} frames: ${JSON.stringify(m.snapshot())}`);
  await sending;
  d.close();
  return r;
}

async function cReceive(mode: 'read' | 'read-vnet', seconds: number, sender: () => Promise<LoopResult>): Promise<Measured> {
  const sending = sender();
  await sleep(100);
  const r = await runC([mode, NAME, String(seconds)]);
  await sending;
  return { frames: r.frames, bytes: r.bytes - (mode === 'read-vnet' ? 12 * r.frames : 0), seconds: r.seconds, cpu: r.cpu };
}

function gbps(m: Measured): number {
  return (m.bytes * 8) / m.seconds / 1e9;
}

function cpuPerFrameUs(m: Measured): number {
  return m.frames > 0 ? (m.cpu / m.frames) * 1e6 : 0;
}

interface Pair {
  ts: Measured[];
  c: Measured[];
}

function rowsFor(name: string, p: Pair, metric: 'frames' | 'gbps', cName: string): Row[] {
  const pick = (ms: Measured[], f: (m: Measured) => number) => median(ms.map(f));
  const out: Row[] = [];
  if (metric === 'frames') {
    out.push(row(name, 'throughput', pick(p.ts, rate), 'frames/s', { name: cName, value: pick(p.c, rate) }, { min: 0.9 }));
  } else {
    out.push(row(name, 'throughput', pick(p.ts, gbps), 'Gbit/s', { name: cName, value: pick(p.c, gbps) }, { min: 0.9 }));
  }
  out.push(row(name, 'CPU per frame', pick(p.ts, cpuPerFrameUs), 'µs', { name: cName, value: pick(p.c, cpuPerFrameUs) }));
  return out;
}

/** What a bench run on the bench TAP has: the host side's MAC, a UDP sink's port, a scratch directory. */
export interface BenchTap {
  hostMac: string;
  port: number;
  dir: string;
  file: (name: string, bytes: Uint8Array) => string;
  /** A UDP frame from the guest to the sink (outbound) or from the host to the guest (inbound), `size` bytes in all. */
  udpFrame: (size: number, inbound: boolean) => Uint8Array;
  /** The C sender writing `frame` into the TAP from the host side for `seconds`. */
  sender: (frame: Uint8Array, seconds: number) => () => Promise<LoopResult>;
}

/** Makes the bench TAP (persistent, host address, a UDP sink), runs `body`, removes it all. */
export async function withBenchTap<T>(body: (t: BenchTap) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'vt-netbench-'));
  let sink: Sink | null = null;
  const setup = Tap.open({ name: NAME, vnetHdr: true, persist: true });
  try {
    setup.setUp();
    setup.setIpv4(HOST, 24);
    const hostMac = setup.mac;
    setup.close();
    execFileSync('ip', ['neigh', 'replace', GUEST, 'lladdr', GUEST_MAC, 'dev', NAME]);
    sink = await startSink(HOST);
    const port = sink.port;
    const file = (name: string, bytes: Uint8Array) => {
      const f = join(dir, name);
      writeFileSync(f, bytes);
      return f;
    };
    const udpFrame = (size: number, inbound: boolean) =>
      inbound
        ? buildUdp({ srcMac: parseMac(hostMac), dstMac: parseMac(GUEST_MAC), src: ip(HOST), dst: ip(GUEST), srcPort: 1, dstPort: 2, data: new Uint8Array(size - 42).fill(0xa5) })
        : buildUdp({ srcMac: parseMac(GUEST_MAC), dstMac: parseMac(hostMac), src: ip(GUEST), dst: ip(HOST), srcPort: 9999, dstPort: port, data: new Uint8Array(size - 42).fill(0x5a) });
    let senders = 0;
    const sender = (frame: Uint8Array, seconds: number) => {
      const f = file(`send-${senders++}.bin`, frame);
      return () => runC(['send', NAME, f, String(seconds + 0.6)]);
    };
    return await body({ hostMac, port, dir, file, udpFrame, sender });
  } finally {
    sink?.stop();
    try {
      const t = Tap.attach(NAME);
      t.setPersistent(false);
      t.close();
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runNetBench(o: NetBenchOptions): Promise<Row[]> {
  return withBenchTap(async ({ hostMac, port, file, udpFrame, sender: makeSender }) => {
    const rows: Row[] = [];
    const hdr = (h: Parameters<typeof writeNetHeader>[2]) => {
      const b = new Uint8Array(12);
      writeNetHeader(new DataView(b.buffer), 0, h);
      return b;
    };
    const cat = (a: Uint8Array, b: Uint8Array) => {
      const out = new Uint8Array(a.length + b.length);
      out.set(a);
      out.set(b, a.length);
      return out;
    };

    for (const size of [64, 1500]) {
      const frame = udpFrame(size, false);
      const plain = file(`tx-${size}.bin`, frame);
      const tx: Pair = { ts: [], c: [] };
      for (let rep = 0; rep < o.reps; rep++) {
        o.progress(`net transmit ${size} B: run ${rep + 1}/${o.reps}`);
        const c = await runC(['write', NAME, plain, String(o.seconds)]);
        tx.c.push({ ...c });
        tx.ts.push(await tsTransmit(cat(new Uint8Array(12), frame), o.seconds));
      }
      rows.push(...rowsFor(`transmit ${size} B`, tx, 'frames', 'C write() loop'));

      // Frames to the guest's MAC, sent into the TAP from the host side.
      const sender = makeSender(udpFrame(size, true), o.seconds);
      for (const mrg of [true, false]) {
        const rx: Pair = { ts: [], c: [] };
        for (let rep = 0; rep < o.reps; rep++) {
          o.progress(`net receive ${size} B, MRG_RXBUF ${mrg ? 'on' : 'off'}: run ${rep + 1}/${o.reps}`);
          rx.c.push(await cReceive('read', o.seconds, sender));
          rx.ts.push(await tsReceive(o.seconds, { MRG_RXBUF: mrg, IN_ORDER: false }, sender));
        }
        rows.push(...rowsFor(`receive ${size} B, MRG_RXBUF ${mrg ? 'on' : 'off'}`, rx, 'frames', 'C read() loop'));
      }
    }

    // 64000-byte UDP super-frames (USO), both ways.
    const superFrame = buildUdp({ srcMac: parseMac(GUEST_MAC), dstMac: parseMac(hostMac), src: ip(GUEST), dst: ip(HOST), srcPort: 9999, dstPort: port, data: new Uint8Array(64000).fill(0x5a), checksum: 'partial' });
    const usoHdr = hdr({ flags: 1, gsoType: 5, gsoSize: 1472, hdrLen: 42, csumStart: 34, csumOffset: 6 });
    const superFile = file('tx-super.bin', cat(usoHdr, superFrame));
    const stx: Pair = { ts: [], c: [] };
    for (let rep = 0; rep < o.reps; rep++) {
      o.progress(`net transmit 64000 B USO super-frames: run ${rep + 1}/${o.reps}`);
      stx.c.push({ ...(await runC(['write-vnet', NAME, superFile, String(o.seconds)])) });
      stx.c[stx.c.length - 1]!.bytes -= 12 * stx.c[stx.c.length - 1]!.frames;
      stx.ts.push(await tsTransmit(cat(usoHdr, superFrame), o.seconds));
    }
    rows.push(...rowsFor('transmit 64 KB USO super-frames', stx, 'gbps', 'C write() loop, vnet header'));
    const usend = () => runC(['usend', GUEST, '9', String(o.seconds + 0.6)]);
    const srx: Pair = { ts: [], c: [] };
    for (let rep = 0; rep < o.reps; rep++) {
      o.progress(`net receive 64000 B USO super-frames: run ${rep + 1}/${o.reps}`);
      srx.c.push(await cReceive('read-vnet', o.seconds, usend));
      srx.ts.push(await tsReceive(o.seconds, { IN_ORDER: false }, usend));
    }
    rows.push(...rowsFor('receive 64 KB USO super-frames', srx, 'gbps', 'C read() loop, vnet header'));

    rows.push(...(await soak(o, hostMac, port, file)));
    return rows;
  });
}

/** Resident memory over a run with traffic both ways: growth after a warm-up must stay under 5 MB. */
async function soak(o: NetBenchOptions, hostMac: string, port: number, file: (n: string, b: Uint8Array) => string): Promise<Row[]> {
  o.progress(`net soak: ${o.soak} s of traffic both ways, resident memory sampled every second`);
  const d = startDevice({}, true);
  const inbound = buildUdp({ srcMac: parseMac(hostMac), dstMac: parseMac(GUEST_MAC), src: ip(HOST), dst: ip(GUEST), srcPort: 1, dstPort: 2, data: new Uint8Array(1458) });
  const sender = runC(['send', NAME, file('soak.bin', inbound), String(o.soak)]);
  const frame = buildUdp({ srcMac: parseMac(GUEST_MAC), dstMac: parseMac(hostMac), src: ip(GUEST), dst: ip(HOST), srcPort: 1, dstPort: port, data: new Uint8Array(1458) });
  const txq = d.driver.txQueue(0);
  const a = d.driver.allocate(12 + frame.length);
  d.driver.mem.write(a + 12, frame);
  const samples: number[] = [];
  const t0 = performance.now();
  let nextSample = t0 + 1000;
  let rounds = 0;
  while (performance.now() - t0 < o.soak * 1000) {
    for (let b = 0; b < 16 && txq.numFree >= 2; b++) {
      txq.beginChain();
      txq.addSegment(a, 12, false);
      txq.addSegment(a + 12, frame.length, false);
      txq.commitChain(b);
    }
    txq.publish();
    while (txq.popUsed() >= 0);
    if ((++rounds & 15) === 0) await yieldLoop(); // let receive run too
    if (performance.now() >= nextSample) {
      samples.push(process.memoryUsage().rss);
      nextSample += 1000;
    }
  }
  await sender;
  const m = d.dev.metrics;
  d.close();
  const warm = samples.slice(Math.min(5, Math.floor(samples.length / 4)));
  const growth = warm.length > 1 ? (Math.max(...warm) - warm[0]!) / (1 << 20) : 0;
  return [
    row(`soak ${o.soak} s, both ways`, 'resident memory growth', growth, 'MB', { name: 'limit', value: 5 }, { max: 1 }),
    row(`soak ${o.soak} s, both ways`, 'frames moved', m.txPackets + m.rxPackets, 'frames'),
  ];
}
