// Building and parsing the few frames the demo and the tests exchange with
// the host: Ethernet, ARP (RFC 826), IPv4 (RFC 791), UDP (RFC 768), ICMP echo
// (RFC 792). Network byte order throughout; the virtio header is not here.
import { formatIpv4, formatMac, parseMac } from './addr.js';

export const ETH_HLEN = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const BROADCAST_MAC = parseMac('ff:ff:ff:ff:ff:ff');

/** Ones'-complement sum of bytes, folded to 16 bits, not inverted. */
export function onesSum(data: Uint8Array, start: number, end: number, initial = 0): number {
  let sum = initial;
  let i = start;
  for (; i + 1 < end; i += 2) sum += ((data[i] ?? 0) << 8) | (data[i + 1] ?? 0);
  if (i < end) sum += (data[i] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The Internet checksum (RFC 1071) of data[start, end). */
export function internetChecksum(data: Uint8Array, start: number, end: number, initial = 0): number {
  return ~onesSum(data, start, end, initial) & 0xffff;
}

/** The IPv4 pseudo-header sum for a TCP or UDP checksum, not inverted. */
export function pseudoHeaderSum(src: number, dst: number, protocol: number, length: number): number {
  let sum = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * Completes a partial checksum as a NIC would for VIRTIO_NET_HDR_F_NEEDS_CSUM:
 * the ones'-complement sum from `start` to the end, stored at start + offset.
 * Returns false when the positions do not fit the frame.
 */
export function completeChecksum(frame: Uint8Array, start: number, offset: number): boolean {
  if (start + offset + 2 > frame.length) return false;
  const c = internetChecksum(frame, start, frame.length);
  frame[start + offset] = c >>> 8;
  frame[start + offset + 1] = c & 0xff;
  return true;
}

function writeMac(view: Uint8Array, off: number, mac: Uint8Array): void {
  view.set(mac.subarray(0, 6), off);
}

export interface EthernetHeader {
  dst: Uint8Array;
  src: Uint8Array;
  type: number;
}

function writeEthernet(out: Uint8Array, h: EthernetHeader): void {
  writeMac(out, 0, h.dst);
  writeMac(out, 6, h.src);
  out[12] = h.type >>> 8;
  out[13] = h.type & 0xff;
}

export interface ArpFrame {
  op: 1 | 2; // request, reply
  senderMac: Uint8Array;
  senderIp: number;
  targetMac: Uint8Array;
  targetIp: number;
}

/** An ARP frame over Ethernet; requests go to broadcast. */
export function buildArp(a: ArpFrame): Uint8Array {
  const out = new Uint8Array(ETH_HLEN + 28);
  const dv = new DataView(out.buffer);
  writeEthernet(out, { dst: a.op === 1 ? BROADCAST_MAC : a.targetMac, src: a.senderMac, type: ETHERTYPE_ARP });
  dv.setUint16(14, 1); // hardware type Ethernet
  dv.setUint16(16, ETHERTYPE_IPV4);
  out[18] = 6;
  out[19] = 4;
  dv.setUint16(20, a.op);
  writeMac(out, 22, a.senderMac);
  dv.setUint32(28, a.senderIp);
  writeMac(out, 32, a.targetMac);
  dv.setUint32(38, a.targetIp);
  return out;
}

export function parseArp(frame: Uint8Array): ArpFrame | null {
  if (frame.length < ETH_HLEN + 28) return null;
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (dv.getUint16(12) !== ETHERTYPE_ARP || dv.getUint16(14) !== 1 || dv.getUint16(16) !== ETHERTYPE_IPV4) return null;
  const op = dv.getUint16(20);
  if (op !== 1 && op !== 2) return null;
  return {
    op,
    senderMac: frame.slice(22, 28),
    senderIp: dv.getUint32(28),
    targetMac: frame.slice(32, 38),
    targetIp: dv.getUint32(38),
  };
}

/** Who an IPv4 frame is from and to: Ethernet and IPv4 addresses. */
export interface Ipv4Addresses {
  srcMac: Uint8Array;
  dstMac: Uint8Array;
  src: number;
  dst: number;
}

/** A UDP or TCP segment's ports. */
export interface Ports {
  srcPort: number;
  dstPort: number;
}

export interface Ipv4Packet extends Ipv4Addresses {
  protocol: number;
  /** Transport header and data. */
  payload: Uint8Array;
  ttl?: number;
  id?: number;
}

/** Ethernet + IPv4 (20-byte header, checksum filled in) + payload as given. */
export function buildIpv4(p: Ipv4Packet): Uint8Array {
  const total = 20 + p.payload.length;
  const out = new Uint8Array(ETH_HLEN + total);
  const dv = new DataView(out.buffer);
  writeEthernet(out, { dst: p.dstMac, src: p.srcMac, type: ETHERTYPE_IPV4 });
  out[14] = 0x45;
  dv.setUint16(16, total);
  dv.setUint16(18, p.id ?? 0);
  dv.setUint16(20, 0x4000); // don't fragment
  out[22] = p.ttl ?? 64;
  out[23] = p.protocol;
  dv.setUint32(26, p.src);
  dv.setUint32(30, p.dst);
  dv.setUint16(24, internetChecksum(out, 14, 34));
  out.set(p.payload, 34);
  return out;
}

/** A transport segment in an IPv4 frame for `a`'s addresses (no TTL or id of its own). */
function wrapIpv4(a: Ipv4Addresses, protocol: number, payload: Uint8Array): Uint8Array {
  return buildIpv4({ srcMac: a.srcMac, dstMac: a.dstMac, src: a.src, dst: a.dst, protocol, payload });
}

/**
 * Starts a UDP or TCP segment of `length` bytes with its ports, and returns
 * it with a view and the pseudo-header sum its checksum starts from.
 */
function startSegment(p: Ipv4Addresses & Ports, protocol: number, length: number): { seg: Uint8Array; dv: DataView; pseudo: number } {
  const seg = new Uint8Array(length);
  const dv = new DataView(seg.buffer);
  dv.setUint16(0, p.srcPort);
  dv.setUint16(2, p.dstPort);
  return { seg, dv, pseudo: pseudoHeaderSum(p.src, p.dst, protocol, length) };
}

export interface UdpOptions extends Ipv4Addresses, Ports {
  data: Uint8Array;
  /** 'full' (default), 'none' (0), or 'partial': only the pseudo-header sum, for NEEDS_CSUM. */
  checksum?: 'full' | 'none' | 'partial';
}

/** An Ethernet/IPv4/UDP frame. */
export function buildUdp(u: UdpOptions): Uint8Array {
  const len = 8 + u.data.length;
  const { seg: payload, dv, pseudo } = startSegment(u, IPPROTO_UDP, len);
  dv.setUint16(4, len);
  payload.set(u.data, 8);
  const mode = u.checksum ?? 'full';
  if (mode === 'full') {
    const c = internetChecksum(payload, 0, len, pseudo);
    dv.setUint16(6, c === 0 ? 0xffff : c);
  } else if (mode === 'partial') {
    dv.setUint16(6, pseudo);
  }
  return wrapIpv4(u, IPPROTO_UDP, payload);
}

/** An ICMP echo request (type 8) or reply (type 0). */
export function buildIcmpEcho(
  p: Omit<Ipv4Packet, 'protocol' | 'payload'> & { type: 0 | 8; ident: number; seq: number; data: Uint8Array },
): Uint8Array {
  const payload = new Uint8Array(8 + p.data.length);
  const dv = new DataView(payload.buffer);
  payload[0] = p.type;
  dv.setUint16(4, p.ident);
  dv.setUint16(6, p.seq);
  payload.set(p.data, 8);
  dv.setUint16(2, internetChecksum(payload, 0, payload.length));
  return buildIpv4({ ...p, protocol: IPPROTO_ICMP, payload });
}

export interface ParsedIpv4 extends Ipv4Addresses {
  protocol: number;
  headerLength: number;
  totalLength: number;
  /** Offset of the transport header in the frame. */
  l4Offset: number;
  headerChecksumOk: boolean;
}

export function parseIpv4(frame: Uint8Array): ParsedIpv4 | null {
  if (frame.length < ETH_HLEN + 20) return null;
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (dv.getUint16(12) !== ETHERTYPE_IPV4) return null;
  const vihl = frame[14] ?? 0;
  const ihl = (vihl & 0x0f) * 4;
  if (vihl >>> 4 !== 4 || ihl < 20 || frame.length < ETH_HLEN + ihl) return null;
  return {
    dstMac: frame.subarray(0, 6),
    srcMac: frame.subarray(6, 12),
    src: dv.getUint32(26),
    dst: dv.getUint32(30),
    protocol: frame[23] ?? 0,
    headerLength: ihl,
    totalLength: dv.getUint16(16),
    l4Offset: ETH_HLEN + ihl,
    headerChecksumOk: internetChecksum(frame, 14, 14 + ihl) === 0,
  };
}

/** What every parsed transport segment has: its data, and whether its checksum holds. */
export interface ParsedSegment extends ParsedIpv4 {
  data: Uint8Array;
  checksumOk: boolean;
}

/** The transport part of an IPv4 frame: where it starts and ends, and a view of the frame. */
interface Transport {
  ip: ParsedIpv4;
  o: number;
  end: number;
  dv: DataView;
}

/**
 * The transport part of an IPv4 frame carrying `protocol`, ending where the
 * IPv4 total length says and at least `minLength` long; null otherwise.
 */
function transportOf(frame: Uint8Array, protocol: number, minLength: number): Transport | null {
  const ip = parseIpv4(frame);
  if (ip === null || ip.protocol !== protocol) return null;
  const o = ip.l4Offset;
  const end = ETH_HLEN + ip.totalLength;
  if (frame.length < end || end < o + minLength) return null;
  return { ip, o, end, dv: new DataView(frame.buffer, frame.byteOffset, frame.byteLength) };
}

/** checksumOk: the checksum is 0 (absent) or verifies. */
export interface ParsedUdp extends ParsedSegment, Ports {
  checksum: number;
}

export function parseUdp(frame: Uint8Array): ParsedUdp | null {
  const ip = parseIpv4(frame);
  if (ip === null || ip.protocol !== IPPROTO_UDP) return null;
  const o = ip.l4Offset;
  if (frame.length < o + 8) return null;
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const len = dv.getUint16(o + 4);
  if (len < 8 || frame.length < o + len) return null;
  const checksum = dv.getUint16(o + 6);
  const sum = internetChecksum(frame, o, o + len, pseudoHeaderSum(ip.src, ip.dst, IPPROTO_UDP, len));
  return {
    ...ip,
    srcPort: dv.getUint16(o),
    dstPort: dv.getUint16(o + 2),
    data: frame.subarray(o + 8, o + len),
    checksum,
    checksumOk: checksum === 0 || sum === 0,
  };
}

export interface ParsedIcmpEcho extends ParsedSegment {
  type: number;
  ident: number;
  seq: number;
}

export function parseIcmpEcho(frame: Uint8Array): ParsedIcmpEcho | null {
  const t = transportOf(frame, IPPROTO_ICMP, 8);
  if (t === null) return null;
  const { ip, o, end, dv } = t;
  const type = frame[o] ?? 255;
  if (type !== 0 && type !== 8) return null;
  return {
    ...ip,
    type,
    ident: dv.getUint16(o + 4),
    seq: dv.getUint16(o + 6),
    data: frame.subarray(o + 8, end),
    checksumOk: internetChecksum(frame, o, end) === 0,
  };
}

/** One line describing a frame, for logs and the demo. */
export function describeFrame(frame: Uint8Array): string {
  const arp = parseArp(frame);
  if (arp !== null) {
    return arp.op === 1
      ? `ARP who-has ${formatIpv4(arp.targetIp)} tell ${formatIpv4(arp.senderIp)}`
      : `ARP ${formatIpv4(arp.senderIp)} is-at ${formatMac(arp.senderMac)}`;
  }
  const icmp = parseIcmpEcho(frame);
  if (icmp !== null) {
    return `ICMP echo ${icmp.type === 8 ? 'request' : 'reply'} ${formatIpv4(icmp.src)} > ${formatIpv4(icmp.dst)} id ${icmp.ident} seq ${icmp.seq}`;
  }
  const udp = parseUdp(frame);
  if (udp !== null) {
    return `UDP ${formatIpv4(udp.src)}:${udp.srcPort} > ${formatIpv4(udp.dst)}:${udp.dstPort} ${udp.data.length} bytes`;
  }
  const ip = parseIpv4(frame);
  if (ip !== null) return `IPv4 ${formatIpv4(ip.src)} > ${formatIpv4(ip.dst)} protocol ${ip.protocol}`;
  const type = frame.length >= 14 ? ((frame[12] ?? 0) << 8) | (frame[13] ?? 0) : 0;
  return `Ethernet type 0x${type.toString(16).padStart(4, '0')} ${frame.length} bytes`;
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export interface TcpOptions extends Ipv4Addresses, Ports {
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** TCP options, already encoded, padded to a multiple of 4. */
  options?: Uint8Array;
  data?: Uint8Array;
  /** 'full' (default) or 'partial': only the pseudo-header sum, for NEEDS_CSUM and TSO. */
  checksum?: 'full' | 'partial';
}

/** An Ethernet/IPv4/TCP frame (RFC 9293). */
export function buildTcp(t: TcpOptions): Uint8Array {
  const opts = t.options ?? new Uint8Array(0);
  const data = t.data ?? new Uint8Array(0);
  const hlen = 20 + opts.length;
  const { seg, dv, pseudo } = startSegment(t, IPPROTO_TCP, hlen + data.length);
  dv.setUint32(4, t.seq >>> 0);
  dv.setUint32(8, t.ack >>> 0);
  seg[12] = (hlen / 4) << 4;
  seg[13] = t.flags;
  dv.setUint16(14, t.window);
  seg.set(opts, 20);
  seg.set(data, hlen);
  dv.setUint16(16, t.checksum === 'partial' ? pseudo : internetChecksum(seg, 0, seg.length, pseudo));
  return wrapIpv4(t, IPPROTO_TCP, seg);
}

export interface ParsedTcp extends ParsedSegment, Ports {
  seq: number;
  ack: number;
  flags: number;
  window: number;
}

export function parseTcp(frame: Uint8Array): ParsedTcp | null {
  const t = transportOf(frame, IPPROTO_TCP, 20);
  if (t === null) return null;
  const { ip, o, end, dv } = t;
  const hlen = ((frame[o + 12] ?? 0) >>> 4) * 4;
  if (hlen < 20 || o + hlen > end) return null;
  const len = end - o;
  return {
    ...ip,
    srcPort: dv.getUint16(o),
    dstPort: dv.getUint16(o + 2),
    seq: dv.getUint32(o + 4),
    ack: dv.getUint32(o + 8),
    flags: frame[o + 13] ?? 0,
    window: dv.getUint16(o + 14),
    data: frame.subarray(o + hlen, end),
    checksumOk: internetChecksum(frame, o, end, pseudoHeaderSum(ip.src, ip.dst, IPPROTO_TCP, len)) === 0,
  };
}
