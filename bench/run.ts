// `npm run bench [-- SUITE...] [OPTIONS]`: runs benchmark suites (all by
// default) with a progress line, prints a table per suite and writes
// bench/results/<suite>.json; then bench/results/summary.md, the charts in
// bench/results/charts/ and the README's performance section, from every
// suite's latest JSON. `npm run bench -- report` only remakes those.
// `--baseline DIR` measures this build against another checkout instead
// (ring, net, observe), into bench/results/baseline-<suite>.json only.
// Suites that need a TAP run inside a network namespace made for the run.
import { parseArgs } from 'node:util';

import { canMakeNetns, insideNetns, runInNetns } from '../scripts/netns.mjs';
import { Progress } from './lib/progress.js';
import { printTable, type Row, writeSuite } from './lib/report.js';
import { baselineSide, buildInfo, THIS_TREE, type Side } from './lib/side.js';

let bar: Progress | null = null;
const progress = (m: string) => bar?.step(m);

interface SuiteOptions {
  seconds: number;
  reps: number;
  chains: number;
  soak: number;
  baseline?: Side;
  only?: string[];
}

// Each suite is imported when it runs: usage and option errors load nothing of src/.
const SUITES: Record<string, { needsTap: boolean; run: (o: SuiteOptions) => Promise<Row[]> }> = {
  ring: {
    needsTap: false,
    run: async (o) => (await import('./ring.js')).runRingBench({ ...o, progress }),
  },
  net: {
    needsTap: true,
    run: async (o) => (await import('./net.js')).runNetBench({ ...o, progress }),
  },
  guest: {
    needsTap: true,
    run: async (o) => (await import('./guest.js')).runGuestBench({ seconds: o.seconds, reps: Math.min(o.reps, 2), progress }),
  },
  tap: {
    needsTap: true,
    run: async (o) => (await import('./tap.js')).runTapBench({ ...o, sizes: [64, 1500], progress }),
  },
  observe: {
    needsTap: true,
    run: async (o) => (await import('./observe.js')).runObserveBench({ ...o, progress }),
  },
};

const USAGE = `usage: npm run bench [-- SUITE...] [OPTIONS]
       npm run bench -- report

Suites: ${Object.keys(SUITES).join(', ')} (all by default). Results go to
bench/results/<suite>.json, then summary.md, the charts and the README's
performance section are remade from them; \`report\` only remakes those.

Options:
  --seconds S      seconds per timed run on a TAP (default 3)
  --reps N         repetitions per case (default 3; at least 5 with --baseline)
  --chains N       chains per ring run (default 10000000)
  --soak S         seconds of the net suite's memory soak (default 60)
  --baseline DIR   measure this build against the checkout in DIR (with its own
                   node_modules and native build): ring, net and observe only
                   (those three by default), each run a process of its own,
                   the two builds interleaved, best of N with each side's
                   spread; writes bench/results/baseline-<suite>.json only
  --only TEXT      with --baseline: only the cases whose name contains TEXT
                   (repeatable), e.g. --only "transmit 64 B"
  -h, --help       this text

The net, tap, guest and observe suites need root: they make a network
namespace of their own.`;

const BASELINE_SUITES = ['ring', 'net', 'observe'];

function usageError(message: string): never {
  console.error(`virtio-tap bench: ${message} (npm run bench -- --help)`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      seconds: { type: 'string', default: '3' },
      reps: { type: 'string', default: '3' },
      chains: { type: 'string', default: '10000000' },
      soak: { type: 'string', default: '60' },
      baseline: { type: 'string' },
      only: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (e) {
  const err = e as Error & { code?: string };
  const unknown = /^Unknown option '([^']+)'/.exec(err.message);
  usageError(unknown !== null ? `unknown option ${unknown[1]}` : (err.message.split('\n')[0] ?? String(e)));
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

const baselineDir = values.baseline;
const reportOnly = positionals.length === 1 && positionals[0] === 'report';
const chosen = reportOnly ? [] : positionals.length > 0 ? positionals : baselineDir !== undefined ? BASELINE_SUITES : Object.keys(SUITES);
for (const s of chosen) {
  if (!(s in SUITES)) usageError(`unknown suite "${s}"; suites: ${Object.keys(SUITES).join(', ')}`);
}
if (baselineDir !== undefined) {
  if (reportOnly) usageError('--baseline measures; `report` does not');
  const other = chosen.find((s) => !BASELINE_SUITES.includes(s));
  if (other !== undefined) usageError(`--baseline is for the ${BASELINE_SUITES.join(', ')} suites, not ${other}`);
} else if (values.only !== undefined) {
  usageError('--only is for runs with --baseline');
}
const seconds = Number(values.seconds);
const reps = baselineDir !== undefined ? Math.max(5, Number(values.reps)) : Number(values.reps);
const chains = Number(values.chains);
const soak = Number(values.soak);
if (!(soak >= 5 && soak <= 3600)) usageError('--soak must be from 5 to 3600 seconds');
if (!Number.isInteger(chains) || chains < 1000 || chains > 1e9) usageError('--chains must be an integer from 1000 to 1e9');
if (!(seconds > 0 && seconds <= 60) || !Number.isInteger(reps) || reps < 1 || reps > 20) {
  usageError('--seconds must be in (0, 60] and --reps an integer from 1 to 20');
}
let baseline: Side | undefined;
try {
  baseline = baselineDir !== undefined ? baselineSide(baselineDir) : undefined;
} catch (e) {
  console.error(`virtio-tap bench: ${(e as Error).message}`);
  process.exit(1);
}

if (chosen.some((s) => SUITES[s]?.needsTap) && !insideNetns()) {
  if (!canMakeNetns()) {
    console.error('virtio-tap bench: these suites need a TAP: run as root (CAP_NET_ADMIN and CAP_SYS_ADMIN)');
    process.exit(1);
  }
  process.exit(runInNetns([process.execPath, ...process.execArgv, ...process.argv.slice(1)]));
}

const builds = baseline !== undefined ? { this: buildInfo(THIS_TREE), baseline: buildInfo(baseline) } : undefined;
const buildName = (b: { dir: string; commit: string | null }) => `${b.dir}${b.commit !== null ? ` (${b.commit})` : ''}`;
bar = new Progress(chosen.length);
for (const [i, s] of chosen.entries()) {
  const suite = SUITES[s];
  if (suite === undefined) continue;
  bar.suite(i, s);
  const rows = await suite.run({ seconds, reps, chains, soak, ...(baseline !== undefined ? { baseline } : {}), ...(values.only !== undefined ? { only: values.only } : {}) });
  bar.clear();
  printTable(s, rows, builds !== undefined ? `this build, ${buildName(builds.this)}, vs the baseline, ${buildName(builds.baseline)}` : undefined);
  console.log(`wrote ${writeSuite(s, rows, builds)}`);
}
// A comparison with a baseline is a one-off: the summary, charts and README stay as they are.
if (builds === undefined) {
  const { writeReport } = await import('./lib/summary.js');
  for (const f of writeReport()) console.log(`wrote ${f}`);
}
