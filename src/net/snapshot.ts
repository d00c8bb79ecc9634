// A NetDevice's snapshot (docs/snapshot.md): the versioned JSON object
// NetDevice.snapshot() returns and NetDevice.restore() reads, what it
// carries, and the rules for what is in flight when it is taken.
//
// In flight: receive chains popped ahead (pending) are given back to the
// ring (un-popped) as the snapshot is taken, so the ring positions say they
// are still available and the restored device pops them again; the device
// goes on serving and pops them again itself. A frame held for want of
// buffers (MRG_RXBUF) is carried, its bytes as base64, and the restored
// device delivers it first. Transmit chains not yet completed are still in
// the ring past nextAvail (a rewind on EAGAIN, a throttle, the transmit
// timer): the restored device looks at every transmit ring once it runs.
import type { Tap } from '../tap/tap.js';
import { formatMac } from '../util/addr.js';
import { buildArp } from '../util/packet.js';
import type { CoreSnapshot } from '../virtio/queue-snapshot.js';
import { bytesText, maskText } from '../virtio/snapshot-fields.js';
import { NET_HDR_SIZE } from './constants.js';
import type { ControlMode, NetDeviceOptions, NetRestoreOptions } from './device-options.js';
import { NET_FEATURES, type NetFeatureSwitches } from './features.js';
import type { FilterState } from './filter.js';
import type { CounterName, DropReason, NetMetrics } from './metrics.js';
import type { PairSettings, PairState } from './queue-pair.js';
import type { LimiterLevels, RateLimit } from './rate-limiter.js';

export const NET_SNAPSHOT_FORMAT = 'virtio-tap/net-device';
/** The version this build writes, and the newest it reads. */
export const NET_SNAPSHOT_VERSION = 1;

/**
 * A NetDevice's state, as plain JSON (JSON.stringify and JSON.parse carry it
 * unchanged). 64-bit masks are "0x" and hex; bytes are base64.
 */
export interface NetSnapshot {
  /** Always "virtio-tap/net-device". */
  format: typeof NET_SNAPSHOT_FORMAT;
  /** 1. A build reads the versions up to its own and refuses newer ones. */
  version: number;
  /** How the device was made; the restored device is made the same way. */
  device: {
    /** Queue pairs (TAP queues): the restore's TAP must have as many. */
    pairs: number;
    /** The feature bits the device offers. */
    offeredFeatures: string;
    /** Who runs the control queue. */
    control: ControlMode;
    /** The MAC the config space holds after a reset, "02:00:...". */
    defaultMac: string;
    /** The MTU offered, and the largest frame receive buffers are sized for. */
    mtu: number;
    /** Frames per native call. */
    batch: number;
    /** The transmit timer, ms (0: off). */
    txTimerMs: number;
    /** Token bucket sizes each way; null: no limit. */
    rateLimit: { tx: RateLimit | null; rx: RateLimit | null };
  };
  /** Features the driver wrote, status, and every virtqueue's state. */
  core: CoreSnapshot;
  /**
   * The config space (§5.1.4), 24 bytes, base64: mac, status (LINK_UP, and
   * ANNOUNCE while an announce waits for the driver's ack), max pairs, MTU,
   * speed, duplex.
   */
  config: string;
  /** Queue pairs in use (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET). */
  activePairs: number;
  /** Guest offloads in force (VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET), a mask of GUEST_* bits. */
  guestOffloads: string;
  /** RX modes, MAC tables (unicast, multicast), the MAC filtered for, VLAN filtering and its VLAN ids. */
  filter: FilterState;
  /** The embedder's say on the link (setLinkUp); the host side's say is the new TAP's. */
  link: { adminUp: boolean };
  /** Per queue pair: what it has in hand beyond its rings. */
  pairs: PairSnapshot[];
  /** Every NetMetrics counter by name, and the drops by reason. */
  metrics: { counters: Record<CounterName, number>; drops: Record<DropReason, number> };
}

export interface PairSnapshot {
  /** MRG_RXBUF: a frame read from the TAP and held for want of buffers, header first, base64; else null. */
  heldFrame: string | null;
  /** Bucket levels (tokens, below 0 in debt) each way; null when the queue was not served. */
  rx: LimiterLevels | null;
  tx: LimiterLevels | null;
}

/** What NetDevice hands netSnapshot(): the parts the format carries, pending chains already given back. */
export interface NetSnapshotSource {
  offered: bigint;
  control: ControlMode;
  defaultMac: Uint8Array;
  settings: PairSettings;
  core: CoreSnapshot;
  config: Uint8Array;
  activePairs: number;
  guestOffloads: bigint;
  filter: FilterState;
  adminUp: boolean;
  pairStates: PairState[];
  metrics: NetMetrics;
}

export function netSnapshot(src: NetSnapshotSource): NetSnapshot {
  const s = src.settings;
  return {
    format: NET_SNAPSHOT_FORMAT,
    version: NET_SNAPSHOT_VERSION,
    device: {
      pairs: src.pairStates.length,
      offeredFeatures: maskText(src.offered),
      control: src.control,
      defaultMac: formatMac(src.defaultMac),
      mtu: s.mtu,
      batch: s.batch,
      txTimerMs: s.txTimerMs,
      rateLimit: { tx: s.rateLimit.tx ?? null, rx: s.rateLimit.rx ?? null },
    },
    core: src.core,
    config: bytesText(src.config),
    activePairs: src.activePairs,
    guestOffloads: maskText(src.guestOffloads),
    filter: src.filter,
    link: { adminUp: src.adminUp },
    pairs: src.pairStates.map((p) => ({ heldFrame: p.heldFrame === null ? null : bytesText(p.heldFrame), rx: p.rx, tx: p.tx })),
    metrics: src.metrics.counters(),
  };
}

/** The switches that make a device offer exactly `offered` (NET_FEATURES names, each on or off). */
export function switchesFor(offered: bigint): NetFeatureSwitches {
  const s: NetFeatureSwitches = {};
  for (const [name, b] of Object.entries(NET_FEATURES) as [keyof typeof NET_FEATURES, number][]) s[name] = ((offered >> BigInt(b)) & 1n) === 1n;
  return s;
}

/** NetDevice options for a device made as the snapshot's was, on the restore's TAP and with its sinks. */
export function restoredOptions(s: NetSnapshot, o: NetRestoreOptions): NetDeviceOptions {
  const d = s.device;
  const { tap, interrupt, followTapLink, trace, capture } = o;
  const host = { tap, interrupt, followTapLink, trace, capture };
  const rateLimit: NetDeviceOptions['rateLimit'] = {};
  if (d.rateLimit.tx !== null) rateLimit.tx = d.rateLimit.tx;
  if (d.rateLimit.rx !== null) rateLimit.rx = d.rateLimit.rx;
  return {
    ...host,
    mac: d.defaultMac,
    mtu: d.mtu,
    features: switchesFor(BigInt(d.offeredFeatures)),
    rateLimit,
    batch: d.batch,
    txTimerMs: d.txTimerMs,
    controlElsewhere: d.control === 'elsewhere',
    controlIfNegotiated: d.control === 'ifNegotiated',
  };
}

/** A pair's state from its snapshot, the held frame decoded. */
export function pairState(p: PairSnapshot): PairState {
  return { heldFrame: p.heldFrame === null ? null : Uint8Array.from(Buffer.from(p.heldFrame, 'base64')), rx: p.rx, tx: p.tx };
}

/**
 * A gratuitous ARP for `mac` on the TAP (queue 0): a broadcast ARP request
 * whose sender and target address are both `ipv4` (0.0.0.0 when the guest's
 * address is not known: an ARP probe, RFC 5227). Switches and bridges learn
 * where the MAC is from its source address. Returns the write's bytes or -errno.
 */
export function sendGratuitousArp(tap: Tap, mac: Uint8Array, ipv4: number): number {
  const arp = buildArp({ op: 1, senderMac: mac, senderIp: ipv4, targetMac: new Uint8Array(6), targetIp: ipv4 });
  const frame = new Uint8Array(NET_HDR_SIZE + arp.length); // a zero virtio_net_hdr: no offload
  frame.set(arp, NET_HDR_SIZE);
  return tap.queue.write(frame);
}
