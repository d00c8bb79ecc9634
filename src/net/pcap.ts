// Frames crossing the device, written as pcapng (Ethernet link type), which
// tcpdump, tshark and Wireshark read. Each frame's virtio_net_hdr is kept as
// the packet's comment (shown by tshark as frame.comment), and its direction
// as the packet's flags: outbound = sent by the guest, inbound = to the guest.
import { closeSync, openSync, write, writeSync } from 'node:fs';

import { NET_HDR_SIZE, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM } from './constants.js';
import { native } from '../host/binding.js';
import type { IoPlan } from '../host/io-plan.js';

const BLOCK_SHB = 0x0a0d0d0a;
const BLOCK_IDB = 1;
const BLOCK_EPB = 6;
const LINKTYPE_ETHERNET = 1;
const OPT_END = 0;
const OPT_COMMENT = 1;
const EPB_FLAGS = 2;
const DIR_INBOUND = 1;
const DIR_OUTBOUND = 2;
const GSO_NAMES: Record<number, string> = { 0: 'NONE', 1: 'TCPV4', 3: 'UDP', 4: 'TCPV6', 5: 'UDP_L4' };
/** Largest block: a 64 KiB GSO frame, its comment and framing. */
const MAX_BLOCK = 65536 + 256 + 64;

const pad4 = (n: number): number => (n + 3) & ~3;

/**
 * The virtio_net_hdr as a comment a person can read. Fields that only mean
 * something with checksum offload or GSO are left out when those are off.
 */
export function describeNetHeader(h: Uint8Array, at: number): string {
  const dv = new DataView(h.buffer, h.byteOffset + at, NET_HDR_SIZE);
  const flags = dv.getUint8(0);
  const gso = dv.getUint8(1);
  const names: string[] = [];
  if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) names.push('NEEDS_CSUM');
  if ((flags & VIRTIO_NET_HDR_F_DATA_VALID) !== 0) names.push('DATA_VALID');
  const gsoName = (GSO_NAMES[gso & 0x7f] ?? `${gso & 0x7f}`) + ((gso & 0x80) !== 0 ? '|ECN' : '');
  let text = `virtio_net_hdr flags=${flags}${names.length > 0 ? `(${names.join('|')})` : ''} gso_type=${gsoName}`;
  if (gso !== 0 || dv.getUint16(2, true) !== 0) text += ` hdr_len=${dv.getUint16(2, true)} gso_size=${dv.getUint16(4, true)}`;
  if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 || dv.getUint16(6, true) !== 0) {
    text += ` csum_start=${dv.getUint16(6, true)} csum_offset=${dv.getUint16(8, true)}`;
  }
  return `${text} num_buffers=${dv.getUint16(10, true)}`;
}

/** Thrown when a capture file cannot be opened or written. */
export class CaptureError extends Error {
  override readonly name = 'CaptureError';
  readonly code = 'ERR_VIRTIO_TAP_CAPTURE';
}

/** A block buffer: bytes, the same as 32-bit words (blocks are 4-aligned), and how full. */
interface Chunk {
  bytes: Buffer;
  words: Uint32Array;
}

const CHUNK = 1 << 21;
const CHUNKS = 4;
/** Frames recorded per native copy. */
const BATCH = 256;

/**
 * A pcapng file being written. Frames are copied into large buffers, each
 * written by the thread pool at its own file offset while the next fills, so
 * the packet path pays for a copy, not for the file system. When every
 * buffer is still being written, the packet path writes one itself (slower,
 * never lossy). close() resolves when everything is in the file.
 */
export class PcapWriter {
  readonly path: string;
  /** Frames written, and frames too large to record whole (recorded cut, counted). */
  frames = 0;
  truncated = 0;
  /** Buffers the packet path had to write itself because the thread pool was behind. */
  syncWrites = 0;
  private fd: number;
  private readonly free: Chunk[] = [];
  private cur: Chunk;
  private pos = 0;
  private filePos = 0;
  private inflight = 0;
  private failure: Error | null = null;
  private closing: { resolve: () => void; reject: (e: Error) => void } | null = null;
  private done: Promise<void> | null = null;
  private readonly timeBase: number;
  /** Microseconds since the epoch for the frames being recorded (see stamp). */
  private nowUs = 0;
  // The last header seen and its encoded comment option, per direction and queue: most frames repeat it.
  private readonly lastHeader = new Uint8Array(NET_HDR_SIZE + 1);
  private lastQueue = -1;
  private lastOption = new Uint8Array(0);
  // Frames added and not yet copied (see add): one native copy per batch.
  private plan: IoPlan | null = null;
  private pending = 0;
  private readonly jobAt = new Float64Array(BATCH);
  private readonly jobOut = new Uint8Array(BATCH);
  private readonly jobQueue = new Int32Array(BATCH);
  private readonly jobLen = new Int32Array(BATCH);
  private readonly jobs = new Float64Array(4 * BATCH);
  private readonly heads = new Uint8Array(NET_HDR_SIZE * BATCH);

  constructor(path: string) {
    this.path = path;
    try {
      this.fd = openSync(path, 'w');
    } catch (e) {
      throw new CaptureError(`cannot open capture file ${path}: ${(e as Error).message}`);
    }
    for (let i = 0; i < CHUNKS; i++) {
      const ab = new ArrayBuffer(CHUNK);
      this.free.push({ bytes: Buffer.from(ab), words: new Uint32Array(ab) });
    }
    this.cur = this.free.pop()!;
    this.timeBase = Date.now() * 1000 - performance.now() * 1000;
    this.stamp();
    this.sectionHeader();
    this.interface();
  }

  get closed(): boolean {
    return this.fd < 0 || this.closing !== null;
  }

  /** Takes the time for the frames recorded next (one batch of I/O shares one timestamp). */
  stamp(): void {
    this.nowUs = this.timeBase + performance.now() * 1000;
  }

  /**
   * One frame whose segments start at plan position `at` (a merged frame
   * runs on into the plan's following groups): `len` bytes, its
   * virtio_net_hdr first. The bytes are copied at the next copyPending(),
   * which the caller must call before the guest may reuse the buffers.
   * @internal the device's frame observer calls it
   */
  add(outbound: boolean, queue: number, plan: IoPlan, at: number, len: number): void {
    if (this.closed || len < NET_HDR_SIZE) return;
    if (this.pending > 0 && (plan !== this.plan || this.pending === BATCH)) this.copyPending();
    const k = this.pending++;
    this.plan = plan;
    this.jobAt[k] = at;
    this.jobOut[k] = outbound ? 1 : 0;
    this.jobQueue[k] = queue;
    this.jobLen[k] = len;
  }

  /** Copies the frames added since the last call out of guest memory and records them: two native calls in all. */
  copyPending(): void {
    const n = this.pending;
    const plan = this.plan;
    if (n === 0 || plan === null) return;
    this.pending = 0;
    const jobs = this.jobs;
    // First the headers, to know each record's comment and so its size.
    for (let k = 0; k < n; k++) {
      jobs[4 * k] = this.jobAt[k]!;
      jobs[4 * k + 1] = 0;
      jobs[4 * k + 2] = NET_HDR_SIZE;
      jobs[4 * k + 3] = NET_HDR_SIZE * k;
    }
    if (native().gatherFrames(plan.plan, jobs, n, this.heads) !== n) return;
    // Then lay out the records and copy the frames into them, chunk by chunk.
    let first = 0;
    for (let k = 0; k < n; k++) {
      const frameLen = Math.min(this.jobLen[k]! - NET_HDR_SIZE, MAX_BLOCK - 320);
      const option = this.commentOption(this.jobOut[k] === 1, this.jobQueue[k]!, this.heads, NET_HDR_SIZE * k);
      const total = 28 + pad4(frameLen) + option.length + 16;
      if (this.pos + total > CHUNK) {
        this.copyFrames(plan, first, k);
        first = k;
        this.submit();
      }
      jobs[4 * k] = this.jobAt[k]!;
      jobs[4 * k + 1] = NET_HDR_SIZE;
      jobs[4 * k + 2] = frameLen;
      jobs[4 * k + 3] = this.pos + 28;
      this.record(this.jobOut[k] === 1, option, frameLen, this.jobLen[k]! - NET_HDR_SIZE);
    }
    this.copyFrames(plan, first, n);
  }

  private copyFrames(plan: IoPlan, from: number, to: number): void {
    if (to <= from) return;
    native().gatherFrames(plan.plan, from === 0 ? this.jobs : this.jobs.subarray(4 * from), to - from, this.cur.bytes);
  }

  // Writes one record's framing (all but the frame's bytes) at pos and moves pos past it.
  private record(outbound: boolean, option: Uint8Array, frameLen: number, original: number): void {
    const b = this.cur.bytes;
    const w = this.cur.words;
    const p = this.pos;
    if (frameLen < original) this.truncated++;
    const padded = pad4(frameLen);
    for (let i = p + 28 + frameLen; i < p + 28 + padded; i++) b[i] = 0;
    let q = p + 28 + padded;
    b.set(option, q);
    q += option.length;
    w[q >> 2] = EPB_FLAGS | (4 << 16);
    w[(q >> 2) + 1] = outbound ? DIR_OUTBOUND : DIR_INBOUND;
    w[(q >> 2) + 2] = OPT_END;
    const total = q + 16 - p;
    w[(q >> 2) + 3] = total;
    const us = this.nowUs;
    w[p >> 2] = BLOCK_EPB;
    w[(p >> 2) + 1] = total;
    w[(p >> 2) + 2] = 0; // interface 0
    w[(p >> 2) + 3] = Math.floor(us / 4294967296);
    w[(p >> 2) + 4] = us >>> 0;
    w[(p >> 2) + 5] = frameLen;
    w[(p >> 2) + 6] = original;
    this.pos = p + total;
    this.frames++;
  }

  /** Writes everything and closes the file; resolves when all is in the file. */
  close(): Promise<void> {
    if (this.done !== null) return this.done;
    if (this.fd < 0) return (this.done = Promise.resolve());
    this.done = new Promise<void>((resolve, reject) => {
      this.closing = { resolve, reject };
    });
    this.done.catch(() => {}); // not waiting is allowed: no unhandled rejection (the error stays on the promise)
    try {
      this.copyPending();
      if (this.pos > 0) this.writeNow(this.cur, this.pos);
      this.pos = 0;
    } catch (e) {
      this.failure ??= e as Error;
    }
    this.finishIfIdle();
    return this.done;
  }

  // Hands the current buffer to the thread pool and takes a free one; writes it here when none is free.
  private submit(): void {
    if (this.pos === 0) return;
    const next = this.free.pop();
    if (next === undefined) {
      this.syncWrites++;
      this.writeNow(this.cur, this.pos);
      this.pos = 0;
      return;
    }
    const chunk = this.cur;
    const len = this.pos;
    const at = this.filePos;
    this.filePos += len;
    this.inflight++;
    write(this.fd, chunk.bytes, 0, len, at, (err) => {
      this.inflight--;
      if (err !== null) this.failure ??= err;
      this.free.push(chunk);
      this.finishIfIdle();
    });
    this.cur = next;
    this.pos = 0;
  }

  private writeNow(chunk: Chunk, len: number): void {
    let off = 0;
    try {
      while (off < len) off += writeSync(this.fd, chunk.bytes, off, len - off, this.filePos + off);
    } catch (e) {
      throw new CaptureError(`cannot write capture file ${this.path}: ${(e as Error).message}`);
    } finally {
      this.filePos += len;
    }
  }

  private finishIfIdle(): void {
    if (this.closing === null || this.inflight > 0 || this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
    const c = this.closing;
    if (this.failure !== null) c.reject(new CaptureError(`cannot write capture file ${this.path}: ${this.failure.message}`));
    else c.resolve();
  }

  // The comment option (code, length, text, padding) for this header, cached.
  private commentOption(outbound: boolean, queue: number, data: Uint8Array, at: number): Uint8Array {
    const last = this.lastHeader;
    let same = this.lastQueue === queue && last[NET_HDR_SIZE] === (outbound ? 1 : 0);
    for (let i = 0; same && i < NET_HDR_SIZE; i++) if (last[i] !== data[at + i]) same = false;
    if (same) return this.lastOption;
    last.set(data.subarray(at, at + NET_HDR_SIZE));
    last[NET_HDR_SIZE] = outbound ? 1 : 0;
    this.lastQueue = queue;
    const text = Buffer.from(`${describeNetHeader(data, at)}; ${outbound ? 'from guest, transmitq' : 'to guest, receiveq'} ${queue}`);
    const opt = new Uint8Array(4 + pad4(text.length));
    new DataView(opt.buffer).setUint16(0, OPT_COMMENT, true);
    new DataView(opt.buffer).setUint16(2, text.length, true);
    opt.set(text, 4);
    this.lastOption = opt;
    return opt;
  }

  private sectionHeader(): void {
    const appl = Buffer.from('virtio-tap');
    const total = 28 + 4 + pad4(appl.length) + 4;
    const b = this.cur.bytes;
    const p = this.pos;
    b.fill(0, p, p + total);
    b.writeUInt32LE(BLOCK_SHB, p);
    b.writeUInt32LE(total, p + 4);
    b.writeUInt32LE(0x1a2b3c4d, p + 8);
    b.writeUInt16LE(1, p + 12);
    b.writeUInt16LE(0, p + 14);
    b.writeInt32LE(-1, p + 16); // section length unknown
    b.writeInt32LE(-1, p + 20);
    b.writeUInt16LE(4, p + 24); // shb_userappl
    b.writeUInt16LE(appl.length, p + 26);
    appl.copy(b, p + 28);
    b.writeUInt32LE(total, p + total - 4);
    this.pos += total;
  }

  private interface(): void {
    const name = Buffer.from('virtio-tap');
    const total = 16 + 4 + pad4(name.length) + 4 + 4;
    const b = this.cur.bytes;
    const p = this.pos;
    b.fill(0, p, p + total);
    b.writeUInt32LE(BLOCK_IDB, p);
    b.writeUInt32LE(total, p + 4);
    b.writeUInt16LE(LINKTYPE_ETHERNET, p + 8);
    b.writeUInt32LE(0, p + 12); // no snap length limit
    b.writeUInt16LE(2, p + 16); // if_name
    b.writeUInt16LE(name.length, p + 18);
    name.copy(b, p + 20);
    b.writeUInt32LE(total, p + total - 4);
    this.pos += total;
  }
}
