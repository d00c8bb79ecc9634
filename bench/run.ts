// `npm run bench [-- SUITE...] [--seconds S] [--reps N] [--chains N] [--soak S]`: runs benchmark
// suites (all by default) with a progress line, prints a table per suite and
// writes bench/results/<suite>.json; then bench/results/summary.md, the charts
// in bench/results/charts/ and the README's performance section, from every
// suite's latest JSON. `npm run bench -- report` only remakes those.
// Suites that need a TAP run inside a network namespace made for the run.
import { parseArgs } from 'node:util';

import { canMakeNetns, insideNetns, runInNetns } from '../scripts/netns.mjs';
import { Progress } from './lib/progress.js';
import { printTable, type Row, writeSuite } from './lib/report.js';
import { writeReport } from './lib/summary.js';
import { runGuestBench } from './guest.js';
import { runNetBench } from './net.js';
import { runObserveBench } from './observe.js';
import { runRingBench } from './ring.js';
import { runTapBench } from './tap.js';

let bar: Progress | null = null;
const progress = (m: string) => bar?.step(m);

const SUITES: Record<string, { needsTap: boolean; run: (o: { seconds: number; reps: number; chains: number; soak: number }) => Promise<Row[]> }> = {
  ring: {
    needsTap: false,
    run: async (o) => runRingBench({ chains: o.chains, reps: o.reps, progress }),
  },
  net: {
    needsTap: true,
    run: (o) => runNetBench({ ...o, progress }),
  },
  guest: {
    needsTap: true,
    run: (o) => runGuestBench({ seconds: o.seconds, reps: Math.min(o.reps, 2), progress }),
  },
  tap: {
    needsTap: true,
    run: (o) => runTapBench({ ...o, sizes: [64, 1500], progress }),
  },
  observe: {
    needsTap: true,
    run: (o) => runObserveBench({ ...o, progress }),
  },
};

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    seconds: { type: 'string', default: '3' },
    reps: { type: 'string', default: '3' },
    chains: { type: 'string', default: '10000000' },
    soak: { type: 'string', default: '60' },
  },
});

const reportOnly = positionals.length === 1 && positionals[0] === 'report';
const chosen = reportOnly ? [] : positionals.length > 0 ? positionals : Object.keys(SUITES);
for (const s of chosen) {
  if (!(s in SUITES)) {
    console.error(`unknown suite "${s}"; suites: ${Object.keys(SUITES).join(', ')}`);
    process.exit(2);
  }
}
const seconds = Number(values.seconds);
const reps = Number(values.reps);
const chains = Number(values.chains);
const soak = Number(values.soak);
if (!(soak >= 5 && soak <= 3600)) {
  console.error('--soak must be from 5 to 3600 seconds');
  process.exit(2);
}
if (!Number.isInteger(chains) || chains < 1000 || chains > 1e9) {
  console.error('--chains must be an integer from 1000 to 1e9');
  process.exit(2);
}
if (!(seconds > 0 && seconds <= 60) || !Number.isInteger(reps) || reps < 1 || reps > 20) {
  console.error('--seconds must be in (0, 60] and --reps an integer from 1 to 20');
  process.exit(2);
}

if (chosen.some((s) => SUITES[s]?.needsTap) && !insideNetns()) {
  if (!canMakeNetns()) {
    console.error('virtio-tap bench: these suites need a TAP: run as root (CAP_NET_ADMIN and CAP_SYS_ADMIN)');
    process.exit(1);
  }
  process.exit(runInNetns([process.execPath, ...process.execArgv, ...process.argv.slice(1)]));
}

bar = new Progress(chosen.length);
for (const [i, s] of chosen.entries()) {
  const suite = SUITES[s];
  if (suite === undefined) continue;
  bar.suite(i, s);
  const rows = await suite.run({ seconds, reps, chains, soak });
  bar.clear();
  printTable(s, rows);
  console.log(`wrote ${writeSuite(s, rows)}`);
}
for (const f of writeReport()) console.log(`wrote ${f}`);
