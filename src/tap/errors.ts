// Errors shaped like Node's own system errors: code, errno, syscall, plus the
// interface name, and a message that says what to do.
import { userInfo } from 'node:os';
import { getSystemErrorName } from 'node:util';

/** Why a TAP operation failed. Tier 3 (host failure) when raised while running. */
export class TapError extends Error {
  override readonly name = 'TapError';
  /** An errno name such as 'EPERM', or an ERR_TAP_* code for checks made before any syscall. */
  readonly code: string;
  /** Negative errno as Node reports it, or 0 when no syscall failed. */
  readonly errno: number;
  readonly syscall: string;
  readonly ifname: string;

  constructor(message: string, code: string, errno: number, syscall: string, ifname: string) {
    super(message);
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
    this.ifname = ifname;
  }
}

function describe(code: string): string {
  const words: Record<string, string> = {
    EPERM: 'operation not permitted',
    EACCES: 'permission denied',
    EBUSY: 'device or resource busy',
    EINVAL: 'invalid argument',
    ENOENT: 'no such file or directory',
    ENODEV: 'no such device',
    EBADF: 'bad file descriptor',
    EEXIST: 'file exists',
    EIO: 'input/output error',
    EADDRNOTAVAIL: 'address not available',
    ENOTSUP: 'operation not supported',
    EOPNOTSUPP: 'operation not supported',
  };
  return words[code] ?? code.toLowerCase();
}

function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'USER');
  }
}

/** The sentence that tells a person how to get past a permission error. */
export function permissionHint(ifname: string): string {
  // A kernel-chosen name ("vtdemo%d") is not one a person can type: suggest its first instance.
  const name = ifname === '' ? 'tap0' : ifname.replace(/%d/g, '0');
  return (
    `run with CAP_NET_ADMIN (for example as root), or create a TAP owned by your user once with ` +
    `\`sudo ip tuntap add dev ${name} mode tap user ${currentUser()}\` and attach to it by name ` +
    `(this library then needs no privileges; /dev/net/tun must be readable and writable by you)`
  );
}

/**
 * Builds a TapError from a negative errno returned by the native layer.
 * `what` names the operation in words; `hint` is appended when given.
 */
export function errnoError(negErrno: number, syscall: string, ifname: string, what: string, hint?: string): TapError {
  let code: string;
  try {
    code = getSystemErrorName(negErrno);
  } catch {
    code = `E${-negErrno}`;
  }
  const target = ifname === '' ? '' : ` for "${ifname}"`;
  let message = `${what}${target} failed: ${syscall}: ${code} (${describe(code)})`;
  if (hint !== undefined) message += `; ${hint}`;
  return new TapError(message, code, negErrno, syscall, ifname);
}

/** An error found before any syscall (bad arguments, use after close). */
export function usageError(code: string, message: string, ifname: string, syscall = ''): TapError {
  return new TapError(message, code, 0, syscall, ifname);
}
