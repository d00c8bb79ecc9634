// `npm run bench -- ring`: the virtqueue alone, no I/O. The TypeScript driver
// adds chains, the device pops them and adds used entries, the driver reaps;
// split and packed, one- and three-descriptor chains, in batches of 32.
// Reports chains/s against the 5 M/s target and heap growth per chain.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { makeQueueRig, type RingLayout } from '../src/driver/rig.js';
import { Pop } from '../src/virtio/descriptor-chain.js';
import { PackedQueue } from '../src/virtio/packed-queue.js';
import type { DeviceQueue } from '../src/virtio/queue.js';
import { SplitQueue } from '../src/virtio/split-queue.js';
import { row, type Row } from './lib/report.js';

const TARGET = 5_000_000;
const BATCH = 32;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** Runs `chains` chains through one queue; returns the seconds taken. */
function spin(layout: RingLayout, descs: number, chains: number): { seconds: number; heapDelta: number } {
  const rig = makeQueueRig({ layout, size: 256, eventIdx: true });
  const q: DeviceQueue = layout === 'split' ? new SplitQueue(rig.mem, rig.addresses, rig.features) : new PackedQueue(rig.mem, rig.addresses, rig.features);
  const chain = q.newChain();
  const d = rig.driver;
  const buf = rig.alloc.alloc(4096);
  const round = () => {
    for (let i = 0; i < BATCH; i++) {
      d.beginChain();
      d.addSegment(buf, 12, false);
      for (let s = 1; s < descs; s++) d.addSegment(buf + 64 * s, 1500, true);
      d.commitChain(i);
    }
    d.publish();
    while (q.popChain(chain) === Pop.CHAIN) q.addUsed(chain.head, chain.writableBytes, chain.ringSlots);
    q.flushUsed();
    while (d.popUsed() >= 0);
  };
  for (let i = 0; i < 20_000; i++) round(); // warm up the JIT
  const before = heapAfterGc();
  const rounds = Math.ceil(chains / BATCH);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) round();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const heapDelta = heapAfterGc() - before;
  if (d.stats.reaped !== (rounds + 20_000) * BATCH) throw new Error(`ring bench lost chains: ${d.stats.reaped} reaped`);
  return { seconds, heapDelta };
}

/**
 * Each case runs `reps` times over `chains` chains. Throughput is the best
 * run: this loop is CPU-bound, so a noisy machine can only slow it down.
 * Heap growth is the worst run.
 */
export function runRingBench(o: { chains: number; reps: number; progress: (m: string) => void }): Row[] {
  const rows: Row[] = [];
  for (const layout of ['split', 'packed'] as const) {
    for (const descs of [1, 3]) {
      let best = 0;
      let worstHeap = -Infinity;
      for (let rep = 0; rep < o.reps; rep++) {
        o.progress(`ring ${layout}, ${descs}-descriptor chains: ${o.chains.toLocaleString()} chains, run ${rep + 1}/${o.reps}`);
        const { seconds, heapDelta } = spin(layout, descs, o.chains);
        best = Math.max(best, o.chains / seconds);
        worstHeap = Math.max(worstHeap, heapDelta / o.chains);
      }
      const c = `${layout} ${descs}-desc`;
      rows.push(row(c, `throughput (best of ${o.reps})`, best, 'chains/s', { name: 'target', value: TARGET }, { min: 1 }));
      rows.push(row(c, `heap growth (worst of ${o.reps})`, worstHeap, 'bytes/chain'));
    }
  }
  return rows;
}
