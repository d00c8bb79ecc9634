// A queue pair served in its own worker thread (DESIGN.md, multiqueue): the
// same RxQueue and TxQueue as on the main thread, over the guest memory the
// driver shares (SharedArrayBuffer) and the TAP queue fd the device owns,
// polled on this thread's loop. Kicks and filter changes arrive as messages;
// interrupts, faults and metrics go back as messages.
import { parentPort, workerData } from 'node:worker_threads';

import { TapQueue } from '../tap/tap.js';
import { hasFeature, VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_INDIRECT_DESC } from '../virtio/constants.js';
import { GuestMemory } from '../virtio/guest-memory.js';
import { PackedQueue } from '../virtio/packed-queue.js';
import { SplitQueue } from '../virtio/split-queue.js';
import { RxFilter } from './filter.js';
import { NetMetrics } from './metrics.js';
import { CTRL_BUSY, CTRL_STOP, type FilterState, type FromWorker, type PairWorkerData, type ToWorker } from './pair-protocol.js';
import type { NetQueueContext } from './queue-context.js';
import { RateLimiter } from './rate-limiter.js';
import { RxQueue } from './rx.js';
import { TxQueue } from './tx.js';

const data = workerData as PairWorkerData;
const port = parentPort!;
const post = (m: FromWorker) => port.postMessage(m);
const control = new Int32Array(data.control);

const mem = new GuestMemory(data.regions.map((r) => ({ gpa: r.gpa, bytes: new Uint8Array(r.buffer, r.byteOffset, r.byteLength) })));
mem.registerIo();
const features = BigInt(data.features);
const qf = {
  eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
  indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC),
  inOrder: hasFeature(features, VIRTIO_F_IN_ORDER),
};
const makeQueue = (a: PairWorkerData['rx']['addresses']) => (data.layout === 'packed' ? new PackedQueue(mem, a, qf) : new SplitQueue(mem, a, qf));
const rxq = makeQueue(data.rx.addresses);
const txq = makeQueue(data.tx.addresses);
const tap = TapQueue.borrow(data.fd, data.tapName, data.pair);
const filter = new RxFilter();
const metrics = new NetMetrics(new Float64Array(data.metrics)); // read by the device at any time

function applyFilter(f: FilterState): void {
  filter.reset(Uint8Array.from(f.mac));
  Object.assign(filter, { promisc: f.promisc, allmulti: f.allmulti, alluni: f.alluni, nomulti: f.nomulti, nouni: f.nouni, nobcast: f.nobcast, vlanFiltering: f.vlanFiltering });
  filter.setTables(f.unicast.map((m) => Uint8Array.from(m)), f.multicast.map((m) => Uint8Array.from(m)));
  for (const v of f.vlans) filter.setVlan(v, true);
}
applyFilter(data.filter);

let stopped = false;
const ctx: NetQueueContext = {
  features,
  metrics,
  filter,
  interrupt: (i) => post({ interrupt: i }),
  markBroken: (fault) => {
    stop();
    post({ broken: fault });
  },
  hostError: (e) => post({ error: e.message }),
  updateWatch: () => {
    if (!stopped && !tap.closed) tap.watch({ readable: rx.wantsReadable, writable: tx.waitingWritable });
  },
};
const rx = new RxQueue(data.rx.index, rxq, tap, ctx, new RateLimiter(data.rateLimit.rx), data.mtu, data.batch);
const tx = new TxQueue(data.tx.index, txq, tap, ctx, new RateLimiter(data.rateLimit.tx), data.batch, data.txTimerMs);

// Every touch of the rings runs inside this guard: once the device sets STOP
// nothing starts, and the device waits for BUSY to clear before a reset.
function guarded(fn: () => void): void {
  if (stopped || Atomics.load(control, CTRL_STOP) === 1) {
    stop();
    return;
  }
  Atomics.store(control, CTRL_BUSY, 1);
  try {
    if (Atomics.load(control, CTRL_STOP) === 0) fn();
  } finally {
    Atomics.store(control, CTRL_BUSY, 0);
    Atomics.notify(control, CTRL_BUSY);
  }
}

function stop(): void {
  if (stopped) return;
  stopped = true;
  rx.stop();
  tx.stop();
  tap.close(); // stops polling; the fd stays the device's
  port.close();
}

tap.on('readable', () => guarded(() => rx.process()));
tap.on('writable', () => guarded(() => tx.onWritable()));
tap.on('error', (e) => post({ error: e.message }));
port.on('message', (m: ToWorker) => {
  if ('kick' in m) guarded(() => (m.kick === data.rx.index ? rx.onKick() : tx.process()));
  else if ('filter' in m) applyFilter(m.filter);
});

rxq.disableNotifications();
txq.enableNotifications();
guarded(() => {
  ctx.updateWatch();
  tx.process();
});
post({ ready: true });
