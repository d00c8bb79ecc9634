// The host's end of the guest's TCP transfers: a socket that sends a payload
// (and closes), or takes one (until the expected bytes, or the guest closes),
// with the SHA-256 of what crossed, to compare with the guest's.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';

export interface Transfer {
  bytes: number;
  sha256: string;
  /** From the connection to the last byte. */
  ms: number;
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
}

/** Serves `size` random bytes to the first connection; resolves with what was sent once the socket closes. */
export async function servePayload(host: string, port: number, size: number, timeoutMs: number): Promise<{ sent: Promise<Transfer>; close: () => void }> {
  const payload = randomBytes(size);
  const sha256 = createHash('sha256').update(payload).digest('hex');
  const server = createServer();
  await listen(server, host, port);
  const sent = new Promise<Transfer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no transfer from ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    server.once('connection', (sock) => {
      const t0 = performance.now();
      sock.on('error', () => {});
      // Timed to the close: the guest has read everything and hung up.
      sock.on('close', () => {
        clearTimeout(timer);
        resolve({ bytes: size, sha256, ms: performance.now() - t0 });
      });
      sock.end(payload);
      server.close();
    });
  });
  return { sent, close: () => server.close() };
}

/** Takes up to `size` bytes from the first connection and closes it; resolves with what arrived. */
export async function receivePayload(host: string, port: number, size: number, timeoutMs: number): Promise<{ received: Promise<Transfer>; close: () => void }> {
  const server = createServer();
  await listen(server, host, port);
  const received = new Promise<Transfer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no transfer to ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    server.once('connection', (sock) => {
      const t0 = performance.now();
      const hash = createHash('sha256');
      let bytes = 0;
      let finished = false;
      const done = (): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        sock.destroy();
        resolve({ bytes, sha256: hash.digest('hex'), ms: performance.now() - t0 });
      };
      sock.on('data', (d: Buffer) => {
        const take = d.subarray(0, Math.max(0, size - bytes));
        hash.update(take);
        bytes += take.length;
        if (bytes >= size) done();
      });
      sock.on('end', done);
      sock.on('error', () => {});
      server.close();
    });
  });
  return { received, close: () => server.close() };
}
