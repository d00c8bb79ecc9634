// A vhost-user back-end in a process of its own, for the hostile and fuzz
// tests: a crash (an uncaught error, a native abort, SIGBUS) kills this
// process, not the test runner, and the test sees it. It serves on argv[2]
// over a stand-in TAP whose far end echoes every frame back, so a
// well-behaved front-end can move a frame out and get it back.
//
// Lines on stdout, one JSON object each: {ready: pid}, {log}, {error: {code,
// message}}, {stats: {...}} (answering "stats" on stdin).
import { createInterface } from 'node:readline';

import { vhostUserNetDevice } from '../../src/cli/vhost-user-device.js';
import { Tap } from '../../src/tap/tap.js';
import { VhostUserBackend } from '../../src/transport/vhost-user/backend.js';

const socketPath = process.argv[2];
if (socketPath === undefined) throw new Error('usage: vhost-backend-child.ts SOCKET');

const out = (o: object): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

const { tap, peers } = Tap.socketPair({ name: 'vh0' });
const peer = peers[0]!;
const device = vhostUserNetDevice({ tap, txTimerMs: 0 });
const backend = new VhostUserBackend({ socketPath, device, log: (log) => out({ log }) });
backend.on('error', (e: Error & { code?: string }) => out({ error: { code: e.code ?? '', message: e.message } }));
backend.start();

// The far end of the stand-in TAP: every frame the guest sends comes back to it.
const frame = new Uint8Array(65536 + 12);
const echo = setInterval(() => {
  for (let i = 0; i < 64; i++) {
    const got = peer.read(frame);
    if (got <= 0) break;
    peer.write(frame.subarray(0, got));
  }
}, 2);

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'stats') out({ stats: { ...backend.stats, txPackets: device.metrics.txPackets, rxPackets: device.metrics.rxPackets } });
  if (line === 'exit') {
    clearInterval(echo);
    backend.close();
    tap.close();
    peer.close();
    process.exit(0);
  }
});
out({ ready: process.pid });
