// The back-end request channel (vhost-user.rst "Back-end communication",
// protocol feature BACKEND_REQ, the fd from SET_BACKEND_REQ_FD): the
// back-end's own requests to the front-end. The device uses it for one:
// BACKEND_CONFIG_CHANGE_MSG, its config interrupt, when CONFIG was agreed.
//
// Sends never block the device: a notification is written only once the
// socket polls writable (the fd is the front-end's and may be blocking), and
// notifications not yet written merge into one, since a front-end reads the
// whole config space again on any of them. Replies (REPLY_ACK) are read one
// recvmsg per readiness. A channel that fails or closes is dropped with a log
// line; the data path goes on without config notifications.
import { native, type NativePoller } from '../../host/binding.js';
import { errnoName, NEG_EAGAIN } from '../../host/errors.js';
import {
  BackendReq,
  encode,
  MessageReader,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserError,
} from './protocol.js';

const READABLE = 1;
const WRITABLE = 2;

export interface BackendChannelStats {
  /** BACKEND_CONFIG_CHANGE_MSG written. */
  configChanges: number;
  /** Config changes merged into one not yet written. */
  merged: number;
  /** Replies that said yes, and replies that said no. */
  acked: number;
  refused: number;
  /** Changes dropped: no channel, or it failed. */
  dropped: number;
}

export class BackendChannel {
  readonly stats: BackendChannelStats = { configChanges: 0, merged: 0, acked: 0, refused: 0, dropped: 0 };
  private readonly n = native();
  private fd = -1;
  private poller: NativePoller | null = null;
  private reader = new MessageReader();
  private readonly buf = new Uint8Array(512);
  private readonly fdBuf = new Int32Array(1 + 8);
  private pending = false;
  private pendingAck = false;

  constructor(private readonly log: (line: string) => void) {}

  /** Whether a channel is open. */
  get open(): boolean {
    return this.fd >= 0;
  }

  /** Takes the fd SET_BACKEND_REQ_FD brought (closing any channel before it). */
  set(fd: number): void {
    this.close();
    this.fd = fd;
    this.reader = new MessageReader();
    this.poller = new this.n.Poller(fd, (status, events) => this.onReady(status, events));
    this.watch();
  }

  /** A config change: BACKEND_CONFIG_CHANGE_MSG, asking for a reply when REPLY_ACK was agreed. */
  configChanged(replyAck: boolean): void {
    if (this.fd < 0) {
      this.stats.dropped++;
      return;
    }
    if (this.pending) this.stats.merged++;
    this.pending = true;
    this.pendingAck = replyAck;
    this.watch();
  }

  /** Closes the channel (the front-end went, or sent a new one). */
  close(): void {
    this.poller?.close();
    this.poller = null;
    if (this.fd >= 0) this.n.close(this.fd);
    for (const fd of this.reader.takeFds()) this.n.close(fd);
    this.fd = -1;
    if (this.pending) this.stats.dropped++;
    this.pending = false;
  }

  private watch(): void {
    this.poller?.start(READABLE | (this.pending ? WRITABLE : 0));
  }

  private onReady(status: number, events: number): void {
    if (this.fd < 0) return;
    if (status < 0) {
      this.fail(`polling failed (${status})`);
      return;
    }
    if ((events & WRITABLE) !== 0 && this.pending) this.send();
    if (this.fd >= 0 && (events & READABLE) !== 0) this.receive();
    if (this.fd >= 0) this.watch();
  }

  private send(): void {
    const flags = VHOST_USER_VERSION | (this.pendingAck ? VHOST_USER_NEED_REPLY_MASK : 0);
    const rc = this.n.sendWithFds(this.fd, encode(BackendReq.CONFIG_CHANGE_MSG, flags));
    if (rc === NEG_EAGAIN) return; // still pending: the next writable poll sends it
    this.pending = false;
    if (rc < 0) {
      this.stats.dropped++;
      this.fail(`sendmsg: ${errnoName(rc)}`);
      return;
    }
    this.stats.configChanges++;
  }

  // One recvmsg per readiness: the fd may be blocking.
  private receive(): void {
    const got = this.n.recvWithFds(this.fd, this.buf, this.fdBuf);
    if (got === NEG_EAGAIN) return;
    if (got <= 0) {
      this.fail(got === 0 ? 'closed by the front-end' : `recvmsg: ${errnoName(got)}`);
      return;
    }
    const count = Math.max(0, this.fdBuf[0]!);
    for (let i = 0; i < count; i++) this.n.close(this.fdBuf[1 + i]!); // no reply carries fds
    this.reader.push(this.buf.subarray(0, got), []);
    try {
      for (let m = this.reader.next(); m !== null; m = this.reader.next()) this.onReply(m.request, m.flags, m.payload);
    } catch (err) {
      if (!(err instanceof VhostUserError)) throw err;
      this.fail(err.message);
    }
  }

  private onReply(request: number, flags: number, payload: Uint8Array): void {
    if ((flags & VHOST_USER_REPLY_MASK) === 0 || request !== BackendReq.CONFIG_CHANGE_MSG || payload.length < 8) {
      this.log(`back-end channel: ignored a message (request ${request}, ${payload.length} bytes) that is no reply to a config change`);
      return;
    }
    const status = new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true);
    if (status === 0n) this.stats.acked++;
    else {
      this.stats.refused++;
      this.log(`back-end channel: the front-end answered a config change with ${status}`);
    }
  }

  private fail(why: string): void {
    this.log(`back-end channel dropped: ${why}; config changes are no longer notified`);
    this.close();
  }
}
