// What one front-end set up: the features it acked, its protocol features,
// its memory table, its rings, the back-end channel and the status it wrote,
// over the device the back-end was handed. A session ends with its
// connection, or starts over on RESET_OWNER.
import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  hasFeature,
} from '../../virtio/constants.js';
import type { InterruptKind } from '../../virtio/device.js';
import { BackendChannel } from './backend-channel.js';
import type { VhostUserDevice } from './device.js';
import { MemoryTable } from './memory.js';
import { ProtocolFeature } from './protocol.js';
import { freshStats, Rings, type FaultSink, type VhostUserStats } from './rings.js';

export class Session {
  readonly memory: MemoryTable;
  readonly rings: Rings;
  readonly stats: VhostUserStats = freshStats();
  readonly channel: BackendChannel;
  /** Virtio features acked with SET_FEATURES (VHOST_USER_F_PROTOCOL_FEATURES aside). */
  acked = 0n;
  /** VHOST_USER_F_PROTOCOL_FEATURES was acked: rings then start disabled. */
  protocolAcked = false;
  /** Protocol features set with SET_PROTOCOL_FEATURES (those offered only). */
  protocolFeatures = 0n;
  /** The status the front-end last wrote with SET_STATUS (STATUS agreed). */
  private written = 0;

  constructor(
    readonly device: VhostUserDevice,
    readonly log: (line: string) => void,
    onFault: FaultSink = () => {},
  ) {
    this.memory = new MemoryTable(log);
    this.rings = new Rings(device, this.memory, log, this.stats, onFault);
    this.channel = new BackendChannel(log);
  }

  /** REPLY_ACK was agreed: requests that ask get a yes or a no. */
  get replyAck(): boolean {
    return this.has(ProtocolFeature.REPLY_ACK);
  }

  has(protocolFeature: number): boolean {
    return hasFeature(this.protocolFeatures, protocolFeature);
  }

  /** The device's interrupts: used buffers to the rings' call fds, config changes to the back-end channel. */
  interrupt(kind: InterruptKind, queue: number): void {
    if (kind === 'vring') {
      this.rings.interrupt(kind, queue);
      return;
    }
    // A config interrupt with DEVICE_NEEDS_RESET set: the device found a ring broken (tier 2).
    if ((this.device.status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0) this.rings.reportBroken();
    if (this.has(ProtocolFeature.CONFIG)) this.channel.configChanged(this.replyAck);
  }

  /**
   * Starts whatever rings are ready now. With STATUS agreed the device
   * starts only once the front-end has written DRIVER_OK; without it, once
   * the first pair's rings are ready (vhost-user.rst "Starting and stopping rings").
   */
  maybeStart(): void {
    const driverOk = !this.has(ProtocolFeature.STATUS) || (this.written & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    this.rings.maybeStart(this.acked, driverOk);
  }

  /**
   * SET_STATUS: 0 stops the rings and resets the device; otherwise the bits
   * go to the device's status machine, FEATURES_OK with the acked features
   * (the device leaves it clear when it refuses them), and DRIVER_OK starts
   * the device once its rings are ready.
   */
  setStatus(value: number): void {
    const dev = this.device;
    const before = this.written;
    this.written = value;
    if (value === 0) {
      this.rings.stop();
      if (dev.status !== 0) dev.setStatus(0);
      return;
    }
    if (!dev.running) {
      if ((value & VIRTIO_CONFIG_S_FEATURES_OK) !== 0 && (dev.status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) dev.setDriverFeatures(this.acked);
      const bits = value & ~VIRTIO_CONFIG_S_DRIVER_OK;
      if (bits !== 0) dev.setStatus(bits);
    }
    if ((value & VIRTIO_CONFIG_S_DRIVER_OK) === 0) return;
    try {
      this.maybeStart();
    } catch (err) {
      this.written = before; // the rings did not start: DRIVER_OK did not take
      throw err;
    }
  }

  /** GET_STATUS: the device's status as it is. */
  get status(): number {
    return this.device.status;
  }

  /** Stops the device and forgets the rings and what was negotiated (RESET_OWNER). The memory table stays. */
  reset(): void {
    this.rings.stop();
    this.rings.reset();
    this.channel.close();
    this.acked = 0n;
    this.protocolAcked = false;
    this.protocolFeatures = 0n;
    this.written = 0;
  }

  /** The front-end went: reset, and unmap its memory. */
  end(): void {
    this.reset();
    this.memory.unmapAll();
  }
}
