// What a NetDevice is made with (its constructor), and what a restored one
// is handed besides its snapshot (NetDevice.restore).
import type { Tap } from '../tap/tap.js';
import type { Tracer } from '../trace/trace.js';
import type { InterruptKind } from '../virtio/device.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import type { NetFeatureSwitches } from './features.js';
import type { PcapWriter } from './pcap.js';
import type { RateLimit } from './rate-limiter.js';

export interface NetDeviceOptions {
  /** Opened with vnetHdr (12-byte header) and one queue per pair. */
  tap: Tap;
  /** The guest's MAC (config space); default a random local one. */
  mac?: string | Uint8Array;
  /** MTU offered in config space; default the TAP's. */
  mtu?: number;
  /** Feature switches over the defaults (everything on). */
  features?: NetFeatureSwitches;
  rateLimit?: { tx?: RateLimit; rx?: RateLimit };
  /**
   * Raised for used buffers (with the virtqueue index) and config changes.
   * Optional when a transport attaches itself later (setInterruptSink).
   */
  interrupt?: (kind: InterruptKind, queue: number) => void;
  /** Frames per native call. */
  batch?: number;
  /**
   * Transmit timer in milliseconds (0, the default: off). After a kick's
   * frames are sent, kicks stay off and the ring is looked at again this
   * much later, until a look finds nothing: a burst costs one wakeup per
   * period instead of one per kick, at up to this much added delay for the
   * frames after the first. Whole milliseconds (the event loop's timers).
   */
  txTimerMs?: number;
  /**
   * The control queue is served elsewhere (a vhost-user front-end such as
   * QEMU runs it and tells the device what follows, e.g. which pairs are in
   * use): no control queue here, and MQ offered without CTRL_VQ.
   */
  controlElsewhere?: boolean;
  /**
   * The control queue is the device's when the driver acks CTRL_VQ and
   * elsewhere when it does not: CTRL_VQ and the features that need it are
   * offered, and a driver without CTRL_VQ may still have MQ and
   * GUEST_ANNOUNCE (a vhost-user front-end such as QEMU runs the control
   * queue and never passes CTRL_VQ on; a whole-device one such as UML's
   * virtio_uml acks it). Overrides controlElsewhere.
   */
  controlIfNegotiated?: boolean;
  /**
   * The link follows the host side of the TAP (IFF_UP), read every this
   * many milliseconds (true: every 250); off by default. setLinkUp() has its
   * say as well: the link is up when both say so.
   */
  followTapLink?: boolean | number;
  /**
   * Queue pairs to serve in worker threads of their own (indices from 0).
   * The driver's guest memory must be SharedArrayBuffer-backed. While tracing
   * or capturing, every pair is served on this thread, so every frame is seen.
   */
  workers?: number[];
  /** Trace every step (see Tracer); off when absent. setTracer() changes it. */
  trace?: Tracer;
  /** Write every frame crossing the device to this capture; setCapture() changes it. */
  capture?: PcapWriter;
}

/** Who runs the control queue: the device, a transport's front-end (controlElsewhere), or as negotiated (controlIfNegotiated). */
export type ControlMode = 'device' | 'elsewhere' | 'ifNegotiated';

/** What NetDevice.restore() is handed besides the snapshot: the host side, which a snapshot does not carry. */
export interface NetRestoreOptions {
  /**
   * The TAP to go on with, perhaps another one (another name, a clone's):
   * as many queues as the snapshot's pairs, opened with vnetHdr.
   */
  tap: Tap;
  /** The guest's memory, as it was when the snapshot was taken: the rings and buffers are there. */
  memory: GuestMemory;
  /** Raised for used buffers and config changes (see NetDeviceOptions.interrupt). */
  interrupt?: (kind: InterruptKind, queue: number) => void;
  /** Host-side options, as for a new device; never in a snapshot. */
  followTapLink?: boolean | number;
  trace?: Tracer;
  capture?: PcapWriter;
  /**
   * Restore the state but serve nothing and announce nothing until
   * resume(): for a transport to be restored around the device first.
   */
  paused?: boolean;
  /**
   * Announce the guest once the device runs (default true): with
   * GUEST_ANNOUNCE negotiated and the control queue the device's, the
   * announce bit and a config interrupt (§5.1.6.5.4); otherwise a gratuitous
   * ARP for the guest's MAC on the TAP.
   */
  announce?: boolean;
  /** The guest's IPv4 address, for the gratuitous ARP (default 0.0.0.0). */
  guestIpv4?: string;
}
