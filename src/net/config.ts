// The network device's configuration space (VIRTIO 1.2 §5.1.4), laid out as
// the driver reads it: little-endian, read-only to the driver.
import { VIRTIO_NET_S_LINK_UP } from './constants.js';

export const NET_CONFIG_SIZE = 24;

export class NetConfig {
  readonly bytes = new Uint8Array(NET_CONFIG_SIZE);
  private readonly dv = new DataView(this.bytes.buffer);

  constructor(mac: Uint8Array, maxPairs: number, mtu: number) {
    this.mac = mac;
    this.status = VIRTIO_NET_S_LINK_UP;
    this.dv.setUint16(8, maxPairs, true);
    this.dv.setUint16(10, mtu, true);
    this.dv.setUint32(12, 0xffffffff, true); // speed: unknown
    this.dv.setUint8(16, 0xff); // duplex: unknown
  }

  get mac(): Uint8Array {
    return this.bytes.slice(0, 6);
  }

  set mac(mac: Uint8Array) {
    this.bytes.set(mac.subarray(0, 6), 0);
  }

  get status(): number {
    return this.dv.getUint16(6, true);
  }

  set status(v: number) {
    this.dv.setUint16(6, v, true);
  }

  get maxPairs(): number {
    return this.dv.getUint16(8, true);
  }

  get mtu(): number {
    return this.dv.getUint16(10, true);
  }

  /** A driver read of 1, 2 or 4 bytes at `offset`; out of range reads 0. */
  read(offset: number, size: number): number {
    if (!Number.isInteger(offset) || offset < 0 || offset + size > NET_CONFIG_SIZE) return 0;
    if (size === 1) return this.dv.getUint8(offset);
    if (size === 2) return this.dv.getUint16(offset, true);
    if (size === 4) return this.dv.getUint32(offset, true);
    return 0;
  }
}
