// `npm run bench -- observe`: what tracing and capture cost.
//   capture on vs off: transmit and receive on a TAP, writing pcapng to a
//   file (target: at least 0.8 x), and to /dev/null, which leaves the file
//   system out. Tracing on (JSON lines to a file) vs off is shown too.
//   With `--baseline DIR`: tracing and capture off, this build vs the
//   baseline build, for the virtqueue alone and for transmit on a TAP
//   (target: within 2 % of the baseline), instead of the rows above.
// Every run is a process of its own, the two sides' runs interleaved: in one
// process, each side's JIT state is shaped by the other's runs (a device that
// has captured is slower without capture afterwards).
import { join } from 'node:path';

import { rate } from './lib/c-loop.js';
import type { Row } from './lib/report.js';
import { chosen, comparedRow, interleave, THIS_TREE, type Observe, type Side } from './lib/side.js';
import type { Job, Measured } from './lib/workloads.js';
import { withBenchTap } from './net.js';

export interface ObserveBenchOptions {
  seconds: number;
  reps: number;
  chains: number;
  progress: (m: string) => void;
  /** Set: only tracing and capture off, this build vs that one. */
  baseline?: Side;
  /** Only the cases whose name contains one of these. */
  only?: string[];
}

export async function runObserveBench(o: ObserveBenchOptions): Promise<Row[]> {
  const rows: Row[] = [];
  // Best of at least 5 (7 where the margin is 2 %): finer than this machine's run-to-run noise.
  const reps = Math.max(5, o.reps);
  const offReps = Math.max(7, o.reps);

  await withBenchTap(async (t) => {
    const hdr = new Uint8Array(12);
    const txJob = (size: number, seconds = o.seconds): Job => ({ kind: 'transmit', frameFile: t.file(`observe-${size}.bin`, new Uint8Array([...hdr, ...t.udpFrame(size, false)])), seconds });
    const rxJob: Job = { kind: 'receive', seconds: o.seconds, features: { IN_ORDER: false }, sender: t.sendArgs(t.udpFrame(1500, true), o.seconds) };

    /** One row: `job` with `on` beside `job` with `off` (this tree), or beside the baseline. */
    const compare = async (c: string, job: Job, unit: string, n: number, on: Observe, off: { name: string; side: Side; observe?: Observe }, target?: { min: number }) => {
      if (!chosen(c, o.only)) return;
      const [a, b] = await interleave(
        [
          { side: THIS_TREE, job, observe: on },
          { side: off.side, job, observe: off.observe ?? {} },
        ],
        n,
        (rep) => o.progress(`observe: ${c} vs ${off.name}, run ${rep + 1}/${n}, a process each`),
      );
      const value = job.kind === 'ring' ? (r: unknown) => o.chains / (r as { seconds: number }).seconds : (r: unknown) => rate(r as Measured);
      rows.push(comparedRow(c, `throughput (best of ${n})`, unit, a!.map(value), { name: off.name, values: b!.map(value) }, 'max', target));
    };

    if (o.baseline !== undefined) {
      const off = { name: 'baseline', side: o.baseline };
      await compare('tracing and capture off: transmit 64 B', txJob(64), 'frames/s', offReps, {}, off, { min: 0.98 });
      const ring: Job = { kind: 'ring', layout: 'split', descs: 1, chains: Math.min(o.chains, 5_000_000) };
      await compare('tracing and capture off: virtqueue, split, 1 descriptor', ring, 'chains/s', offReps, {}, off, { min: 0.98 });
      return;
    }

    // Capture writes to a file, a fresh one per run; or to /dev/null, to see the packet path's share without the file system's.
    const toFile = { capture: join(t.dir, 'capture.pcapng') };
    const toNull = { capture: '/dev/null' };
    const captureOff = { name: 'capture off', side: THIS_TREE };
    for (const size of [64, 1500]) {
      await compare(`capture on: transmit ${size} B`, txJob(size), 'frames/s', reps, toFile, captureOff, { min: 0.8 });
    }
    await compare('capture to /dev/null: transmit 1500 B', txJob(1500), 'frames/s', reps, toNull, captureOff);
    await compare('capture on: receive 1500 B', rxJob, 'frames/s', reps, toFile, captureOff, { min: 0.8 });
    await compare('capture to /dev/null: receive 1500 B', rxJob, 'frames/s', reps, toNull, captureOff);
    await compare('tracing on (JSON lines to a file): transmit 64 B', txJob(64, Math.min(o.seconds, 1)), 'frames/s', 1, { trace: join(t.dir, 'trace.jsonl') }, { name: 'tracing off', side: THIS_TREE });
  });
  return rows;
}
