// The vhost-user socket (vhost-user.rst "Communication"): listening for the
// front-end or connecting to one that listens, one front-end at a time;
// reading framed messages with their fds; replies, and REPLY_ACK's yes or no
// for requests that asked; and the end of a connection, which closes every
// fd it brought.
import { chmodSync, chownSync, lstatSync, rmSync } from 'node:fs';
import { constants as osConstants } from 'node:os';

import { native, type NativePoller } from '../../host/binding.js';
import { HostError } from '../../host/errors.js';
import { QueueConfigError } from '../../virtio/queue.js';
import {
  encode,
  ExactReader,
  Req,
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
  /** A request was refused (counted). */
  refused(): void;
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
  /** Who owns the socket file and its mode, set after bind (as OVS-DPDK and DPDK's vhost library let operators). */
  socketAccess?: SocketAccess;
  /** One log line per request received (what a front-end sends, e.g. on reconnect). */
  logRequests?: boolean;
}

export interface SocketAccess {
  uid?: number;
  gid?: number;
  /** Permission bits, such as 0o660. */
  mode?: number;
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
    this.removeStale();
    const fd = this.n.unixListen(this.o.socketPath);
    if (fd < 0) throw HostError.fromErrno(fd, 'listen', `listening on ${this.o.socketPath}`);
    this.listenFd = fd;
    this.applyAccess();
    this.listenPoller = new this.n.Poller(fd, () => this.accept());
    this.listenPoller.start(1);
    this.o.log(`listening on ${this.o.socketPath}`);
  }

  // Whatever is at the socket path: nothing, or a socket nobody listens on
  // (removed); anything else is refused, since removing it would lose it.
  private removeStale(): void {
    const path = this.o.socketPath;
    let isSocket: boolean;
    try {
      isSocket = lstatSync(path).isSocket();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const E = osConstants.errno;
    if (!isSocket) throw new HostError(`${path} exists and is not a socket: not removing it (remove it, or choose another --socket)`, 'EEXIST', -E.EEXIST, 'bind');
    const probe = this.n.unixConnect(path);
    if (probe >= 0) {
      this.n.close(probe);
      throw new HostError(`${path}: another back-end listens on it`, 'EADDRINUSE', -E.EADDRINUSE, 'bind');
    }
    this.o.log(`removing the stale socket ${path}`);
    rmSync(path, { force: true });
  }

  // Owner, group and mode of the socket file, as asked; the socket is closed and removed when they cannot be set.
  private applyAccess(): void {
    const a = this.o.socketAccess;
    if (a === undefined) return;
    const path = this.o.socketPath;
    try {
      if (a.uid !== undefined || a.gid !== undefined) chownSync(path, a.uid ?? -1, a.gid ?? -1);
      if (a.mode !== undefined) chmodSync(path, a.mode);
    } catch (err) {
      this.n.close(this.listenFd);
      this.listenFd = -1;
      rmSync(path, { force: true });
      const e = err as NodeJS.ErrnoException;
      throw new HostError(`setting the owner and mode of ${path} failed: ${e.message}`, e.code ?? 'EPERM', e.errno ?? 0, e.syscall ?? 'chown');
    }
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
    if (this.o.logRequests === true) this.o.log(requestLine(m));
    try {
      const reply = this.hooks.answer(m);
      this.closeLeft(m);
      if (reply !== null) {
        this.reply(m, reply);
        return;
      }
    } catch (err) {
      this.closeLeft(m);
      if (!(err instanceof VhostUserError || err instanceof QueueConfigError)) throw err;
      this.o.log(`refused ${reqName(m.request)}: ${err.message}`);
      this.hooks.refused();
      ack = 1n;
      const keep = err instanceof VhostUserError && err.keepConnection;
      if (!this.wantsAck(m) && !keep) {
        this.disconnect(`${reqName(m.request)}: ${err.message}`);
        return;
      }
    }
    if (this.wantsAck(m)) this.reply(m, u64Payload(ack));
  }

  // The message's fds no handler took: closed here, once.
  private closeLeft(m: Message): void {
    for (const fd of m.fds) if (fd >= 0) this.n.close(fd);
    m.fds.length = 0;
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

// One request for the log: its name, and the ring and number of a vhost_vring_state.
function requestLine(m: Message): string {
  const dv = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
  const state = m.request === Req.SET_VRING_NUM || m.request === Req.SET_VRING_BASE || m.request === Req.GET_VRING_BASE || m.request === Req.SET_VRING_ENABLE;
  const detail = state && dv.byteLength >= 8 ? ` ring ${dv.getUint32(0, true)} num 0x${dv.getUint32(4, true).toString(16)}` : '';
  return `request ${reqName(m.request)}${detail}${m.fds.length > 0 ? ` (${m.fds.length} fd${m.fds.length > 1 ? 's' : ''})` : ''}`;
}
