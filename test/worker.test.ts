// Readiness events are delivered on the loop of the thread that asked for them.
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';

import { expect, it } from 'vitest';

import { udpReceiver } from './helpers/host.js';
import { describePrivileged } from './helpers/privileged.js';

describePrivileged('Tap in a worker thread', () => {
  it('a worker gets readable events on its own loop and exits cleanly', async () => {
    const fixtures = resolve(import.meta.dirname, 'fixtures');
    const worker = new Worker(resolve(fixtures, 'ts-worker.mjs'), {
      workerData: { module: resolve(fixtures, 'worker-tap.ts'), name: 'vtworker0', cidr: '198.18.30.1/24' },
    });
    // Listened for from the start: the worker can end (and 'exit' be emitted)
    // before the test gets to awaiting it, and a listener added then waits forever.
    const exited = new Promise<number>((res) => worker.once('exit', res));
    let ready!: () => void;
    const isReady = new Promise<void>((res) => (ready = res));
    const got = new Promise<{ event: string; what?: string }>((res, rej) => {
      worker.on('message', (m: { event: string; what?: string }) => {
        if (m.event === 'ready') ready();
        if (m.event === 'readable') res(m);
      });
      worker.on('error', rej);
    });
    await Promise.race([isReady, got]);
    const s = await udpReceiver('198.18.30.1');
    s.sock.send('x', 9, '198.18.30.2'); // the host must ARP for the neighbour first
    const m = await got;
    expect(m.what).toBe('ARP who-has 198.18.30.2 tell 198.18.30.1');
    await s.close();
    // With its poller closed, nothing keeps the worker's loop alive: it ends by itself.
    expect(await exited).toBe(0);
  });
});
