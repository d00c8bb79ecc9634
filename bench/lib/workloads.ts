// The loops the ring, net and observe suites time, written against a set of
// virtio-tap classes passed in rather than imported: the bench runs them on
// this tree's classes, or in a child process on another checkout's (see
// side.ts). Nothing here loads src/ at run time, only its types.
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import type * as VirtioTap from '../../src/index.js';
import { runC, type LoopResult } from './c-loop.js';

/** What the workloads use of virtio-tap, all from its public entry point. */
export type BenchLib = Pick<typeof VirtioTap, 'Tap' | 'NetDevice' | 'NetDriver' | 'makeQueueRig' | 'SplitQueue' | 'PackedQueue' | 'Pop' | 'PcapWriter'>;

/** The bench TAP's name, and the guest's MAC on it. */
export const BENCH_TAP = 'vtnbench0';
export const GUEST_MAC = '02:00:00:00:0a:02';

const RING_BATCH = 32;
const TX_BATCH = 64;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** How long one ring run took and how much the heap grew over it. */
export interface RingRun {
  seconds: number;
  heapDelta: number;
}

/**
 * Runs `chains` chains through one queue of 256: the driver adds a batch of
 * 32 (a 12-byte segment, then `descs - 1` writable 1500-byte ones), the
 * device pops them and adds used entries, the driver reaps. Warms up first.
 */
export function spinRing(lib: BenchLib, layout: 'split' | 'packed', descs: number, chains: number): RingRun {
  const rig = lib.makeQueueRig({ layout, size: 256, eventIdx: true });
  const q = layout === 'split' ? new lib.SplitQueue(rig.mem, rig.addresses, rig.features) : new lib.PackedQueue(rig.mem, rig.addresses, rig.features);
  const chain = q.newChain();
  const d = rig.driver;
  const buf = rig.alloc.alloc(4096);
  const CHAIN = lib.Pop.CHAIN;
  const round = () => {
    for (let i = 0; i < RING_BATCH; i++) {
      d.beginChain();
      d.addSegment(buf, 12, false);
      for (let s = 1; s < descs; s++) d.addSegment(buf + 64 * s, 1500, true);
      d.commitChain(i);
    }
    d.publish();
    while (q.popChain(chain) === CHAIN) q.addUsed(chain.head, chain.writableBytes, chain.ringSlots);
    q.flushUsed();
    while (d.popUsed() >= 0);
  };
  for (let i = 0; i < 20_000; i++) round(); // warm up the JIT
  const before = heapAfterGc();
  const rounds = Math.ceil(chains / RING_BATCH);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) round();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const heapDelta = heapAfterGc() - before;
  if (d.stats.reaped !== (rounds + 20_000) * RING_BATCH) throw new Error(`ring bench lost chains: ${d.stats.reaped} reaped`);
  return { seconds, heapDelta };
}

/** What a run on the TAP moved, and the CPU time it took (this process only). */
export interface Measured {
  frames: number;
  bytes: number;
  seconds: number;
  cpu: number;
}

/** Device options a run adds (a capture, a tracer). */
export type DeviceExtras = Pick<VirtioTap.NetDeviceOptions, 'trace' | 'capture'>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const yieldLoop = () => new Promise((r) => setImmediate(r));

/** The device on the bench TAP, with the in-process driver. */
export function startDevice(lib: BenchLib, features: VirtioTap.NetFeatureSwitches, receive: boolean, extras: DeviceExtras = {}) {
  const tap = lib.Tap.attach(BENCH_TAP, { vnetHdr: true });
  let driver!: VirtioTap.NetDriver;
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
export async function tsTransmit(lib: BenchLib, hdrAndFrame: Uint8Array, seconds: number, extras: DeviceExtras = {}): Promise<Measured> {
  const d = startDevice(lib, {}, false, extras);
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
    for (let b = 0; b < TX_BATCH && txq.numFree >= 2; b++) {
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
  lib: BenchLib,
  seconds: number,
  features: VirtioTap.NetFeatureSwitches,
  sender: () => Promise<LoopResult>,
  extras: DeviceExtras = {},
): Promise<Measured> {
  const d = startDevice(lib, features, true, extras);
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

export function gbps(m: Measured): number {
  return (m.bytes * 8) / m.seconds / 1e9;
}

export function cpuPerFrameUs(m: Measured): number {
  return m.frames > 0 ? (m.cpu / m.frames) * 1e6 : 0;
}

/** One run of a workload, as data: what a bench child process is told to do. */
export type Job =
  | { kind: 'ring'; layout: 'split' | 'packed'; descs: number; chains: number }
  /** `frameFile`: the 12-byte net header and the frame. */
  | { kind: 'transmit'; frameFile: string; seconds: number }
  /** `sender`: tap_loop's arguments for the traffic into the TAP. */
  | { kind: 'receive'; seconds: number; features: VirtioTap.NetFeatureSwitches; sender: string[] };

export type ResultOf<J extends Job> = J extends { kind: 'ring' } ? RingRun : Measured;

/** Runs `job` once, in this process, on `lib`. */
export async function runJob<J extends Job>(lib: BenchLib, job: J, extras: DeviceExtras = {}): Promise<ResultOf<J>> {
  const j: Job = job;
  switch (j.kind) {
    case 'ring':
      return spinRing(lib, j.layout, j.descs, j.chains) as ResultOf<J>;
    case 'transmit':
      return (await tsTransmit(lib, new Uint8Array(readFileSync(j.frameFile)), j.seconds, extras)) as ResultOf<J>;
    case 'receive':
      return (await tsReceive(lib, j.seconds, j.features, () => runC(j.sender), extras)) as ResultOf<J>;
  }
}
