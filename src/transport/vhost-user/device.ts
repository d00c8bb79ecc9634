// What the vhost-user back-end needs of the device it serves. The back-end is
// handed its device, as libvhost-user is handed its device interface: it
// speaks the protocol and owns the rings' fds and the guest's memory, and the
// device serves the queues, runs its status machine and owns its config
// space. A NetDevice satisfies this as it is.
import type { InterruptKind } from '../../virtio/device.js';
import type { GuestMemory } from '../../virtio/guest-memory.js';
import type { DeviceQueue, QueueAddresses } from '../../virtio/queue.js';

export interface VhostUserDevice {
  /** Feature bits offered to the front-end (GET_FEATURES). */
  readonly deviceFeatures: bigint;
  /** Feature bits the driver wrote last (the device takes them until FEATURES_OK). */
  readonly driverFeatures: bigint;
  /** The virtio status byte (VIRTIO 1.2 §2.1); 0 after a reset. */
  readonly status: number;
  /** DRIVER_OK is set and the device does not need a reset. */
  readonly running: boolean;
  /** The activated queues, by virtqueue index (null while not activated). */
  readonly queues: readonly (DeviceQueue | null)[];
  /** Queue pairs the device has: receiveq and transmitq 2i, 2i + 1 (VIRTIO 1.2 §5.1.2). */
  readonly pairs: number;
  /** Queue pairs in use. */
  readonly activePairs: number;
  /**
   * The virtqueue index of the control queue the device runs under the
   * features negotiated, or -1: none negotiated, or the front-end runs it.
   */
  readonly controlQueueIndex: number;
  /** The device-specific configuration space as the driver reads it (GET_CONFIG). */
  readonly configSpace: Uint8Array;
  /** A driver write to the config space: null when taken, else why it was refused (the device counts it). */
  writeConfig(offset: number, data: Uint8Array): string | null;
  setDriverFeatures(features: bigint): void;
  /** A status write; 0 resets the device. FEATURES_OK stays clear when the device refuses the features. */
  setStatus(value: number): void;
  /** Makes queue i ready over the guest's memory; throws QueueConfigError for a bad layout. */
  activateQueue(i: number, mem: GuestMemory, addresses: QueueAddresses): DeviceQueue;
  /** A driver notification for queue i (a kick eventfd fired). */
  kick(i: number): void;
  /** Serves pair i once its rings are activated (a pair the front-end enabled late). */
  servePair(i: number): void;
  /** Serves the control queue once its ring is activated (a front-end that enables it after the data rings). */
  serveControl(): void;
  /** How many pairs are in use (the front-end's enabled rings say, when it runs the control queue). */
  useQueuePairs(n: number): unknown;
  /** Where interrupts go: 'vring' ones to the rings' call eventfds, 'config' ones to the back-end channel. */
  setInterruptSink(fn: (kind: InterruptKind, queue: number) => void): void;
  /** Stops serving for good. */
  close(): void;
  /** Tier-3 host failures (a HostError), passed on by the back-end. */
  on(event: 'error', listener: (e: Error) => void): unknown;
}
