// `npm run bench -- tap`: the Tap's batched write and read paths against a
// plain C loop (bench/c/tap_loop.c, one frame per syscall) on the same TAP,
// with the same frames, in the same run. The host kernel is the peer.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { IoPlan, registerIoRegion, unregisterIoRegion } from '../src/host/io-plan.js';
import { Tap } from '../src/tap/tap.js';
import { parseIpv4 as ip, parseMac } from '../src/util/addr.js';
import { buildUdp } from '../src/util/packet.js';
import { rate, runC, startSink, type Sink } from './lib/c-loop.js';
import { median, row, type Row } from './lib/report.js';

export interface TapBenchOptions {
  seconds: number;
  reps: number;
  sizes: number[];
  progress: (msg: string) => void;
}

const HOST = '198.18.9.1';
const PEER = '198.18.9.2';
const PEER_MAC = '02:00:00:00:09:02';
const BATCH = 64;

/** A UDP frame of exactly `size` bytes from PEER to the host's discard socket. */
function frameOfSize(size: number, hostMac: string, port: number): Uint8Array {
  const data = new Uint8Array(size - 14 - 20 - 8).fill(0x5a);
  return buildUdp({ srcMac: parseMac(PEER_MAC), dstMac: parseMac(hostMac), src: ip(PEER), dst: ip(HOST), srcPort: 9999, dstPort: port, data });
}

/** Batched writes of the same frame, BATCH frames per native call. */
function tsWrite(name: string, frame: Uint8Array, seconds: number): { frames: number; seconds: number } {
  const tap = Tap.attach(name);
  const mem = new Uint8Array(BATCH * frame.length);
  for (let i = 0; i < BATCH; i++) mem.set(frame, i * frame.length);
  const region = registerIoRegion(mem);
  const plan = new IoPlan(BATCH);
  for (let i = 0; i < BATCH; i++) {
    plan.beginFrame();
    plan.addSegment(region, i * frame.length, frame.length);
  }
  let frames = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  let now = start;
  while (now < end) {
    const n = tap.queue.writeBatch(plan);
    for (let i = 0; i < n; i++) if ((plan.results[i] ?? -1) > 0) frames++;
    now = performance.now();
  }
  unregisterIoRegion(region);
  tap.close();
  return { frames, seconds: (now - start) / 1000 };
}

/** Reads driven by readiness events, draining BATCH frames per native call until EAGAIN. */
function tsRead(name: string, seconds: number): Promise<{ frames: number; seconds: number }> {
  const tap = Tap.attach(name);
  const slot = 2048;
  const mem = new Uint8Array(BATCH * slot);
  const region = registerIoRegion(mem);
  const plan = new IoPlan(BATCH);
  for (let i = 0; i < BATCH; i++) {
    plan.beginFrame();
    plan.addSegment(region, i * slot, slot);
  }
  let frames = 0;
  const q = tap.queue;
  return new Promise((resolve) => {
    const start = performance.now();
    q.on('readable', () => {
      for (;;) {
        const n = q.readBatch(plan);
        let ok = 0;
        for (let i = 0; i < n; i++) if ((plan.results[i] ?? -1) > 0) ok++;
        frames += ok;
        if (ok < BATCH) break;
      }
    });
    q.watch({ readable: true });
    setTimeout(() => {
      const elapsed = (performance.now() - start) / 1000;
      unregisterIoRegion(region);
      tap.close();
      resolve({ frames, seconds: elapsed });
    }, seconds * 1000);
  });
}

/** Datagrams the host's UDP layer took in (delivered or dropped at a full socket buffer). */
function udpSeen(): number {
  const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
  const keys = (lines[0] ?? '').split(' ');
  const vals = (lines[1] ?? '').split(' ').map(Number);
  const get = (k: string) => vals[keys.indexOf(k)] ?? 0;
  return get('InDatagrams') + get('RcvbufErrors');
}

/** Runs a write loop and measures the share of its frames that reached the host's UDP layer. */
async function measured(loop: () => Promise<{ frames: number; seconds: number }> | { frames: number; seconds: number }): Promise<{ rate: number; seen: number }> {
  const before = udpSeen();
  const r = await loop();
  await new Promise((res) => setTimeout(res, 100));
  return { rate: rate(r), seen: r.frames > 0 ? (udpSeen() - before) / r.frames : 0 };
}

export async function runTapBench(o: TapBenchOptions): Promise<Row[]> {
  const rows: Row[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'vt-bench-'));
  // A host socket that receives (and, unread, soon drops) what the TAP carries.
  let sink: Sink | null = null;
  const setup = Tap.open({ name: 'vtbench0', persist: true });
  try {
    setup.setUp();
    setup.setIpv4(HOST, 24);
    const hostMac = setup.mac;
    sink = await startSink(HOST);
    const port = sink.port;
    setup.close(); // persistent: both loops attach to it in turn
    for (const size of o.sizes) {
      const frame = frameOfSize(size, hostMac, port);
      const file = join(dir, `frame-${size}.bin`);
      writeFileSync(file, frame);
      const c: { rate: number; seen: number }[] = [];
      const ts: { rate: number; seen: number }[] = [];
      for (let rep = 0; rep < o.reps; rep++) {
        o.progress(`tap write ${size} B: rep ${rep + 1}/${o.reps}`);
        c.push(await measured(() => runC(['write', 'vtbench0', file, String(o.seconds)])));
        ts.push(await measured(() => tsWrite('vtbench0', frame, o.seconds)));
      }
      const ref = { name: 'C write() loop', value: median(c.map((x) => x.rate)) };
      rows.push(row(`write ${size} B`, 'throughput', median(ts.map((x) => x.rate)), 'frames/s', ref, { min: 0.9 }));
      // Proof the frames were real: the host's UDP layer saw them (a full socket buffer then drops them).
      rows.push(
        row(`write ${size} B`, 'reached host UDP', median(ts.map((x) => x.seen)), 'fraction', {
          name: 'C write() loop',
          value: median(c.map((x) => x.seen)),
        }),
      );
      const cr: number[] = [];
      const tr: number[] = [];
      for (let rep = 0; rep < o.reps; rep++) {
        o.progress(`tap read ${size} B: rep ${rep + 1}/${o.reps}`);
        // The same raw-socket sender feeds both readers; it runs a little longer than they do.
        const sender = (secs: number) => runC(['send', 'vtbench0', file, String(secs)]);
        let s = sender(o.seconds + 0.5);
        cr.push(rate(await runC(['read', 'vtbench0', String(o.seconds)])));
        await s;
        s = sender(o.seconds + 0.5);
        tr.push(rate(await tsRead('vtbench0', o.seconds)));
        await s;
      }
      rows.push(row(`read ${size} B`, 'throughput', median(tr), 'frames/s', { name: 'C read() loop', value: median(cr) }, { min: 0.9 }));
    }
  } finally {
    sink?.stop();
    try {
      const t = Tap.attach('vtbench0');
      t.setPersistent(false);
      t.close();
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
