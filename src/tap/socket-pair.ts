// The stand-in for a TAP that needs no kernel interface and no privileges
// (Tap.socketPair): each queue is one end of a SOCK_SEQPACKET socket pair,
// which keeps frame boundaries as a TAP does; the other end is a TapPeer.
import { constants as osConstants } from 'node:os';

import { native, type NativeBinding } from '../host/binding.js';
import { errnoError } from './errors.js';

/** The far end of a stand-in TAP queue: what the host kernel would be for a real TAP. */
export class TapPeer {
  private fd: number;
  private readonly n = native();

  constructor(fd: number) {
    this.fd = fd;
  }

  /** Writes one frame (vnet header first, when the Tap has one): bytes or -errno. */
  write(frame: ArrayBufferView): number {
    return this.fd < 0 ? -osConstants.errno.EBADF : this.n.writeFrame(this.fd, frame);
  }

  /** Reads one frame: bytes, or -errno (-EAGAIN when nothing waits). */
  read(into: ArrayBufferView): number {
    return this.fd < 0 ? -osConstants.errno.EBADF : this.n.readFrame(this.fd, into);
  }

  close(): void {
    if (this.fd >= 0) this.n.close(this.fd);
    this.fd = -1;
  }
}

/**
 * `queues` socket pairs: the fds for the Tap's queues and the peers at their
 * other ends. On failure, closes what it made and throws a TapError naming `name`.
 */
export function socketPairs(n: NativeBinding, queues: number, name: string): { fds: number[]; peers: TapPeer[] } {
  const fds: number[] = [];
  const peers: TapPeer[] = [];
  for (let q = 0; q < queues; q++) {
    const pair = n.socketPair();
    if (typeof pair === 'number') {
      for (const fd of fds) n.close(fd);
      for (const p of peers) p.close();
      throw errnoError(pair, 'socketpair', name, 'making a stand-in TAP queue');
    }
    fds.push(pair[0]);
    peers.push(new TapPeer(pair[1]));
  }
  return { fds, peers };
}
