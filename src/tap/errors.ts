// TAP errors: a HostError (code, errno, syscall) plus the interface name,
// with a message that says what to do.
import { userInfo } from 'node:os';

import { describeErrno, errnoName, HostError } from '../host/errors.js';

/** Why a TAP operation failed. Tier 3 (host failure) when raised while running. */
export class TapError extends HostError {
  override name = 'TapError';
  readonly ifname: string;

  constructor(message: string, code: string, errno: number, syscall: string, ifname: string) {
    super(message, code, errno, syscall);
    this.ifname = ifname;
  }
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
  const code = errnoName(negErrno);
  const target = ifname === '' ? '' : ` for "${ifname}"`;
  let message = `${what}${target} failed: ${syscall}: ${code} (${describeErrno(code)})`;
  if (hint !== undefined) message += `; ${hint}`;
  return new TapError(message, code, negErrno, syscall, ifname);
}

/** An error found before any syscall (bad arguments, use after close). */
export function usageError(code: string, message: string, ifname: string, syscall = ''): TapError {
  return new TapError(message, code, 0, syscall, ifname);
}
