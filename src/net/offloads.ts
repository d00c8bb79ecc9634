// Guest offloads (VIRTIO 1.2 §5.1.6.5.6.1): which ones a driver may switch
// to, and what the TAP may then hand the guest (TUNSETOFFLOAD).
import type { Tap } from '../tap/tap.js';
import { GUEST_OFFLOADS, tunOffloads } from './features.js';

/** VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET: only offloads that were negotiated, and with the rest of the features still consistent. */
export function guestOffloadsAllowed(offloads: bigint, features: bigint, consistent: (features: bigint) => boolean): boolean {
  if ((offloads & ~(features & GUEST_OFFLOADS)) !== 0n) return false;
  return consistent(offloads | (features & ~GUEST_OFFLOADS));
}

/** TUNSETOFFLOAD from the guest's offloads; bits the kernel refuses are left off, and a failure goes to `onError`, not up. */
export function programTapOffloads(tap: Tap, guestOffloads: bigint, onError: (e: Error) => void): void {
  try {
    tap.setOffloads(tunOffloads(guestOffloads));
  } catch (e) {
    onError(e as Error);
  }
}
