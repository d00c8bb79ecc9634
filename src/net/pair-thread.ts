// Queue pairs served in worker threads of their own (DESIGN.md, multiqueue):
// starting a pair's thread over the guest memory the driver shares, handing
// it kicks and filter changes, turning its messages into interrupts, faults
// and HostErrors, and stopping it before the rings change under it.
import { Worker } from 'node:worker_threads';

import { HostError } from '../host/errors.js';
import type { DeviceQueue } from '../virtio/queue.js';
import type { RxFilter } from './filter.js';
import { NetMetrics } from './metrics.js';
import { ControlBlock, workerHostError, type FromWorker, type PairWorkerData, type ToWorker } from './pair-protocol.js';
import type { PairOwner, QueuePair } from './queue-pair.js';

class PairThread {
  /** The pair's counters, written by the worker and read here at any time. */
  readonly metrics: NetMetrics;
  private readonly worker: Worker;
  private readonly block: ControlBlock;
  private stopped = false;

  constructor(data: PairWorkerData, block: ControlBlock, owner: PairOwner) {
    this.block = block;
    this.metrics = new NetMetrics(new Float64Array(data.metrics));
    this.worker = spawnPairWorker(data);
    this.worker.on('message', (m: FromWorker) => {
      if (this.stopped) return; // said before the stop: about rings that are gone
      if ('interrupt' in m) owner.interrupt(m.interrupt);
      else if ('broken' in m) owner.markBroken(m.broken);
      else if ('error' in m) owner.hostError(HostError.fromFields(m.error));
    });
    this.worker.on('error', (e: unknown) => owner.hostError(workerHostError(e)));
  }

  post(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  /** STOP, wait until the worker is off the rings, then end the thread. */
  stop(): void {
    this.stopped = true;
    this.block.stop();
    void this.worker.terminate();
  }
}

export class PairThreads {
  private readonly threads = new Map<number, PairThread>();
  private readonly owner: PairOwner;

  constructor(owner: PairOwner) {
    this.owner = owner;
  }

  get size(): number {
    return this.threads.size;
  }

  has(pair: number): boolean {
    return this.threads.has(pair);
  }

  /**
   * Serves queue pair `p` in a worker thread over its TAP queue's fd (the
   * main thread's `p` stays stopped meanwhile). False (and a HostError to the
   * owner) when guest memory is not SharedArrayBuffer-backed.
   */
  start(p: QueuePair, tapName: string, rxq: DeviceQueue, txq: DeviceQueue, features: bigint): boolean {
    const pair = p.pair;
    const regions = rxq.mem.regions;
    if (!regions.every((r) => r.bytes.buffer instanceof SharedArrayBuffer)) {
      const why = `queue pair ${pair} cannot run in a worker: guest memory is not a SharedArrayBuffer; serving it on this thread`;
      this.owner.hostError(new HostError(why, 'ERR_WORKER_MEMORY_NOT_SHARED', 0, ''));
      return false;
    }
    const block = new ControlBlock();
    const data: PairWorkerData = {
      pair,
      fd: p.tap.fd,
      tapName,
      regions: regions.map((r) => ({ gpa: r.gpa, buffer: r.bytes.buffer as SharedArrayBuffer, byteOffset: r.bytes.byteOffset, byteLength: r.bytes.byteLength })),
      rx: { ...rxq.addresses },
      tx: { ...txq.addresses },
      features: features.toString(),
      settings: p.settings,
      filter: p.filter.state(),
      linkUp: p.linkUp,
      control: block.buffer,
      metrics: new SharedArrayBuffer(8 * NetMetrics.SIZE),
    };
    this.threads.set(pair, new PairThread(data, block, this.owner));
    return true;
  }

  /** Hands a kick of virtqueue `index` to the pair's thread; false when the pair is not in one. */
  kick(index: number): boolean {
    const t = this.threads.get(index >>> 1);
    if (t === undefined) return false;
    t.post({ kick: index });
    return true;
  }

  /** The filter changed: every thread's copy takes the new state. */
  setFilter(filter: RxFilter): void {
    if (this.threads.size === 0) return;
    const state = filter.state();
    for (const t of this.threads.values()) t.post({ filter: state });
  }

  /** The device's link went up or down: every thread's pair hears it. */
  setLinkUp(up: boolean): void {
    for (const t of this.threads.values()) t.post({ linkUp: up });
  }

  /** Stops every thread before the rings can change; their counts are added to `into`. */
  stopAll(into: NetMetrics): void {
    for (const t of this.threads.values()) {
      t.stop();
      into.add(t.metrics);
    }
    this.threads.clear();
  }

  /** Adds every running thread's counts to `into`. */
  addMetrics(into: NetMetrics): void {
    for (const t of this.threads.values()) into.add(t.metrics);
  }
}

// The worker runs pair-worker.js from dist, or pair-worker.ts through tsx when
// the library itself runs from source (tests, scripts).
function spawnPairWorker(data: PairWorkerData): Worker {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    const tsx = import.meta.resolve('tsx/esm/api');
    const entry = new URL('./pair-worker.ts', here).href;
    const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
    return new Worker(code, { eval: true, workerData: data });
  }
  return new Worker(new URL('./pair-worker.js', here), { workerData: data });
}
