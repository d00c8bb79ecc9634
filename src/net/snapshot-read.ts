// Reading a NetDevice snapshot (docs/snapshot.md) from parsed JSON: every
// field checked for its type and range, and against the others (the offer,
// the queue count, the config space, a held frame's size), before anything
// is made from it. A refusal is a SnapshotError naming the field.
import type { Tap } from '../tap/tap.js';
import { parseMac } from '../util/addr.js';
import { hasFeature } from '../virtio/constants.js';
import { readCoreSnapshot } from '../virtio/queue-snapshot.js';
import { checkHeader, parsedSnapshot, readInts, SnapshotError, SnapshotFields } from '../virtio/snapshot-fields.js';
import { NET_HDR_SIZE, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MRG_RXBUF } from './constants.js';
import { GUEST_OFFLOADS, offeredFeatures, rxFrameRoom } from './features.js';
import type { FilterState } from './filter.js';
import { COUNTERS, DROP_REASONS, type CounterName, type DropReason } from './metrics.js';
import type { BucketConfig, LimiterLevels, RateLimit } from './rate-limiter.js';
import type { ControlMode } from './device-options.js';
import { NET_SNAPSHOT_FORMAT, NET_SNAPSHOT_VERSION, switchesFor, type NetSnapshot, type PairSnapshot } from './snapshot.js';

/** Most entries a MAC table holds (what the control queue takes). */
const MAX_MAC_TABLE = 4096;
const MAX_COUNT = Number.MAX_SAFE_INTEGER;

/** Reads and checks a snapshot (parsed, or JSON text); throws SnapshotError naming the first field at fault. */
export function readNetSnapshot(input: unknown): NetSnapshot {
  const f = SnapshotFields.of(parsedSnapshot(input), '');
  checkHeader(f, NET_SNAPSHOT_FORMAT, NET_SNAPSHOT_VERSION);
  const device = readDevice(f.obj('device'));
  const offered = BigInt(device.offeredFeatures);
  const core = readCoreSnapshot(f.obj('core'), 2 * device.pairs + (hasFeature(offered, VIRTIO_NET_F_CTRL_VQ) ? 1 : 0));
  const negotiated = offered & BigInt(core.driverFeatures);
  const config = f.bytes('config', 24);
  if (config.length !== 24) f.refuse('config', `${config.length} bytes, not 24`);
  const dv = new DataView(config.buffer, config.byteOffset, 24);
  if (dv.getUint16(8, true) !== device.pairs) f.refuse('config', `max_virtqueue_pairs ${dv.getUint16(8, true)} is not device.pairs (${device.pairs})`);
  if (dv.getUint16(10, true) !== device.mtu) f.refuse('config', `mtu ${dv.getUint16(10, true)} is not device.mtu (${device.mtu})`);
  const guestOffloads = f.mask('guestOffloads');
  if ((guestOffloads & ~(negotiated & GUEST_OFFLOADS)) !== 0n) f.refuse('guestOffloads', 'has offloads the driver did not negotiate');
  const pairs = f.list('pairs', device.pairs, device.pairs).map((p, i) => readPair(SnapshotFields.of(p, f.at('pairs') + `[${i}]`), device, negotiated));
  return {
    format: NET_SNAPSHOT_FORMAT,
    version: NET_SNAPSHOT_VERSION,
    device,
    core,
    config: f.string('config'),
    activePairs: f.int('activePairs', 1, device.pairs),
    guestOffloads: f.string('guestOffloads'),
    filter: readFilter(f.obj('filter')),
    link: { adminUp: f.obj('link').bool('adminUp') },
    pairs,
    metrics: readMetrics(f.obj('metrics')),
  };
}

/** Refuses a TAP the snapshot's device cannot be restored on: closed, another number of queues, no vnet header. */
export function checkRestoreTap(s: NetSnapshot, tap: Tap): void {
  const why = tap.closed
    ? `the TAP ${tap.name} is closed`
    : tap.queues.length !== s.device.pairs
      ? `${s.device.pairs} queue pairs, but the TAP ${tap.name} has ${tap.queues.length} queues`
      : tap.vnetHdrSize !== NET_HDR_SIZE
        ? `the TAP ${tap.name} has a ${tap.vnetHdrSize}-byte vnet header, not ${NET_HDR_SIZE}`
        : null;
  if (why !== null) throw new SnapshotError('ERR_SNAPSHOT_MISMATCH', why, 'device.pairs');
}

function readDevice(f: SnapshotFields): NetSnapshot['device'] {
  const pairs = f.int('pairs', 1, 0x8000);
  const offered = f.mask('offeredFeatures');
  const control = f.string('control', ['device', 'elsewhere', 'ifNegotiated']) as ControlMode;
  if (offeredFeatures(switchesFor(offered), pairs, control === 'elsewhere') !== offered) {
    f.refuse('offeredFeatures', `not an offer a device with ${pairs} pairs and control "${control}" makes`);
  }
  const defaultMac = f.string('defaultMac');
  try {
    parseMac(defaultMac);
  } catch (e) {
    f.refuse('defaultMac', (e as Error).message);
  }
  const limits = f.obj('rateLimit');
  return {
    pairs,
    offeredFeatures: f.string('offeredFeatures'),
    control,
    defaultMac,
    mtu: f.int('mtu', 68, 65535),
    batch: f.int('batch', 1, 4096),
    txTimerMs: f.int('txTimerMs', 0, 1000),
    rateLimit: { tx: limits.nullable('tx', (k) => readRateLimit(limits.obj(k))), rx: limits.nullable('rx', (k) => readRateLimit(limits.obj(k))) },
  };
}

function readRateLimit(f: SnapshotFields): RateLimit {
  const bucket = (b: SnapshotFields): BucketConfig => ({ size: b.number('size', Number.MIN_VALUE, 1e15), refillMs: b.number('refillMs', Number.MIN_VALUE, 1e9) });
  const r: RateLimit = {};
  if (f.has('bytes')) r.bytes = bucket(f.obj('bytes'));
  if (f.has('ops')) r.ops = bucket(f.obj('ops'));
  return r;
}

function readPair(f: SnapshotFields, device: NetSnapshot['device'], negotiated: bigint): PairSnapshot {
  const room = rxFrameRoom(negotiated, device.mtu);
  const held = f.nullable('heldFrame', (k) => f.bytes(k, room));
  if (held !== null && (held.length === 0 || !hasFeature(negotiated, VIRTIO_NET_F_MRG_RXBUF))) f.refuse('heldFrame', 'a held frame is carried only with MRG_RXBUF, and is not empty');
  return {
    heldFrame: held === null ? null : f.string('heldFrame'),
    rx: f.nullable('rx', (k) => readLevels(f.obj(k), device.rateLimit.rx)),
    tx: f.nullable('tx', (k) => readLevels(f.obj(k), device.rateLimit.tx)),
  };
}

// A bucket's level: below its size, in debt by less than the bucket's size plus the largest frame.
function readLevels(f: SnapshotFields, limit: RateLimit | null): LimiterLevels {
  const level = (key: 'bytes' | 'ops'): number | null =>
    f.nullable(key, (k) => {
      const b = limit?.[key];
      if (b === undefined) return f.refuse(k, `a level for a ${key} bucket the device does not have`);
      return f.number(k, -(b.size + 65536), b.size);
    });
  return { bytes: level('bytes'), ops: level('ops') };
}

function readFilter(f: SnapshotFields): FilterState {
  const table = (key: string): number[][] => f.list(key, 0, MAX_MAC_TABLE).map((m, i) => readInts(m, `${f.at(key)}[${i}]`, 0, 255, 6, 6));
  return {
    promisc: f.bool('promisc'),
    allmulti: f.bool('allmulti'),
    alluni: f.bool('alluni'),
    nomulti: f.bool('nomulti'),
    nouni: f.bool('nouni'),
    nobcast: f.bool('nobcast'),
    vlanFiltering: f.bool('vlanFiltering'),
    mac: f.ints('mac', 0, 255, 6, 6),
    unicast: table('unicast'),
    multicast: table('multicast'),
    vlans: f.ints('vlans', 0, 4095, 0, 4096),
  };
}

function readMetrics(f: SnapshotFields): NetSnapshot['metrics'] {
  const c = f.obj('counters');
  const d = f.obj('drops');
  const counters = {} as Record<CounterName, number>;
  for (const n of COUNTERS) counters[n] = c.number(n, 0, MAX_COUNT);
  const drops = {} as Record<DropReason, number>;
  for (const r of DROP_REASONS) drops[r] = d.number(r, 0, MAX_COUNT);
  return { counters, drops };
}
