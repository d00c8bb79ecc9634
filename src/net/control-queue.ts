// The control queue (VIRTIO 1.2 §5.1.6.5): class, command and data in
// device-readable buffers, one ack byte in a device-writable one.
import { hasFeature } from '../virtio/constants.js';
import { Pop } from '../virtio/descriptor-chain.js';
import type { DeviceQueue } from '../virtio/queue.js';
import {
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_RX_ALLMULTI,
  VIRTIO_NET_CTRL_RX_ALLUNI,
  VIRTIO_NET_CTRL_RX_NOBCAST,
  VIRTIO_NET_CTRL_RX_NOMULTI,
  VIRTIO_NET_CTRL_RX_NOUNI,
  VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_CTRL_VLAN_ADD,
  VIRTIO_NET_CTRL_VLAN_DEL,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_OK,
} from './constants.js';
import type { RxFilter } from './filter.js';

/** Largest command accepted: a MAC table of 4096 entries plus headers. */
const MAX_COMMAND = 2 + 8 + 4096 * 6 * 2;

/** What the device does for commands that change more than the filter. */
export interface ControlHandlers {
  /** Guest offloads (a bit mask of GUEST_* feature bits); false when refused. */
  setGuestOffloads(offloads: bigint): boolean;
  /** Number of queue pairs to use; false when refused. */
  setQueuePairs(pairs: number): boolean;
  setMac(mac: Uint8Array): void;
  announceAck(): void;
}

export class ControlQueue {
  readonly index: number;
  commands = 0;
  errors = 0;
  private readonly q: DeviceQueue;
  private readonly features: bigint;
  private readonly filter: RxFilter;
  private readonly handlers: ControlHandlers;
  private readonly maxPairs: number;
  private readonly buf = new Uint8Array(MAX_COMMAND);
  private readonly chain;

  constructor(index: number, q: DeviceQueue, features: bigint, filter: RxFilter, handlers: ControlHandlers, maxPairs: number) {
    this.index = index;
    this.q = q;
    this.features = features;
    this.filter = filter;
    this.handlers = handlers;
    this.maxPairs = maxPairs;
    this.chain = q.newChain();
  }

  /** Handles every command made available; returns whether to interrupt, or 'broken'. */
  process(): boolean | 'broken' {
    const q = this.q;
    const c = this.chain;
    let any = false;
    // A budget of twice the ring: a guest that keeps adding commands cannot hold the device here.
    for (let budget = 2 * q.size; budget > 0; budget--) {
      const r = q.popChain(c);
      // Ring empty: ask for the next kick (with EVENT_IDX that moves avail_event
      // past what was popped: VIRTIO 1.2 §2.7, "Available Buffer Notification
      // Suppression"), then take a command that came meanwhile.
      if (r === Pop.EMPTY && !q.enableNotifications()) break;
      if (r === Pop.EMPTY) continue;
      if (r === Pop.BROKEN) return 'broken';
      any = true;
      // Gather the device-readable part (class, command, data): control path, a copy is fine.
      let len = 0;
      for (let s = 0; s < c.readable && len < MAX_COMMAND; s++) {
        const take = Math.min(c.len[s]!, MAX_COMMAND - len);
        const off = c.offset[s]!;
        this.buf.set(q.mem.regions[c.region[s]!]!.bytes.subarray(off, off + take), len);
        len += take;
      }
      const ack =
        r === Pop.BAD_CHAIN || c.readableBytes > MAX_COMMAND || c.writableBytes < 1 ? VIRTIO_NET_ERR : this.execute(this.buf.subarray(0, len));
      this.commands++;
      if (ack !== VIRTIO_NET_OK) this.errors++;
      // The ack is the last byte of the device-writable part (§5.1.6.5).
      if (c.writableBytes >= 1) {
        const last = c.count - 1;
        q.mem.regions[c.region[last]!]!.bytes[c.offset[last]! + c.len[last]! - 1] = ack;
      }
      q.addUsed(c.head, c.writableBytes >= 1 ? 1 : 0, c.ringSlots);
    }
    return any && q.flushUsed();
  }

  private has(bit: number): boolean {
    return hasFeature(this.features, bit);
  }

  private execute(cmd: Uint8Array): number {
    if (cmd.length < 2) return VIRTIO_NET_ERR;
    const cls = cmd[0]!;
    const op = cmd[1]!;
    const data = cmd.subarray(2);
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    switch (cls) {
      case VIRTIO_NET_CTRL_RX:
        return this.rxMode(op, data);
      case VIRTIO_NET_CTRL_MAC:
        if (op === VIRTIO_NET_CTRL_MAC_TABLE_SET && this.has(VIRTIO_NET_F_CTRL_RX)) return this.macTable(dv);
        if (op === VIRTIO_NET_CTRL_MAC_ADDR_SET && this.has(VIRTIO_NET_F_CTRL_MAC_ADDR) && data.length === 6) {
          if ((data[0]! & 1) !== 0) return VIRTIO_NET_ERR; // not a unicast address
          this.handlers.setMac(data.slice(0, 6));
          return VIRTIO_NET_OK;
        }
        return VIRTIO_NET_ERR;
      case VIRTIO_NET_CTRL_VLAN: {
        if (!this.has(VIRTIO_NET_F_CTRL_VLAN) || data.length !== 2) return VIRTIO_NET_ERR;
        const vid = dv.getUint16(0, true);
        if (vid >= 4096) return VIRTIO_NET_ERR;
        if (op === VIRTIO_NET_CTRL_VLAN_ADD) this.filter.setVlan(vid, true);
        else if (op === VIRTIO_NET_CTRL_VLAN_DEL) this.filter.setVlan(vid, false);
        else return VIRTIO_NET_ERR;
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_ANNOUNCE:
        if (!this.has(VIRTIO_NET_F_GUEST_ANNOUNCE) || op !== VIRTIO_NET_CTRL_ANNOUNCE_ACK) return VIRTIO_NET_ERR;
        this.handlers.announceAck();
        return VIRTIO_NET_OK;
      case VIRTIO_NET_CTRL_MQ: {
        if (!this.has(VIRTIO_NET_F_MQ) || op !== VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET || data.length !== 2) return VIRTIO_NET_ERR;
        const pairs = dv.getUint16(0, true);
        // §5.1.6.5.5: between VQ_PAIRS_MIN and both VQ_PAIRS_MAX and max_virtqueue_pairs.
        if (pairs < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || pairs > VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX || pairs > this.maxPairs) return VIRTIO_NET_ERR;
        return this.handlers.setQueuePairs(pairs) ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
      }
      case VIRTIO_NET_CTRL_GUEST_OFFLOADS: {
        if (!this.has(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) || op !== VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET || data.length !== 8) return VIRTIO_NET_ERR;
        const offloads = dv.getBigUint64(0, true);
        return this.handlers.setGuestOffloads(offloads) ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
      }
      default:
        return VIRTIO_NET_ERR;
    }
  }

  private rxMode(op: number, data: Uint8Array): number {
    if (!this.has(VIRTIO_NET_F_CTRL_RX) || data.length !== 1) return VIRTIO_NET_ERR;
    const on = data[0]! !== 0;
    const f = this.filter;
    const extra = this.has(VIRTIO_NET_F_CTRL_RX_EXTRA);
    switch (op) {
      case VIRTIO_NET_CTRL_RX_PROMISC:
        f.promisc = on;
        return VIRTIO_NET_OK;
      case VIRTIO_NET_CTRL_RX_ALLMULTI:
        f.allmulti = on;
        return VIRTIO_NET_OK;
      case VIRTIO_NET_CTRL_RX_ALLUNI:
        if (!extra) return VIRTIO_NET_ERR;
        f.alluni = on;
        return VIRTIO_NET_OK;
      case VIRTIO_NET_CTRL_RX_NOMULTI:
        if (!extra) return VIRTIO_NET_ERR;
        f.nomulti = on;
        return VIRTIO_NET_OK;
      case VIRTIO_NET_CTRL_RX_NOUNI:
        if (!extra) return VIRTIO_NET_ERR;
        f.nouni = on;
        return VIRTIO_NET_OK;
      case VIRTIO_NET_CTRL_RX_NOBCAST:
        if (!extra) return VIRTIO_NET_ERR;
        f.nobcast = on;
        return VIRTIO_NET_OK;
      default:
        return VIRTIO_NET_ERR;
    }
  }

  // §5.1.6.5.2: two tables, unicast then multicast, each a le32 count and that many MACs.
  private macTable(dv: DataView): number {
    const tables: Uint8Array[][] = [[], []];
    let off = 0;
    for (let t = 0; t < 2; t++) {
      if (off + 4 > dv.byteLength) return VIRTIO_NET_ERR;
      const entries = dv.getUint32(off, true);
      off += 4;
      if (entries > 4096 || off + entries * 6 > dv.byteLength) return VIRTIO_NET_ERR;
      for (let i = 0; i < entries; i++) {
        tables[t]!.push(new Uint8Array(dv.buffer.slice(dv.byteOffset + off, dv.byteOffset + off + 6)));
        off += 6;
      }
    }
    if (off !== dv.byteLength) return VIRTIO_NET_ERR;
    this.filter.setTables(tables[0]!, tables[1]!);
    return VIRTIO_NET_OK;
  }
}
