// The vhost-user socket (vhost-user.rst "Communication"): listening for the
// front-end or connecting to one that listens, one front-end at a time;
// reading framed messages with their fds; replies, and REPLY_ACK's yes or no
// for requests that asked; and the end of a connection, which closes every
// fd it brought.
import { rmSync } from 'node:fs';

import { native, type NativePoller } from '../../host/binding.js';
import { HostError } from '../../host/errors.js';
import { QueueConfigError } from '../../virtio/queue.js';
import {
  encode,
  ExactReader,
  reqName,
  u64Payload,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserError,
  type Message,
} from './protocol.js';

/** What the connection asks of the back-end behind it. */
export interface ConnectionHooks {
  /** The reply payload to a request, or null; throws VhostUserError or QueueConfigError to refuse it. */
  answer(m: Message): Uint8Array | null;
  /** The front-end and the back-end agreed on REPLY_ACK (asked again after every request). */
  replyAck(): boolean;
  connected(): void;
  /** The connection ended (its socket is closed); the back-end lets go of what the front-end handed over. */
  disconnected(why: string): void;
}

export interface ConnectionOptions {
  socketPath: string;
  /** Connect to a front-end that listens (reconnecting when it goes) instead of listening. */
  client: boolean;
  /** A connected socket to serve instead (QEMU's backend program conventions, --fd); none after it goes. */
  fd?: number | undefined;
  log: (line: string) => void;
}

/** How long a client waits before trying a front-end that was not there again. */
const RECONNECT_MS = 500;

export class VhostUserConnection {
  private readonly n = native();
  private listenFd = -1;
  private listenPoller: NativePoller | null = null;
  private connFd = -1;
  private connPoller: NativePoller | null = null;
  private reader = new ExactReader();
  private reconnectTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly o: ConnectionOptions,
    private readonly hooks: ConnectionHooks,
  ) {}

  /** Starts listening (or connecting, as a client). Throws HostError when the socket cannot listen. */
  start(): void {
    if (this.o.fd !== undefined) {
      this.attach(this.o.fd);
      return;
    }
    if (this.o.client) {
      this.connect();
      return;
    }
    rmSync(this.o.socketPath, { force: true });
    const fd = this.n.unixListen(this.o.socketPath);
    if (fd < 0) throw HostError.fromErrno(fd, 'listen', `listening on ${this.o.socketPath}`);
    this.listenFd = fd;
    this.listenPoller = new this.n.Poller(fd, () => this.accept());
    this.listenPoller.start(1);
    this.o.log(`listening on ${this.o.socketPath}`);
  }

  /** Ends the connection, stops listening and removes the socket file. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.disconnect('closing');
    this.listenPoller?.close();
    this.listenPoller = null;
    if (this.listenFd >= 0) {
      this.n.close(this.listenFd);
      this.listenFd = -1;
      rmSync(this.o.socketPath, { force: true });
    }
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
  }

  private connect(): void {
    if (this.closed) return;
    const fd = this.n.unixConnect(this.o.socketPath);
    if (fd < 0) {
      // The front-end is not there (yet): try again shortly.
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        this.connect();
      }, RECONNECT_MS);
      return;
    }
    this.attach(fd);
  }

  private accept(): void {
    for (;;) {
      const fd = this.n.unixAccept(this.listenFd);
      if (fd < 0) return;
      if (this.connFd >= 0) {
        this.o.log('refusing a second front-end while one is connected');
        this.n.close(fd);
        continue;
      }
      this.attach(fd);
    }
  }

  private attach(fd: number): void {
    this.connFd = fd;
    this.reader = new ExactReader();
    this.connPoller = new this.n.Poller(fd, () => this.onReadable());
    this.connPoller.start(1);
    this.o.log('front-end connected');
    this.hooks.connected();
  }

  private onReadable(): void {
    if (this.connFd < 0) return;
    const fd = this.connFd;
    let outcome: string;
    try {
      outcome = this.reader.read(
        (into, fds) => this.n.recvWithFds(fd, into, fds),
        (m) => this.handle(m),
        () => this.connFd !== fd, // a message may end the connection
      );
    } catch (err) {
      if (!(err instanceof VhostUserError)) throw err;
      this.disconnect(err.message);
      return;
    }
    if (this.connFd !== fd) return;
    if (outcome === 'closed') this.disconnect('front-end closed the connection');
    else if (outcome !== 'again') this.disconnect(outcome);
  }

  // Answers one request. A refused request gets a no (REPLY_ACK) when it
  // asked for an ack; otherwise the connection ends, since the front-end
  // would go on believing it worked (unless the refusal says it leaves
  // nothing half done). A refused request's fds are closed.
  private handle(m: Message): void {
    let ack = 0n;
    try {
      const reply = this.hooks.answer(m);
      if (reply !== null) {
        this.reply(m, reply);
        for (const fd of m.fds) this.n.close(fd);
        return;
      }
    } catch (err) {
      if (!(err instanceof VhostUserError || err instanceof QueueConfigError)) throw err;
      this.o.log(`refused ${reqName(m.request)}: ${err.message}`);
      ack = 1n;
      for (const fd of m.fds) this.n.close(fd);
      const keep = err instanceof VhostUserError && err.keepConnection;
      if (!this.wantsAck(m) && !keep) {
        this.disconnect(`${reqName(m.request)}: ${err.message}`);
        return;
      }
    }
    if (this.wantsAck(m)) this.reply(m, u64Payload(ack));
  }

  private wantsAck(m: Message): boolean {
    return (m.flags & VHOST_USER_NEED_REPLY_MASK) !== 0 && this.hooks.replyAck();
  }

  private reply(m: Message, payload: Uint8Array): void {
    if (this.connFd < 0) return;
    const rc = this.n.sendWithFds(this.connFd, encode(m.request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, payload));
    if (rc < 0) this.disconnect(HostError.fromErrno(rc, 'sendmsg', 'reply').message);
  }

  private disconnect(why: string): void {
    if (this.connFd < 0) return;
    this.o.log(`front-end gone: ${why}`);
    for (const fd of this.reader.takeFds()) this.n.close(fd);
    this.connPoller?.close();
    this.connPoller = null;
    this.n.close(this.connFd);
    this.connFd = -1;
    this.hooks.disconnected(why);
    if (this.o.client && !this.closed) this.connect(); // reconnect to a front-end that listens
  }
}
