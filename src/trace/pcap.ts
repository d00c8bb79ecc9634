// Frames crossing the device, written as pcapng (Ethernet link type), which
// tcpdump, tshark and Wireshark read. Each frame's virtio_net_hdr is kept as
// the packet's comment (shown by tshark as frame.comment), and its direction
// as the packet's flags: outbound = sent by the guest, inbound = to the guest.
import { closeSync, openSync, writeSync } from 'node:fs';

import { NET_HDR_SIZE, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../net/constants.js';

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

/** The virtio_net_hdr as a comment a person can read. */
export function describeNetHeader(h: Uint8Array, at: number): string {
  const dv = new DataView(h.buffer, h.byteOffset + at, NET_HDR_SIZE);
  const flags = dv.getUint8(0);
  const gso = dv.getUint8(1);
  const names: string[] = [];
  if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) names.push('NEEDS_CSUM');
  if ((flags & VIRTIO_NET_HDR_F_DATA_VALID) !== 0) names.push('DATA_VALID');
  const gsoName = (GSO_NAMES[gso & 0x7f] ?? `${gso & 0x7f}`) + ((gso & 0x80) !== 0 ? '|ECN' : '');
  return (
    `virtio_net_hdr flags=${flags}${names.length > 0 ? `(${names.join('|')})` : ''} gso_type=${gsoName}` +
    ` hdr_len=${dv.getUint16(2, true)} gso_size=${dv.getUint16(4, true)} csum_start=${dv.getUint16(6, true)}` +
    ` csum_offset=${dv.getUint16(8, true)} num_buffers=${dv.getUint16(10, true)}`
  );
}

/** Thrown when a capture file cannot be opened or written. */
export class CaptureError extends Error {
  override readonly name = 'CaptureError';
  readonly code = 'ERR_VIRTIO_TAP_CAPTURE';
}

/**
 * A pcapng file being written. Frames are buffered and written in large
 * blocks; close() writes what is left. Not for use from two threads.
 */
export class PcapWriter {
  readonly path: string;
  /** Frames written, and frames too large to record whole (recorded cut, counted). */
  frames = 0;
  truncated = 0;
  private fd: number;
  private readonly buf: Buffer;
  private pos = 0;
  private readonly timeBase: number;
  // The last header seen and its encoded comment, per direction and queue: most frames repeat it.
  private readonly lastHeader = new Uint8Array(NET_HDR_SIZE + 1);
  private lastQueue = -1;
  private lastComment: Buffer = Buffer.alloc(0);

  constructor(path: string, bufferBytes = 1 << 22) {
    this.path = path;
    try {
      this.fd = openSync(path, 'w');
    } catch (e) {
      throw new CaptureError(`cannot open capture file ${path}: ${(e as Error).message}`);
    }
    this.buf = Buffer.allocUnsafe(Math.max(bufferBytes, 2 * MAX_BLOCK));
    this.timeBase = Date.now() * 1000 - performance.now() * 1000;
    this.sectionHeader();
    this.interface();
  }

  get closed(): boolean {
    return this.fd < 0;
  }

  /**
   * One frame: `data[at, at + len)` holds its virtio_net_hdr then the
   * Ethernet frame. `outbound`: sent by the guest. `queue`: the virtqueue.
   */
  frame(outbound: boolean, queue: number, data: Uint8Array, at: number, len: number): void {
    if (this.fd < 0 || len < NET_HDR_SIZE) return;
    const comment = this.comment(outbound, queue, data, at);
    let frameLen = len - NET_HDR_SIZE;
    const original = frameLen;
    const room = MAX_BLOCK - 64 - comment.length;
    if (frameLen > room) {
      frameLen = room;
      this.truncated++;
    }
    const total = 28 + pad4(frameLen) + 4 + pad4(comment.length) + 16;
    if (this.pos + total > this.buf.length) this.flush();
    const b = this.buf;
    let p = this.pos;
    const us = this.timeBase + performance.now() * 1000;
    b.writeUInt32LE(BLOCK_EPB, p);
    b.writeUInt32LE(total, p + 4);
    b.writeUInt32LE(0, p + 8); // interface 0
    b.writeUInt32LE(Math.floor(us / 4294967296), p + 12);
    b.writeUInt32LE(Math.floor(us) >>> 0, p + 16);
    b.writeUInt32LE(frameLen, p + 20);
    b.writeUInt32LE(original, p + 24);
    p += 28;
    b.set(data.subarray(at + NET_HDR_SIZE, at + NET_HDR_SIZE + frameLen), p);
    p += frameLen;
    b.fill(0, p, this.pos + 28 + pad4(frameLen));
    p = this.pos + 28 + pad4(frameLen);
    b.writeUInt16LE(OPT_COMMENT, p);
    b.writeUInt16LE(comment.length, p + 2);
    comment.copy(b, p + 4);
    b.fill(0, p + 4 + comment.length, p + 4 + pad4(comment.length));
    p += 4 + pad4(comment.length);
    b.writeUInt16LE(EPB_FLAGS, p);
    b.writeUInt16LE(4, p + 2);
    b.writeUInt32LE(outbound ? DIR_OUTBOUND : DIR_INBOUND, p + 4);
    b.writeUInt32LE(OPT_END, p + 8);
    b.writeUInt32LE(total, p + 12);
    this.pos += total;
    this.frames++;
  }

  /** Writes what is buffered. */
  flush(): void {
    if (this.fd < 0 || this.pos === 0) return;
    let off = 0;
    try {
      while (off < this.pos) off += writeSync(this.fd, this.buf, off, this.pos - off);
    } catch (e) {
      this.pos = 0;
      throw new CaptureError(`cannot write capture file ${this.path}: ${(e as Error).message}`);
    }
    this.pos = 0;
  }

  close(): void {
    if (this.fd < 0) return;
    try {
      this.flush();
    } finally {
      closeSync(this.fd);
      this.fd = -1;
    }
  }

  private comment(outbound: boolean, queue: number, data: Uint8Array, at: number): Buffer {
    const last = this.lastHeader;
    let same = this.lastQueue === queue && last[NET_HDR_SIZE] === (outbound ? 1 : 0);
    for (let i = 0; same && i < NET_HDR_SIZE; i++) if (last[i] !== data[at + i]) same = false;
    if (same) return this.lastComment;
    last.set(data.subarray(at, at + NET_HDR_SIZE));
    last[NET_HDR_SIZE] = outbound ? 1 : 0;
    this.lastQueue = queue;
    this.lastComment = Buffer.from(`${describeNetHeader(data, at)}; ${outbound ? 'from guest, transmitq' : 'to guest, receiveq'} ${queue}`);
    return this.lastComment;
  }

  private sectionHeader(): void {
    const appl = Buffer.from('virtio-tap');
    const total = 28 + 4 + pad4(appl.length) + 4;
    const b = this.buf;
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
    const b = this.buf;
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
