// What one front-end set up: the features it acked, its protocol features,
// its memory table and its rings, over the device the back-end was handed.
// A session ends with its connection, or starts over on RESET_OWNER.
import { hasFeature } from '../../virtio/constants.js';
import type { VhostUserDevice } from './device.js';
import { MemoryTable } from './memory.js';
import { ProtocolFeature } from './protocol.js';
import { Rings } from './rings.js';

export class Session {
  readonly memory = new MemoryTable();
  readonly rings: Rings;
  /** Virtio features acked with SET_FEATURES (VHOST_USER_F_PROTOCOL_FEATURES aside). */
  acked = 0n;
  /** VHOST_USER_F_PROTOCOL_FEATURES was acked: rings then start disabled. */
  protocolAcked = false;
  /** Protocol features set with SET_PROTOCOL_FEATURES (those offered only). */
  protocolFeatures = 0n;

  constructor(
    readonly device: VhostUserDevice,
    readonly log: (line: string) => void,
  ) {
    this.rings = new Rings(device, this.memory, log);
  }

  /** REPLY_ACK was agreed: requests that ask get a yes or a no. */
  get replyAck(): boolean {
    return hasFeature(this.protocolFeatures, ProtocolFeature.REPLY_ACK);
  }

  /** Starts whatever rings are ready now. */
  maybeStart(): void {
    this.rings.maybeStart(this.acked);
  }

  /** Stops the device and forgets the rings and what was negotiated (RESET_OWNER). The memory table stays. */
  reset(): void {
    this.rings.stop();
    this.rings.reset();
    this.acked = 0n;
    this.protocolAcked = false;
    this.protocolFeatures = 0n;
  }

  /** The front-end went: reset, and unmap its memory. */
  end(): void {
    this.reset();
    this.memory.unmapAll();
  }
}
