// A vhost-user protocol fuzzer (test tier 4): a hostile front-end sends
// random and mutated message sequences with random fds to a back-end in a
// child process. Seeded: a seed and a sequence number give the same
// messages again. After every sequence the back-end must have ended the
// connection or still answer; every `checkEvery` sequences it must move a
// frame for a well-behaved front-end, hold no fd or memfd mapping it did not
// hold before, and idle without burning CPU.
import { native } from '../../src/host/binding.js';
import {
  memTablePayload,
  ProtocolFeature,
  Req,
  statePayload,
  u64Payload,
  VHOST_USER_NEED_REPLY_MASK,
  vringAddrPayload,
} from '../../src/transport/vhost-user/protocol.js';
import { VA_BASE } from './vhost-frontend.js';
import { ChildBackend, FdFactory, HostileClient, movesAFrame, sleep, type FdKind, type Holdings } from './vhost-hostile.js';

const n = native();

/** mulberry32: small, fast, and the same numbers for the same seed everywhere. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(below: number): number {
    return Math.floor(this.next() * below);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** Mostly values near the edges that matter, sometimes anything in 64 bits. */
  u64(): bigint {
    const edges = [0n, 1n, 0xfffn, 0x1000n, 1n << 20n, 1n << 31n, 1n << 32n, (1n << 32n) - 1n, 1n << 40n, 1n << 52n, 1n << 63n, (1n << 64n) - 1n, VA_BASE, VA_BASE + 0x1000n];
    if (this.chance(0.6)) return (this.pick(edges) + BigInt(this.int(3))) & ((1n << 64n) - 1n);
    return (BigInt(this.int(2 ** 32)) << 32n) | BigInt(this.int(2 ** 32));
  }
  bytes(len: number): Uint8Array {
    return Uint8Array.from({ length: len }, () => this.int(256));
  }
}

const MEM = 8 << 20;
const BIG = 5 * 2 ** 30;
const REQUESTS = Object.values(Req).filter((r) => typeof r === 'number');
const FD_POOL_KINDS: readonly FdKind[] = ['eventfd', 'eventfd', 'eventfd', 'eventfd-blocking-full', 'memfd', 'memfd-small', 'memfd-empty', 'pipe', 'pipe-full', 'socket', 'socket-eof', 'file', 'dir', 'devnull'];

/** The fds the fuzzer hands out, made once and sent again and again (the back-end gets its own copies). */
class FdPool {
  readonly factory = new FdFactory();
  readonly byKind = new Map<FdKind, number>();
  readonly eventfds: number[] = [];
  /** The guest RAM the well-formed tables name (8 MiB), mapped here to scribble on. */
  readonly ram: number;
  readonly ramBytes: Uint8Array;
  /** A sparse 5 GiB memfd: regions over 4 GiB. */
  readonly big: number;

  constructor() {
    for (const k of new Set(FD_POOL_KINDS)) this.byKind.set(k, this.factory.make(k));
    for (let i = 0; i < 8; i++) this.eventfds.push(this.factory.make('eventfd'));
    this.ram = this.factory.make('memfd', MEM);
    this.big = this.factory.make('memfd', BIG);
    const ab = n.mmapShared(this.ram, MEM, 0);
    if (typeof ab === 'number') throw new Error(`mmap: ${ab}`);
    this.ramBytes = new Uint8Array(ab);
  }

  any(rng: Rng): number {
    return rng.chance(0.5) ? rng.pick(this.eventfds) : this.byKind.get(rng.pick(FD_POOL_KINDS))!;
  }

  close(): void {
    n.unmap(this.ramBytes.buffer as ArrayBuffer);
    this.factory.closeAll();
  }
}

interface Msg {
  request: number;
  payload: Uint8Array;
  fds: number[];
  flags: number;
}

/** One message: a well-formed request with random fields, or a mutation of one, or noise. */
function message(rng: Rng, pool: FdPool): Msg {
  const flags = rng.chance(0.7) ? VHOST_USER_NEED_REPLY_MASK : rng.chance(0.1) ? rng.int(256) & ~3 : 0;
  const request = rng.chance(0.9) ? rng.pick(REQUESTS) : rng.int(64);
  const ring = rng.chance(0.8) ? rng.int(3) : rng.int(300);
  let payload: Uint8Array;
  let fds: number[] = [];
  switch (request) {
    case Req.SET_MEM_TABLE: {
      const count = rng.chance(0.8) ? 1 + rng.int(2) : rng.int(10);
      const big = rng.chance(0.1);
      const regions = Array.from({ length: count }, (_, i) =>
        big
          ? { guestPhysAddr: BigInt(i) << 33n, memorySize: BigInt(BIG) - BigInt(rng.int(2)) * 4096n, userspaceAddr: VA_BASE + (BigInt(i) << 33n), mmapOffset: BigInt(rng.int(2)) * 4096n }
          : rng.chance(0.6)
          ? { guestPhysAddr: BigInt(i) * BigInt(MEM), memorySize: BigInt(MEM), userspaceAddr: VA_BASE + BigInt(i) * BigInt(MEM), mmapOffset: 0n }
          : { guestPhysAddr: rng.u64(), memorySize: rng.u64(), userspaceAddr: rng.u64(), mmapOffset: rng.chance(0.5) ? 0n : rng.u64() },
      );
      payload = memTablePayload(regions);
      fds = Array.from({ length: rng.chance(0.8) ? count : rng.int(5) }, () => (big ? pool.big : rng.chance(0.7) ? pool.ram : pool.any(rng)));
      break;
    }
    case Req.SET_VRING_ADDR: {
      const base = VA_BASE + BigInt(0x1000 * (1 + 3 * (ring % 3)));
      const near = (off: bigint) => (rng.chance(0.7) ? base + off : rng.u64());
      payload = vringAddrPayload({ index: ring, flags: rng.chance(0.9) ? 0 : rng.int(4), desc: near(0n), avail: near(0x1000n), used: near(0x2000n), log: 0n });
      break;
    }
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ERR:
      payload = u64Payload(BigInt(ring) | (rng.chance(0.1) ? 0x100n : 0n));
      fds = rng.chance(0.85) ? [rng.chance(0.6) ? rng.pick(pool.eventfds) : pool.any(rng)] : Array.from({ length: rng.int(4) }, () => pool.any(rng));
      break;
    case Req.SET_FEATURES:
      payload = u64Payload(rng.chance(0.7) ? (1n << 32n) | (1n << 30n) | (rng.chance(0.5) ? 1n << 34n : 0n) : rng.u64());
      break;
    case Req.SET_PROTOCOL_FEATURES:
      payload = u64Payload(rng.chance(0.7) ? (1n << BigInt(ProtocolFeature.REPLY_ACK)) | (rng.chance(0.5) ? 1n << BigInt(ProtocolFeature.STATUS) : 0n) : rng.u64());
      break;
    default:
      payload = rng.chance(0.7) ? statePayload(ring, rng.chance(0.5) ? [0, 1, 64, 256, 32768][rng.int(5)]! : rng.int(2 ** 32)) : rng.bytes(rng.int(48));
  }
  if (rng.chance(0.08)) payload = payload.subarray(0, rng.int(payload.length + 1)); // cut short
  if (rng.chance(0.03)) fds = Array.from({ length: 17 + rng.int(8) }, () => pool.any(rng)); // more fds than any request takes
  if (rng.chance(0.05)) fds.push(pool.any(rng));
  return { request, payload, fds, flags };
}

/** A sequence: mostly a set-up as a front-end does it with random values and mutations, then kicks and noise. */
function sequence(rng: Rng, pool: FdPool): Msg[] {
  const out: Msg[] = [];
  const setUp = rng.chance(0.6);
  if (setUp) {
    out.push({ request: Req.SET_FEATURES, payload: u64Payload((1n << 32n) | (1n << 30n) | (rng.chance(0.5) ? 1n << 34n : 0n)), fds: [], flags: 0 });
    out.push({ request: Req.SET_PROTOCOL_FEATURES, payload: u64Payload(1n << BigInt(ProtocolFeature.REPLY_ACK)), fds: [], flags: 0 });
    out.push({ request: Req.SET_MEM_TABLE, payload: memTablePayload([{ guestPhysAddr: 0n, memorySize: BigInt(MEM), userspaceAddr: VA_BASE, mmapOffset: 0n }]), fds: [pool.ram], flags: 0 });
    for (const r of [0, 1]) {
      const at = VA_BASE + BigInt(0x1000 * (1 + 3 * r));
      out.push({ request: Req.SET_VRING_NUM, payload: statePayload(r, rng.chance(0.8) ? 64 : rng.int(70000)), fds: [], flags: 0 });
      out.push({ request: Req.SET_VRING_ADDR, payload: vringAddrPayload({ index: r, flags: 0, desc: at, avail: at + 0x1000n, used: at + 0x2000n, log: 0n }), fds: [], flags: 0 });
      out.push({ request: Req.SET_VRING_CALL, payload: u64Payload(BigInt(r)), fds: [rng.pick(pool.eventfds)], flags: 0 });
      out.push({ request: Req.SET_VRING_KICK, payload: u64Payload(BigInt(r)), fds: [rng.pick(pool.eventfds)], flags: 0 });
      out.push({ request: Req.SET_VRING_ENABLE, payload: statePayload(r, 1), fds: [], flags: 0 });
    }
    // Mutate a few of them.
    for (let k = rng.int(3); k > 0; k--) out[rng.int(out.length)] = message(rng, pool);
  }
  for (let k = 1 + rng.int(10); k > 0; k--) out.push(message(rng, pool));
  return out;
}

export interface FuzzOptions {
  seed: number;
  /** Stop after this long, or after `maxSequences`. */
  seconds: number;
  maxSequences?: number;
  /** Check the well-behaved front-end, the holdings and idle CPU every this many sequences. */
  checkEvery?: number;
  log?: (line: string) => void;
}

export interface FuzzReport {
  seed: number;
  sequences: number;
  messages: number;
  checks: number;
  /** What went wrong, with the seed and sequence to replay it; empty when nothing did. */
  findings: string[];
  refused: number;
  /** How deep the sequences got: devices started, rings broken (tier 2), ring fds that failed (tier 3). */
  started: number;
  ringsBroken: number;
  ringFdFaults: number;
}

/** Runs the fuzzer against a fresh back-end in a child process. */
export async function fuzz(o: FuzzOptions): Promise<FuzzReport> {
  const b = await ChildBackend.start();
  const pool = new FdPool();
  const report: FuzzReport = { seed: o.seed, sequences: 0, messages: 0, checks: 0, findings: [], refused: 0, started: 0, ringsBroken: 0, ringFdFaults: 0 };
  const log = o.log ?? (() => {});
  const every = o.checkEvery ?? 100;
  try {
    let baseline = await settle(b);
    if (baseline === null) throw new Error(`the back-end does not serve a well-behaved front-end to begin with: ${b.why()}`);
    const deadline = Date.now() + o.seconds * 1000;
    while (Date.now() < deadline && report.sequences < (o.maxSequences ?? Infinity) && report.findings.length === 0) {
      const seq = report.sequences;
      const rng = new Rng(o.seed ^ Math.imul(seq + 1, 0x9e3779b1));
      report.messages += await runSequence(b, rng, pool);
      report.sequences++;
      if (!b.alive) report.findings.push(`seed ${o.seed} sequence ${seq}: the back-end died: ${b.why()}`);
      else if (report.sequences % every === 0) {
        report.checks++;
        const why = await check(b, baseline);
        if (why !== null) report.findings.push(`seed ${o.seed} sequences up to ${seq}: ${why}`);
        log(`${report.sequences} sequences, ${report.messages} messages, ${report.checks} checks`);
        baseline = why === null ? baseline : ((await settle(b)) ?? baseline);
      }
    }
    if (b.alive && report.findings.length === 0) {
      report.checks++;
      const why = await check(b, baseline);
      if (why !== null) report.findings.push(`seed ${o.seed} after ${report.sequences} sequences: ${why}`);
    }
    if (b.alive) {
      const stats = await b.readStats();
      report.refused = stats['refused'] ?? 0;
      report.ringsBroken = stats['ringsBroken'] ?? 0;
      report.ringFdFaults = stats['ringFdFaults'] ?? 0;
    }
    report.started = b.logs.filter((l) => l.startsWith('device started')).length;
  } finally {
    pool.close();
    await b.stop();
  }
  return report;
}

// One sequence on one connection; waits until the back-end has let it go. Returns the messages sent.
async function runSequence(b: ChildBackend, rng: Rng, pool: FdPool): Promise<number> {
  const gone = b.logs.filter((l) => l.startsWith('front-end gone')).length;
  const c = await HostileClient.connect(b.socket);
  let sent = 0;
  try {
    for (const m of sequence(rng, pool)) {
      if (!c.send(m.request, m.payload, m.fds, m.flags)) break;
      sent++;
      if (rng.chance(0.2)) n.eventfdWrite(rng.pick(pool.eventfds)); // a kick, or a call the back-end never reads
      if (rng.chance(0.1)) pool.ramBytes.set(rng.bytes(64), rng.int(0x8000)); // the rings, scribbled on
      if (rng.chance(0.1)) c.drain();
    }
    c.drain();
  } finally {
    c.close();
  }
  // One connection at a time: wait for the back-end to see this one end.
  for (let i = 0; i < 400 && b.alive && b.logs.filter((l) => l.startsWith('front-end gone')).length === gone; i++) await sleep(1);
  return sent;
}

// The baseline: what the back-end holds once a well-behaved front-end has come and gone.
async function settle(b: ChildBackend): Promise<Holdings | null> {
  if ((await movesAFrame(b.socket)) !== null) return null;
  await sleep(50);
  return b.holdings();
}

// Null when the back-end serves, holds what it held, and idles; else what is wrong.
async function check(b: ChildBackend, base: Holdings): Promise<string | null> {
  const frame = await movesAFrame(b.socket);
  if (frame !== null) return `a well-behaved front-end failed: ${frame}`;
  await sleep(50);
  const now = b.holdings();
  if (now.fds !== base.fds || now.memfdMaps !== base.memfdMaps) return `holds ${now.fds} fds and ${now.memfdMaps} memfd mappings, had ${base.fds} and ${base.memfdMaps}`;
  await sleep(300);
  const ticks = b.holdings().cpuTicks - now.cpuTicks;
  if (ticks > 10) return `used ${ticks} clock ticks of CPU in 300 ms of idling`;
  return null;
}
