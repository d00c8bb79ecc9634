// The receive filter the control queue programs (VIRTIO 1.2 §5.1.6.5.1,
// §5.1.6.5.2, §5.1.6.5.3): RX modes, MAC tables, VLAN table.
import type { DropReason } from './metrics.js';

/** The whole filter as plain data: what a queue pair in a worker thread is handed. */
export interface FilterState {
  promisc: boolean;
  allmulti: boolean;
  alluni: boolean;
  nomulti: boolean;
  nouni: boolean;
  nobcast: boolean;
  vlanFiltering: boolean;
  mac: number[];
  unicast: number[][];
  multicast: number[][];
  vlans: number[];
}

function macKey(b: Uint8Array, off: number): number {
  // 48-bit MAC as an exact number.
  return (b[off]! * 2 ** 40) + (b[off + 1]! * 2 ** 32) + ((b[off + 2]! << 24) >>> 0) + (b[off + 3]! << 16) + (b[off + 4]! << 8) + b[off + 5]!;
}

export class RxFilter {
  promisc = true; // as after reset, until a driver with CTRL_RX says otherwise
  allmulti = false;
  alluni = false;
  nomulti = false;
  nouni = false;
  nobcast = false;
  /** VLAN filtering is on once CTRL_VLAN is negotiated: only listed VLANs pass. */
  vlanFiltering = false;
  private mac = 0;
  private macBytes: number[] = [];
  private readonly unicast = new Set<number>();
  private readonly multicast = new Set<number>();
  private unicastList: number[][] = [];
  private multicastList: number[][] = [];
  private readonly vlans = new Uint8Array(4096 / 8);

  reset(mac: Uint8Array): void {
    this.promisc = true;
    this.allmulti = false;
    this.alluni = false;
    this.nomulti = false;
    this.nouni = false;
    this.nobcast = false;
    this.vlanFiltering = false;
    this.setTables([], []);
    this.vlans.fill(0);
    this.setMac(mac);
  }

  setMac(mac: Uint8Array): void {
    this.mac = macKey(mac, 0);
    this.macBytes = Array.from(mac.subarray(0, 6));
  }

  setTables(unicast: Uint8Array[], multicast: Uint8Array[]): void {
    this.unicast.clear();
    this.multicast.clear();
    this.unicastList = unicast.map((m) => Array.from(m.subarray(0, 6)));
    this.multicastList = multicast.map((m) => Array.from(m.subarray(0, 6)));
    for (const m of unicast) this.unicast.add(macKey(m, 0));
    for (const m of multicast) this.multicast.add(macKey(m, 0));
  }

  setVlan(vid: number, on: boolean): void {
    if (on) this.vlans[vid >>> 3] = this.vlans[vid >>> 3]! | (1 << (vid & 7));
    else this.vlans[vid >>> 3] = this.vlans[vid >>> 3]! & ~(1 << (vid & 7));
  }

  hasVlan(vid: number): boolean {
    return (this.vlans[vid >>> 3]! & (1 << (vid & 7))) !== 0;
  }

  /** The whole state, to hand to a queue pair in a worker thread. */
  state(): FilterState {
    const vlans: number[] = [];
    for (let v = 0; v < 4096; v++) if (this.hasVlan(v)) vlans.push(v);
    return {
      promisc: this.promisc,
      allmulti: this.allmulti,
      alluni: this.alluni,
      nomulti: this.nomulti,
      nouni: this.nouni,
      nobcast: this.nobcast,
      vlanFiltering: this.vlanFiltering,
      mac: this.macBytes,
      unicast: this.unicastList,
      multicast: this.multicastList,
      vlans,
    };
  }

  /** A filter in the given state (a worker thread's copy of the device's). */
  static fromState(state: FilterState): RxFilter {
    const f = new RxFilter();
    f.applyState(state);
    return f;
  }

  /** Takes on the whole state of another filter (see state()). */
  applyState(s: FilterState): void {
    this.reset(Uint8Array.from(s.mac));
    this.promisc = s.promisc;
    this.allmulti = s.allmulti;
    this.alluni = s.alluni;
    this.nomulti = s.nomulti;
    this.nouni = s.nouni;
    this.nobcast = s.nobcast;
    this.vlanFiltering = s.vlanFiltering;
    this.setTables(s.unicast.map((m) => Uint8Array.from(m)), s.multicast.map((m) => Uint8Array.from(m)));
    for (const v of s.vlans) this.setVlan(v, true);
  }

  /** True when some frame could be refused (the receive path then reads frame by frame). */
  get active(): boolean {
    return !this.promisc || this.vlanFiltering;
  }

  /**
   * Checks an Ethernet frame at frame[off...] (at least 14 bytes, 18 when tagged).
   * Returns the drop reason, or null when the frame passes.
   */
  check(frame: Uint8Array, off: number, len: number): DropReason | null {
    if (len < 14) return null;
    if (this.vlanFiltering && len >= 18 && frame[off + 12] === 0x81 && frame[off + 13] === 0x00) {
      const vid = ((frame[off + 14]! << 8) | frame[off + 15]!) & 0x0fff;
      if (!this.hasVlan(vid)) return 'rx_filtered_vlan';
    }
    if (this.promisc) return null;
    const first = frame[off]!;
    if ((first & 1) === 0) {
      if (this.nouni) return 'rx_filtered_unicast';
      if (this.alluni) return null;
      const k = macKey(frame, off);
      return k === this.mac || this.unicast.has(k) ? null : 'rx_filtered_unicast';
    }
    const k = macKey(frame, off);
    if (k === 0xffffffffffff) return this.nobcast ? 'rx_filtered_broadcast' : null;
    if (this.nomulti) return 'rx_filtered_multicast';
    if (this.allmulti) return null;
    return this.multicast.has(k) ? null : 'rx_filtered_multicast';
  }
}
