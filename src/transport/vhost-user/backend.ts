// A vhost-user back-end (QEMU docs/interop/vhost-user.rst): QEMU (the
// front-end) hands over guest memory (memfds), ring addresses and eventfds;
// the device the back-end was handed serves the rings. One connection at a
// time; when the front-end goes, everything it handed over is closed and
// unmapped and the next one may connect.
//
// The parts: the connection (socket, messages, replies), the session (what
// the front-end set up: features, memory table, rings) and one handler per
// request (handlers.ts).
import { EventEmitter } from 'node:events';

import { VhostUserConnection } from './connection.js';
import type { VhostUserDevice } from './device.js';
import { answer } from './handlers.js';
import { Session } from './session.js';

export interface VhostUserBackendOptions<D extends VhostUserDevice = VhostUserDevice> {
  socketPath: string;
  /**
   * The device to serve. The front-end runs the control queue and the config
   * space, so a NetDevice here is built for that: see vhostUserNetDevice.
   * The back-end routes the device's interrupts and closes it on close().
   */
  device: D;
  /** Listen for the front-end (default) or connect to one that listens. */
  client?: boolean;
  /** Lines for people: connections, refusals. */
  log?: (line: string) => void;
}

/** Emits 'connect', 'disconnect' (with why), 'error' (tier 3, from the device). */
export class VhostUserBackend<D extends VhostUserDevice = VhostUserDevice> extends EventEmitter {
  readonly device: D;
  private readonly session: Session;
  private readonly connection: VhostUserConnection;
  private closed = false;

  constructor(o: VhostUserBackendOptions<D>) {
    super();
    const log = o.log ?? (() => {});
    this.device = o.device;
    const session = new Session(o.device, log);
    this.session = session;
    this.connection = new VhostUserConnection(
      { socketPath: o.socketPath, client: o.client === true, log },
      {
        answer: (m) => answer(session, m),
        replyAck: () => session.replyAck,
        connected: () => this.emit('connect'),
        disconnected: (why) => {
          session.end();
          this.emit('disconnect', why);
        },
      },
    );
    o.device.setInterruptSink((kind, q) => session.rings.interrupt(kind, q));
    o.device.on('error', (e: Error) => this.emit('error', e));
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
