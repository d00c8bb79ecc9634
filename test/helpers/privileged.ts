// Gatekeeper for tests that need a real TAP: they run only inside the network
// namespace that `npm test` made for the run (never in the host's), and they
// are skipped with the reason otherwise -- or fail, when
// VIRTIO_TAP_REQUIRE_PRIVILEGED=1, so that CI can never pass by skipping.
import { readlinkSync } from 'node:fs';
import { describe, it } from 'vitest';

function whyNot(): string | null {
  const marker = process.env['VIRTIO_TAP_NETNS'];
  if (marker === undefined) {
    return 'needs CAP_NET_ADMIN and CAP_SYS_ADMIN: run `npm test` as root so it can make a network namespace for the run';
  }
  let current: string;
  try {
    current = readlinkSync('/proc/self/ns/net');
  } catch (err) {
    return `cannot read /proc/self/ns/net: ${(err as Error).message}`;
  }
  if (current !== marker) return `not inside the test run's network namespace (${current} != ${marker})`;
  if (process.env['VIRTIO_TAP_HOST_NETNS'] === current) return 'the test network namespace is the host namespace';
  return null;
}

export const privilegedReason = whyNot();
export const requirePrivileged = process.env['VIRTIO_TAP_REQUIRE_PRIVILEGED'] === '1';

/** describe() for tests that need a TAP in the run's own network namespace. */
export function describePrivileged(name: string, body: () => void): void {
  if (privilegedReason === null) {
    describe(name, body);
  } else if (requirePrivileged) {
    describe(name, () => {
      it('has the privileges it needs (VIRTIO_TAP_REQUIRE_PRIVILEGED=1)', () => {
        throw new Error(`skipped would hide this suite: ${privilegedReason}`);
      });
    });
  } else {
    describe.skip(`${name} (skipped: ${privilegedReason})`, body);
  }
}
