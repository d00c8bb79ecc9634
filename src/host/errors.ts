// Host errors: what a failed syscall means, decided in one place, and the
// Node-shaped error (code, errno, syscall) every tier-3 failure becomes,
// whichever thread or transport it came from.
import { constants as osConstants } from 'node:os';
import { getSystemErrorName } from 'node:util';

const E = osConstants.errno;

/** -EAGAIN, as the native layer returns it: "nothing now, try when ready". Not an error. */
export const NEG_EAGAIN = -E.EAGAIN;

/** The errno name of a negative errno ('ENODEV'), or 'E<n>' for one Node does not know. */
export function errnoName(negErrno: number): string {
  const extra = EXTRA_NAMES[-negErrno];
  if (extra !== undefined) return extra;
  try {
    const name = getSystemErrorName(negErrno);
    // Node answers "Unknown system error -77" for errnos libuv does not name.
    return /^E[A-Z0-9]+$/.test(name) ? name : `E${-negErrno}`;
  } catch {
    return `E${-negErrno}`;
  }
}

/** Linux errnos that a TAP or a socket returns and libuv does not name. */
const EXTRA_NAMES: Record<number, string> = { 77: 'EBADFD' };

const WORDS: Record<string, string> = {
  EPERM: 'operation not permitted',
  EACCES: 'permission denied',
  EAGAIN: 'resource temporarily unavailable',
  EBUSY: 'device or resource busy',
  EINVAL: 'invalid argument',
  ENOENT: 'no such file or directory',
  ENODEV: 'no such device',
  ENXIO: 'no such device or address',
  EBADF: 'bad file descriptor',
  EBADFD: 'file descriptor in bad state',
  EEXIST: 'file exists',
  EIO: 'input/output error',
  EFAULT: 'bad address',
  EMSGSIZE: 'message too long',
  ENOBUFS: 'no buffer space available',
  ENOMEM: 'out of memory',
  EADDRINUSE: 'address already in use',
  EADDRNOTAVAIL: 'address not available',
  ECONNREFUSED: 'connection refused',
  EPIPE: 'broken pipe',
  ENOTSUP: 'operation not supported',
  EOPNOTSUPP: 'operation not supported',
};

/** The errno name in words ('no such device'). */
export function describeErrno(code: string): string {
  return WORDS[code] ?? code.toLowerCase();
}

/**
 * A failed syscall on the host side (tier 3 when it stops a device). Shaped
 * like Node's own system errors, so `e.code === 'ENODEV'` works wherever it
 * was raised: on the main thread, in a queue pair's worker, in vhost-user.
 */
export class HostError extends Error {
  override name = 'HostError';
  /** An errno name such as 'ENODEV', or an ERR_* code for checks made before any syscall. */
  readonly code: string;
  /** Negative errno as Node reports it, or 0 when no syscall failed. */
  readonly errno: number;
  readonly syscall: string;

  constructor(message: string, code: string, errno: number, syscall: string) {
    super(message);
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }

  /** `what failed: syscall: ENAME (words)`, from a negative errno. */
  static fromErrno(negErrno: number, syscall: string, what: string): HostError {
    const code = errnoName(negErrno);
    return new HostError(`${what} failed: ${syscall}: ${code} (${describeErrno(code)})`, code, negErrno, syscall);
  }

  /** The same error rebuilt from its plain fields (what a worker thread posts). */
  static fromFields(f: { message: string; code: string; errno: number; syscall: string }): HostError {
    return new HostError(f.message, f.code, f.errno, f.syscall);
  }

  /** The fields a worker posts to rebuild it on the other side. */
  toFields(): { message: string; code: string; errno: number; syscall: string } {
    return { message: this.message, code: this.code, errno: this.errno, syscall: this.syscall };
  }
}

/** What to do after a frame's read or write returned -errno. */
export const enum IoAction {
  /** Nothing ready (EAGAIN): wait for readiness, lose nothing. */
  Again = 0,
  /** This frame is lost (counted with the table's reason); the queue goes on. */
  Drop = 1,
  /** The TAP queue is unusable: stop it, count it, emit a tier-3 HostError. */
  Fatal = 2,
}

/** Why a frame was lost on the host side (a drop reason of NetMetrics). */
export type HostDropReason = 'tx_link_down' | 'tx_tap_rejected' | 'rx_tap_error';

interface Rule {
  action: IoAction;
  tx: HostDropReason;
  rx: HostDropReason;
}

const again: Rule = { action: IoAction.Again, tx: 'tx_tap_rejected', rx: 'rx_tap_error' };
const fatal: Rule = { action: IoAction.Fatal, tx: 'tx_tap_rejected', rx: 'rx_tap_error' };
const dropRejected: Rule = { action: IoAction.Drop, tx: 'tx_tap_rejected', rx: 'rx_tap_error' };

/**
 * The one table: for each errno of a TAP read or write, again, drop (with the
 * reason counted) or fatal. An errno not listed drops the frame.
 * - EAGAIN, EINTR: the queue is full or empty; nothing is lost.
 * - EIO: the TAP's interface is down (tun.c refuses I/O while !IFF_UP): the
 *   frame is lost, the queue stays, and frames flow again once it is up.
 * - EBADF, EBADFD, ENODEV, ENXIO: the fd or the interface is gone.
 * - EINVAL, EFAULT, EMSGSIZE, ENOBUFS, ENOMEM: the kernel refused this frame.
 */
const RULES = new Map<number, Rule>([
  [E.EAGAIN, again],
  [E.EINTR, again],
  [E.EIO, { action: IoAction.Drop, tx: 'tx_link_down', rx: 'rx_tap_error' }],
  [E.EBADF, fatal],
  [77 /* EBADFD, not in Node's table */, fatal],
  [E.ENODEV, fatal],
  [E.ENXIO, fatal],
]);

/** The action for a negative errno from a TAP read or write. */
export function ioAction(negErrno: number): IoAction {
  return (RULES.get(-negErrno) ?? dropRejected).action;
}

/** The drop reason counted for a negative errno, by direction. */
export function ioDropReason(negErrno: number, direction: 'tx' | 'rx'): HostDropReason {
  return (RULES.get(-negErrno) ?? dropRejected)[direction];
}
