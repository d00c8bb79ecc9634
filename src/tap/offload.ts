// TAP offloads (TUNSETOFFLOAD, Linux include/uapi/linux/if_tun.h): what the
// host stack may hand a TAP, and the negotiation with a kernel that may not
// know every bit.
import { constants as osConstants } from 'node:os';

import type { NativeBinding } from '../host/binding.js';
import { errnoError } from './errors.js';

/** TUNSETOFFLOAD bits (if_tun.h). USO4/USO6 are missing from older headers. */
export const TunOffload = {
  CSUM: 0x01,
  TSO4: 0x02,
  TSO6: 0x04,
  TSO_ECN: 0x08,
  UFO: 0x10,
  USO4: 0x20,
  USO6: 0x40,
} as const;

export const TUN_OFFLOAD_ALL = 0x7f;

/** Names of offload bits, for messages and metrics. */
export function offloadNames(flags: number): string[] {
  return Object.entries(TunOffload)
    .filter(([, bit]) => (flags & bit) !== 0)
    .map(([name]) => name);
}

export interface OffloadResult {
  /** Bits the kernel took. */
  accepted: number;
  /** Bits asked for that the kernel refused (reported, not fatal). */
  refused: number;
}

/**
 * TUNSETOFFLOAD on `fd` with `wanted` (already range-checked). Bits the
 * kernel refuses are reported in `refused`; only an error unrelated to the
 * bits throws (a TapError naming `name`).
 */
export function negotiateOffloads(n: NativeBinding, fd: number, name: string, wanted: number): OffloadResult {
  let rc = n.tunSetOffload(fd, wanted);
  if (rc === 0) return { accepted: wanted, refused: 0 };
  if (rc !== -osConstants.errno.EINVAL) throw errnoError(rc, 'TUNSETOFFLOAD', name, 'setting offloads');
  // Some bit is unknown to this kernel: add the bits one at a time, CSUM first
  // (the segmentation offloads depend on it), keeping those it takes.
  let accepted = 0;
  for (let bit = 1; bit <= 0x8000; bit <<= 1) {
    if ((wanted & bit) === 0) continue;
    rc = n.tunSetOffload(fd, accepted | bit);
    if (rc === 0) accepted |= bit;
  }
  rc = n.tunSetOffload(fd, accepted);
  if (rc < 0) throw errnoError(rc, 'TUNSETOFFLOAD', name, 'setting offloads');
  return { accepted, refused: wanted & ~accepted };
}
