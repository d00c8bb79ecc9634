// The network device's configuration space (VIRTIO 1.2 §5.1.4), laid out as
// the driver reads it: little-endian, read-only to the driver.
//
// Read-only, because this device speaks VERSION_1 only: §5.1.4 gives a
// VERSION_1 driver no field to write, and only the legacy interface let a
// driver write mac (§5.1.4.3). Linux's virtio_net writes mac through config
// only then (no VERSION_1, MAC without CTRL_MAC_ADDR); a VERSION_1 driver
// sets its MAC with VIRTIO_NET_CTRL_MAC_ADDR_SET on the control queue.
import { VIRTIO_NET_S_LINK_UP } from './constants.js';

export const NET_CONFIG_SIZE = 24;

/** The fields of struct virtio_net_config (§5.1.4) by their first byte. */
const FIELDS: [number, string][] = [
  [0, 'mac'],
  [6, 'status'],
  [8, 'max_virtqueue_pairs'],
  [10, 'mtu'],
  [12, 'speed'],
  [16, 'duplex'],
  [17, 'rss_max_key_size'],
  [18, 'rss_max_indirection_table_length'],
  [20, 'supported_hash_types'],
];

/** The field a byte offset falls in, or null past the last one. */
export function configFieldAt(offset: number): string | null {
  if (!Number.isInteger(offset) || offset < 0 || offset >= NET_CONFIG_SIZE) return null;
  let name = 'mac';
  for (const [at, n] of FIELDS) if (offset >= at) name = n;
  return name;
}

/** Why a driver write of `length` bytes at `offset` is refused: every one is (see the top of this file). */
export function configWriteRefusal(offset: number, length: number): string {
  const field = configFieldAt(offset);
  const what = field === null ? `bytes past the config space (${NET_CONFIG_SIZE} bytes)` : `${field} (${length} bytes at ${offset})`;
  return `${what}: the network device's config space is read-only to a VERSION_1 driver (VIRTIO 1.2 §5.1.4)`;
}

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
