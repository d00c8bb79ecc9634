// What the vhost-user back-end needs of the device it serves. The back-end is
// handed its device, as libvhost-user is handed its device interface: it
// speaks the protocol and owns the rings' fds and the guest's memory, and the
// device serves the queues. A NetDevice satisfies this as it is.
import type { InterruptKind } from '../../virtio/device.js';
import type { GuestMemory } from '../../virtio/guest-memory.js';
import type { DeviceQueue, QueueAddresses } from '../../virtio/queue.js';

export interface VhostUserDevice {
  /** Feature bits offered to the front-end (GET_FEATURES). */
  readonly deviceFeatures: bigint;
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
  setDriverFeatures(features: bigint): void;
  /** A status write; 0 resets the device. */
  setStatus(value: number): void;
  /** Makes queue i ready over the guest's memory; throws QueueConfigError for a bad layout. */
  activateQueue(i: number, mem: GuestMemory, addresses: QueueAddresses): DeviceQueue;
  /** A driver notification for queue i (a kick eventfd fired). */
  kick(i: number): void;
  /** Serves pair i once its rings are activated (a pair the front-end enabled late). */
  servePair(i: number): void;
  /** How many pairs are in use (the front-end's enabled rings say). */
  useQueuePairs(n: number): unknown;
  /** Where interrupts go: the back-end routes 'vring' ones to the rings' call eventfds. */
  setInterruptSink(fn: (kind: InterruptKind, queue: number) => void): void;
  /** Stops serving for good. */
  close(): void;
  /** Tier-3 host failures (a HostError), passed on by the back-end. */
  on(event: 'error', listener: (e: Error) => void): unknown;
}
