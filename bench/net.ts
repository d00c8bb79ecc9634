// `npm run bench -- net`: the virtio-net device with the in-process driver on
// a TAP, against the C loops of bench/c on the same TAP in the same run.
//   transmit: driver -> device -> TAP -> host UDP socket, vs C write()
//   receive:  host raw-socket sender -> TAP -> device -> driver, vs C read();
//             the driver negotiates as a Linux guest does (no VIRTIO_F_IN_ORDER)
//   super-frames: 64000-byte UDP (USO) super-frames both ways, vs C with IFF_VNET_HDR
// plus CPU time per frame, and resident memory over a soak run.
// With a baseline build, the same device cases run for this build and for the
// baseline instead (a process per run, interleaved), without the C loops and
// the soak.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

import * as virtioTap from '../src/index.js';
import { parseIpv4 as ip, parseMac, Tap, writeNetHeader } from '../src/index.js';
import { buildUdp } from '../src/util/packet.js';
import { rate, runC, startSink, type LoopResult, type Sink } from './lib/c-loop.js';
import { median, row, type Row } from './lib/report.js';
import { againstBaseline, chosen, comparedRow, type Side } from './lib/side.js';
import { BENCH_TAP as NAME, cpuPerFrameUs, gbps, GUEST_MAC, runJob, startDevice, type Job, type Measured } from './lib/workloads.js';

const HOST = '198.18.10.1';
const GUEST = '198.18.10.2';

export interface NetBenchOptions {
  seconds: number;
  reps: number;
  soak: number;
  progress: (m: string) => void;
  /** Set: compare the device cases with this build instead of with the C loops. */
  baseline?: Side;
  /** Only the cases whose name contains one of these. */
  only?: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const yieldLoop = () => new Promise((r) => setImmediate(r));

async function cReceive(mode: 'read' | 'read-vnet', seconds: number, sender: () => Promise<LoopResult>): Promise<Measured> {
  const sending = sender();
  await sleep(100);
  const r = await runC([mode, NAME, String(seconds)]);
  await sending;
  return { frames: r.frames, bytes: r.bytes - (mode === 'read-vnet' ? 12 * r.frames : 0), seconds: r.seconds, cpu: r.cpu };
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
  /** tap_loop's arguments for writing `frame` into the TAP from the host side for `seconds` (and a little more). */
  sendArgs: (frame: Uint8Array, seconds: number) => string[];
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
    const sendArgs = (frame: Uint8Array, seconds: number) => ['send', NAME, file(`send-${senders++}.bin`, frame), String(seconds + 0.6)];
    return await body({ hostMac, port, dir, file, udpFrame, sendArgs });
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

/** A device case: the job the device side runs, and the C loop it is set beside. */
interface NetCase {
  name: string;
  metric: 'frames' | 'gbps';
  job: Job & { kind: 'transmit' | 'receive' };
  cName: string;
  c: () => Promise<Measured>;
}

function netCases(t: BenchTap, seconds: number): NetCase[] {
  const cases: NetCase[] = [];
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
    const frame = t.udpFrame(size, false);
    const plain = t.file(`tx-${size}.bin`, frame);
    cases.push({
      name: `transmit ${size} B`,
      metric: 'frames',
      job: { kind: 'transmit', frameFile: t.file(`tx-${size}-hdr.bin`, cat(new Uint8Array(12), frame)), seconds },
      cName: 'C write() loop',
      c: () => runC(['write', NAME, plain, String(seconds)]),
    });
    // Frames to the guest's MAC, sent into the TAP from the host side.
    const sender = t.sendArgs(t.udpFrame(size, true), seconds);
    for (const mrg of [true, false]) {
      cases.push({
        name: `receive ${size} B, MRG_RXBUF ${mrg ? 'on' : 'off'}`,
        metric: 'frames',
        job: { kind: 'receive', seconds, features: { MRG_RXBUF: mrg, IN_ORDER: false }, sender },
        cName: 'C read() loop',
        c: () => cReceive('read', seconds, () => runC(sender)),
      });
    }
  }
  // 64000-byte UDP super-frames (USO), both ways.
  const superFrame = buildUdp({ srcMac: parseMac(GUEST_MAC), dstMac: parseMac(t.hostMac), src: ip(GUEST), dst: ip(HOST), srcPort: 9999, dstPort: t.port, data: new Uint8Array(64000).fill(0x5a), checksum: 'partial' });
  const usoHdr = hdr({ flags: 1, gsoType: 5, gsoSize: 1472, hdrLen: 42, csumStart: 34, csumOffset: 6 });
  const superFile = t.file('tx-super.bin', cat(usoHdr, superFrame));
  cases.push({
    name: 'transmit 64 KB USO super-frames',
    metric: 'gbps',
    job: { kind: 'transmit', frameFile: superFile, seconds },
    cName: 'C write() loop, vnet header',
    c: async () => {
      const r = await runC(['write-vnet', NAME, superFile, String(seconds)]);
      return { ...r, bytes: r.bytes - 12 * r.frames };
    },
  });
  const usend = ['usend', GUEST, '9', String(seconds + 0.6)];
  cases.push({
    name: 'receive 64 KB USO super-frames',
    metric: 'gbps',
    job: { kind: 'receive', seconds, features: { IN_ORDER: false }, sender: usend },
    cName: 'C read() loop, vnet header',
    c: () => cReceive('read-vnet', seconds, () => runC(usend)),
  });
  return cases;
}

export async function runNetBench(o: NetBenchOptions): Promise<Row[]> {
  return withBenchTap(async (t) => {
    const rows: Row[] = [];
    for (const k of netCases(t, o.seconds)) {
      if (!chosen(k.name, o.only)) continue;
      const step = (rep: number) => o.progress(`net ${k.name}: run ${rep + 1}/${o.reps}`);
      if (o.baseline !== undefined) {
        const [mine, base] = await againstBaseline(o.baseline, k.job, o.reps, step);
        const both = (f: (m: Measured) => number) => [mine.map(f), { name: 'baseline', values: base.map(f) }] as const;
        const [tput, unit] = k.metric === 'frames' ? [rate, 'frames/s'] : [gbps, 'Gbit/s'];
        rows.push(comparedRow(k.name, `throughput (best of ${o.reps})`, unit, ...both(tput), 'max'));
        rows.push(comparedRow(k.name, `CPU per frame (least of ${o.reps})`, 'µs', ...both(cpuPerFrameUs), 'min'));
        continue;
      }
      const p: Pair = { ts: [], c: [] };
      for (let rep = 0; rep < o.reps; rep++) {
        step(rep);
        p.c.push(await k.c());
        p.ts.push(await runJob(virtioTap, k.job));
      }
      rows.push(...rowsFor(k.name, p, k.metric, k.cName));
    }
    if (o.baseline === undefined && chosen('soak', o.only)) rows.push(...(await soak(o, t.hostMac, t.port, t.file)));
    return rows;
  });
}

/** Resident memory over a run with traffic both ways: growth after a warm-up must stay under 5 MB. */
async function soak(o: NetBenchOptions, hostMac: string, port: number, file: (n: string, b: Uint8Array) => string): Promise<Row[]> {
  o.progress(`net soak: ${o.soak} s of traffic both ways, resident memory sampled every second`);
  const d = startDevice(virtioTap, {}, true);
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
