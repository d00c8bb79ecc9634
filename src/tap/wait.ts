// Waiting for one frame on a TAP queue, for tools, the demo and tests (not
// for the device's hot path, which drains in batches on readiness events).
import type { TapQueue } from './tap-queue.js';
import { NEG_EAGAIN } from '../host/errors.js';

/**
 * Reads frames until `match` returns non-null for one, or `ms` pass (then
 * null). Frames that do not match (IPv6 neighbour discovery, say) are passed
 * over; `skip` bytes (a virtio-net header) are cut from the front of each.
 */
export async function waitForFrame<T>(
  queue: TapQueue,
  match: (frame: Uint8Array) => T | null,
  ms = 3000,
  skip = 0,
): Promise<T | null> {
  const buf = new Uint8Array(65536 + 64);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const n = queue.read(buf);
    if (n > skip) {
      const hit = match(buf.slice(skip, n));
      if (hit !== null) return hit;
      continue;
    }
    if (n < 0 && n !== NEG_EAGAIN) return null; // anything but EAGAIN: the queue is unusable
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, Math.max(1, Math.min(100, deadline - Date.now())));
      function done() {
        clearTimeout(t);
        queue.off('readable', done);
        if (!queue.closed) queue.watch({ readable: false });
        resolve();
      }
      queue.on('readable', done);
      queue.watch({ readable: true });
    });
  }
  return null;
}
