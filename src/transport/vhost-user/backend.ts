// A vhost-user back-end (QEMU docs/interop/vhost-user.rst): the front-end
// hands over guest memory (memfds), ring addresses and eventfds; the device
// the back-end was handed serves the rings. One connection at a time; when
// the front-end goes, everything it handed over is closed and unmapped and
// the next one may connect.
//
// Two kinds of front-end, one back-end. QEMU's vhost-user net runs the
// control queue and the config space itself: it keeps CTRL_VQ and its
// friends out of SET_FEATURES (they are not among the bits it passes on),
// does not take the CONFIG protocol feature, and passes the data rings only.
// A whole-device front-end (User-Mode Linux's virtio_uml) passes every ring,
// reads the config space with GET_CONFIG and takes config changes as
// BACKEND_CONFIG_CHANGE_MSG on the back-end channel. Who runs the control
// queue is decided by negotiation: the device's iff the front-end acks
// CTRL_VQ. Without it, the pairs in use follow the enabled rings; with it,
// the driver's VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET decides. With STATUS agreed,
// SET_STATUS drives the device's status machine and GET_STATUS reads it.
//
// A back-end that dies and is started again (QEMU 7.2 with -chardev
// ...,reconnect=1, or QEMU listening and --client): QEMU sees the socket
// close, brings the link down, fails GET_VRING_BASE on the dead socket and
// keeps its own idea of each ring's position; on the new connection it sends
// the whole set-up again (GET_FEATURES ... SET_OWNER, the call and error fds,
// SET_VRING_ENABLE, SET_FEATURES, SET_STATUS, ADD_MEM_REG per region, then
// per ring SET_VRING_NUM/BASE/ADDR/KICK/CALL, SET_STATUS with DRIVER_OK). The new
// back-end recovers each ring's position and nothing else (the TAP, a
// persistent one, is reattached; the memory and fds come again): a split
// ring's base is the used index QEMU read from guest memory (chains the
// dead back-end popped but did not use are popped again); a packed ring's
// base is stale (QEMU has nothing in guest memory to read, and 7.2's
// vhost-user net uses no INFLIGHT_SHMFD), so the ring reads the device's
// used position from the descriptors' USED flags and resumes there
// (Rings.resume, PackedQueue.usedPositionInRing).
//
// The parts: the connection (socket, messages, replies), the session (what
// the front-end set up: features, memory table, rings, the back-end
// channel, status) and one handler per request (handlers.ts).
import { EventEmitter } from 'node:events';

import type { BackendChannelStats } from './backend-channel.js';
import { VhostUserConnection, type SocketAccess } from './connection.js';
import type { VhostUserDevice } from './device.js';
import { answer } from './handlers.js';
import type { VhostUserStats } from './rings.js';
import { Session } from './session.js';

export interface VhostUserBackendOptions<D extends VhostUserDevice = VhostUserDevice> {
  socketPath: string;
  /**
   * The device to serve: a NetDevice built by vhostUserNetDevice runs the
   * control queue when the front-end acks CTRL_VQ. The back-end routes the
   * device's interrupts and closes it on close().
   */
  device: D;
  /** Listen for the front-end (default) or connect to one that listens. */
  client?: boolean;
  /**
   * Serve this already-connected socket instead of socketPath (QEMU's
   * vhost-user.rst, "Backend program conventions": --fd). The back-end owns
   * and closes it; when the front-end goes there is nothing more to serve.
   */
  fd?: number;
  /** Lines for people: connections, refusals. */
  log?: (line: string) => void;
  /** Owner, group and mode of the socket file (listening only), set right after bind. */
  socketAccess?: SocketAccess;
  /** One log line per request received. */
  logRequests?: boolean;
}

/**
 * Emits 'connect', 'disconnect' (with why), and 'error': a VhostUserError
 * with code ERR_VHOST_USER_RING_BROKEN (tier 2: the guest broke a ring; the
 * device needs a reset) or ERR_VHOST_USER_RING_FD (tier 3: a kick or call fd
 * failed), or the device's HostError (tier 3). Each also writes the ring's
 * error eventfd where there is a ring, makes one log line and is counted in
 * `stats`. Without a listener the errors are only logged and counted.
 */
export class VhostUserBackend<D extends VhostUserDevice = VhostUserDevice> extends EventEmitter {
  readonly device: D;
  private readonly session: Session;
  private readonly connection: VhostUserConnection;
  private closed = false;

  constructor(o: VhostUserBackendOptions<D>) {
    super();
    const log = o.log ?? (() => {});
    this.device = o.device;
    const session = new Session(o.device, log, (e) => this.fault(e));
    this.session = session;
    this.connection = new VhostUserConnection(
      { socketPath: o.socketPath, client: o.client === true, fd: o.fd, log, logRequests: o.logRequests === true, ...(o.socketAccess !== undefined ? { socketAccess: o.socketAccess } : {}) },
      {
        answer: (m) => answer(session, m),
        replyAck: () => session.replyAck,
        connected: () => this.emit('connect'),
        refused: () => session.stats.refused++,
        disconnected: (why) => {
          session.end();
          this.emit('disconnect', why);
        },
      },
    );
    o.device.setInterruptSink((kind, q) => session.interrupt(kind, q));
    o.device.on('error', (e: Error) => {
      session.stats.deviceErrors++;
      log(`device error: ${e.message}`);
      this.fault(e);
    });
  }

  // Tier 2 and 3 under vhost-user: an 'error' for whoever listens (the log line and the count are made where it happened).
  private fault(e: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', e);
  }

  /** What the back-end counted: requests refused, rings broken, ring fds that failed, interrupts pending, device errors. */
  get stats(): Readonly<VhostUserStats> {
    return this.session.stats;
  }

  /** What the back-end channel carried: config changes sent, merged, acked, refused and dropped. */
  get channelStats(): Readonly<BackendChannelStats> {
    return this.session.channel.stats;
  }

  /** Starts listening (or connecting, with client: true). Throws HostError when it cannot listen. */
  start(): void {
    this.connection.start();
  }

  /** Stops serving: closes the connection, fds and mappings, removes the socket file, and closes the device. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.close();
    this.device.close();
  }
}
