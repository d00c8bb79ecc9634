// `npm run bench -- ring`: the virtqueue alone, no I/O. The TypeScript driver
// adds chains, the device pops them and adds used entries, the driver reaps;
// split and packed, one- and three-descriptor chains, in batches of 32.
// Reports chains/s against the 5 M/s target and heap growth per chain.
// With a baseline build, each case runs for this build and for the baseline,
// a process per run, interleaved, and the rows set the two side by side.
import * as virtioTap from '../src/index.js';
import { row, type Row } from './lib/report.js';
import { againstBaseline, chosen, comparedRow, type Side } from './lib/side.js';
import { spinRing } from './lib/workloads.js';

const TARGET = 5_000_000;

const CASES = [
  ['split', 1],
  ['split', 3],
  ['packed', 1],
  ['packed', 3],
] as const;

export interface RingBenchOptions {
  chains: number;
  reps: number;
  progress: (m: string) => void;
  /** Set: compare with this build instead of measuring against the target. */
  baseline?: Side;
  /** Only the cases whose name contains one of these. */
  only?: string[];
}

/**
 * Each case runs `reps` times over `chains` chains. Throughput is the best
 * run: this loop is CPU-bound, so a noisy machine can only slow it down.
 * Heap growth is the worst run.
 */
export async function runRingBench(o: RingBenchOptions): Promise<Row[]> {
  const rows: Row[] = [];
  for (const [layout, descs] of CASES) {
    const c = `${layout} ${descs}-desc`;
    if (!chosen(c, o.only)) continue;
    const step = (rep: number) => o.progress(`ring ${layout}, ${descs}-descriptor chains: ${o.chains.toLocaleString()} chains, run ${rep + 1}/${o.reps}`);
    if (o.baseline !== undefined) {
      const job = { kind: 'ring', layout, descs, chains: o.chains } as const;
      const [mine, base] = await againstBaseline(o.baseline, job, o.reps, step);
      const tput = (r: { seconds: number }) => o.chains / r.seconds;
      const heap = (r: { heapDelta: number }[]) => Math.max(...r.map((x) => x.heapDelta)) / o.chains;
      rows.push(comparedRow(c, `throughput (best of ${o.reps})`, 'chains/s', mine.map(tput), { name: 'baseline', values: base.map(tput) }, 'max'));
      // Near zero either way: no spread, and no ratio unless the baseline grew.
      rows.push(row(c, `heap growth (worst of ${o.reps})`, heap(mine), 'bytes/chain', { name: 'baseline', value: heap(base) }));
      continue;
    }
    let best = 0;
    let worstHeap = -Infinity;
    for (let rep = 0; rep < o.reps; rep++) {
      step(rep);
      const { seconds, heapDelta } = spinRing(virtioTap, layout, descs, o.chains);
      best = Math.max(best, o.chains / seconds);
      worstHeap = Math.max(worstHeap, heapDelta / o.chains);
    }
    rows.push(row(c, `throughput (best of ${o.reps})`, best, 'chains/s', { name: 'target', value: TARGET }, { min: 1 }));
    rows.push(row(c, `heap growth (worst of ${o.reps})`, worstHeap, 'bytes/chain'));
  }
  return rows;
}
