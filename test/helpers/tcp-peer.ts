// The least of a TCP stack the net device tests need on the guest side: it
// accepts one connection from the host, acknowledges what arrives in order
// (GSO super-frames included), and can send one segment of any size.
import type { NetDriver } from '../../src/driver/net-driver.js';
import type { NetHeader } from '../../src/net/net-header.js';
import { buildTcp, parseTcp, TCP_ACK, TCP_PSH, TCP_SYN, type ParsedTcp } from '../../src/util/packet.js';

export class TcpPeer {
  readonly received: Uint8Array[] = [];
  bytes = 0;
  /** Received frames by size and gso_type. */
  readonly frames: { length: number; gsoType: number; gsoSize: number }[] = [];
  outOfOrder = 0;
  private iss = 1_000_000;
  private sndNxt = 0;
  private rcvNxt = 0;
  private hostPort = 0;
  private established = false;
  private readonly driver: NetDriver;
  private readonly me: { mac: Uint8Array; ip: number; port: number };
  private readonly host: { mac: Uint8Array; ip: number };

  constructor(driver: NetDriver, me: { mac: Uint8Array; ip: number; port: number }, host: { mac: Uint8Array; ip: number }) {
    this.driver = driver;
    this.me = me;
    this.host = host;
  }

  get connected(): boolean {
    return this.established;
  }

  /** Feeds a received frame; returns true when it belonged to this connection. */
  input(frame: Uint8Array, header: NetHeader): boolean {
    const t = parseTcp(frame);
    if (t === null || t.dstPort !== this.me.port || t.dst !== this.me.ip) return false;
    if ((t.flags & TCP_SYN) !== 0) {
      this.hostPort = t.srcPort;
      this.rcvNxt = (t.seq + 1) >>> 0;
      this.sndNxt = (this.iss + 1) >>> 0;
      // MSS 1460, window scale 7 (RFC 7323): room for the host to send big bursts.
      const options = Uint8Array.of(2, 4, 0x05, 0xb4, 1, 3, 3, 7);
      this.send(this.iss, TCP_SYN | TCP_ACK, options);
      return true;
    }
    if ((t.flags & TCP_ACK) !== 0 && !this.established) this.established = true;
    this.frames.push({ length: frame.length, gsoType: header.gsoType, gsoSize: header.gsoSize });
    this.accept(t);
    return true;
  }

  private accept(t: ParsedTcp): void {
    if (t.data.length === 0) return;
    if (t.seq !== this.rcvNxt) {
      this.outOfOrder++;
    } else {
      this.received.push(t.data.slice());
      this.bytes += t.data.length;
      this.rcvNxt = (this.rcvNxt + t.data.length) >>> 0;
    }
    this.send(this.sndNxt, TCP_ACK);
  }

  private send(seq: number, flags: number, options?: Uint8Array, data?: Uint8Array, header: Partial<NetHeader> = {}, checksum: 'full' | 'partial' = 'full'): boolean {
    const frame = buildTcp({
      srcMac: this.me.mac,
      dstMac: this.host.mac,
      src: this.me.ip,
      dst: this.host.ip,
      srcPort: this.me.port,
      dstPort: this.hostPort,
      seq,
      ack: this.rcvNxt,
      flags,
      window: 0xffff,
      ...(options !== undefined ? { options } : {}),
      ...(data !== undefined ? { data } : {}),
      checksum,
    });
    return this.driver.send(frame, header);
  }

  /**
   * Sends `data` as one TSO super-frame (VIRTIO_NET_HDR_GSO_TCPV4): the host
   * side segments it; the checksum is left partial (NEEDS_CSUM).
   */
  sendSuperFrame(data: Uint8Array, mss = 1448): boolean {
    const header: Partial<NetHeader> = { flags: 1, gsoType: 1, gsoSize: mss, hdrLen: 54, csumStart: 34, csumOffset: 16 };
    const ok = this.send(this.sndNxt, TCP_ACK | TCP_PSH, undefined, data, header, 'partial');
    if (ok) this.sndNxt = (this.sndNxt + data.length) >>> 0;
    return ok;
  }
}
