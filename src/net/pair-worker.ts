// A queue pair served in its own worker thread (DESIGN.md, multiqueue): the
// same QueuePair as on the main thread, over the guest memory the driver
// shares (SharedArrayBuffer) and the TAP queue fd the device owns, polled on
// this thread's loop. Kicks and filter changes arrive as messages;
// interrupts, faults and host errors go back as messages, counters through
// shared memory.
import { parentPort, workerData } from 'node:worker_threads';

import { TapQueue } from '../tap/tap.js';
import { GuestMemory } from '../virtio/guest-memory.js';
import { makeDeviceQueue } from '../virtio/make-queue.js';
import { RxFilter } from './filter.js';
import { NetMetrics } from './metrics.js';
import { ControlBlock, workerHostError, type FromWorker, type PairWorkerData, type ToWorker } from './pair-protocol.js';
import { QueuePair, type PairOwner, type RingGate } from './queue-pair.js';

const data = workerData as PairWorkerData;
const port = parentPort!;
const post = (m: FromWorker) => port.postMessage(m);
const block = new ControlBlock(data.control);

const mem = new GuestMemory(data.regions.map((r) => ({ gpa: r.gpa, bytes: new Uint8Array(r.buffer, r.byteOffset, r.byteLength) })));
const features = BigInt(data.features);
const tap = TapQueue.borrow(data.fd, data.tapName, data.pair);

let stopped = false;
const owner: PairOwner = {
  interrupt: (index) => post({ interrupt: index }),
  markBroken: (fault) => {
    post({ broken: fault }); // before the port closes
    shutdown();
  },
  hostError: (e) => post({ error: workerHostError(e).toFields() }),
};
// Every touch of the rings runs inside the control block: once the device
// sets STOP nothing starts, and the device waits for BUSY to clear before a reset.
const gate: RingGate = {
  enter: () => {
    if (!stopped && block.enter()) return true;
    shutdown();
    return false;
  },
  leave: () => block.leave(),
};
const metrics = new NetMetrics(new Float64Array(data.metrics)); // read by the device at any time
const pair = new QueuePair(data.pair, tap, owner, metrics, RxFilter.fromState(data.filter), data.settings, gate);
pair.linkUp = data.linkUp;

function shutdown(): void {
  if (stopped) return;
  stopped = true;
  pair.close();
  tap.close(); // stops polling; the fd stays the device's
  port.close();
}

port.on('message', (m: ToWorker) => {
  if ('kick' in m) pair.kick(m.kick);
  else if ('linkUp' in m) pair.linkUp = m.linkUp;
  else pair.filter.applyState(m.filter);
});

if (gate.enter()) {
  try {
    pair.start(makeDeviceQueue(features, mem, data.rx), makeDeviceQueue(features, mem, data.tx), features);
  } finally {
    gate.leave();
  }
}
pair.kick(2 * data.pair + 1);
post({ ready: true });
