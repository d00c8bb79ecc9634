// `--metrics HOST:PORT`: the device's metrics as Prometheus text over HTTP,
// bound only to the address the user gave.
import { createServer, type Server } from 'node:http';

import type { MetricsAddress } from './vhost-user-flags.js';

/** The content type of the Prometheus text exposition format. */
const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Serves `render()` at GET /metrics (and /). Resolves once listening, with the
 * bound port (the one asked for, or the kernel's pick for port 0); rejects
 * with the listen error (its code, e.g. EADDRINUSE, in the message).
 */
export function serveMetrics(at: MetricsAddress, render: () => string): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path !== '/metrics' && path !== '/') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
    } else {
      const body = render();
      res.writeHead(200, { 'content-type': PROMETHEUS_TEXT, 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`--metrics ${at.host}:${at.port}: cannot listen: ${e.code ?? e.message}`)));
    server.listen(at.port, at.host, () => {
      const address = server.address();
      resolve({ server, port: typeof address === 'object' && address !== null ? address.port : at.port });
    });
  });
}
