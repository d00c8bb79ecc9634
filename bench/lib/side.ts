// Runs one repetition of a workload in a child process (bench/side-child.ts)
// for one side of a comparison: this tree, another state of this tree (capture
// on, say), or another checkout of virtio-tap (a baseline build, with its own
// node_modules and native addon). A process per run, so neither side's JIT
// state shapes the other's; the sides' repetitions interleaved, so the
// machine's noise falls on both alike; best of N with the spread of each side.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { tapLoopPath } from './c-loop.js';
import { row, type BuildInfo, type Row } from './report.js';
import type { Job, ResultOf } from './workloads.js';

const benchDir = resolve(import.meta.dirname, '..');

/** A checkout of virtio-tap whose src/ (through src/index.ts) a child loads. */
export interface Side {
  root: string;
  /** The native addon the child loads (VIRTIO_TAP_ADDON); unset: the checkout's loader finds its own. */
  addon?: string;
}

export const THIS_TREE: Side = { root: resolve(benchDir, '..') };

/** Another checkout, checked for what a child needs from it. */
export function baselineSide(dir: string): Side {
  const root = resolve(dir);
  const addon = join(root, 'build', 'Release', 'virtio_tap.node');
  const missing = [join(root, 'src', 'index.ts'), join(root, 'node_modules'), addon].filter((p) => !existsSync(p));
  if (missing.length > 0) throw new Error(`--baseline ${dir}: not a built checkout of virtio-tap (missing ${missing.join(', ')}); run \`npm ci\` there`);
  return { root, addon };
}

export function buildInfo(side: Side): BuildInfo {
  let commit: string | null = null;
  try {
    commit = execFileSync('git', ['-C', side.root, 'describe', '--always', '--dirty'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    // not a git checkout
  }
  return { dir: side.root, commit };
}

/** Options a transmit or receive run gives the device: a pcapng file, a JSON-lines trace file. */
export interface Observe {
  /** Capture to this file (removed after the run, unless /dev/null). */
  capture?: string;
  /** JSON-lines trace to this file (this tree only: it uses the command line's trace sink). */
  trace?: string;
}

/** What bench/side-child.ts reads from VT_SIDE. */
export interface ChildSpec {
  root: string;
  tapLoop: string;
  job: Job;
  observe: Observe;
}

/** One side of a comparison: a checkout, the job it runs, and what to observe while it does. */
export interface SideRun<J extends Job> {
  side: Side;
  job: J;
  observe?: Observe;
}

/** Whether a case named `name` is among those chosen (`--only`). */
export const chosen = (name: string, only: readonly string[] | undefined) => only === undefined || only.some((s) => name.includes(s));

function jobSeconds(job: Job): number {
  return job.kind === 'ring' ? 0 : job.seconds;
}

/** Runs `job` once on `side`, in a process of its own. */
export async function runOnSide<J extends Job>({ side, job, observe = {} }: SideRun<J>): Promise<ResultOf<J>> {
  const spec: ChildSpec = { root: side.root, tapLoop: await tapLoopPath(), job, observe };
  const env: NodeJS.ProcessEnv = { ...process.env, VT_SIDE: JSON.stringify(spec) };
  if (side.addon !== undefined) env['VIRTIO_TAP_ADDON'] = side.addon;
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, join(benchDir, 'side-child.ts')], { cwd: side.root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), (jobSeconds(job) + 120) * 1000);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').at(-1) ?? '';
      if (code !== 0 || !last.startsWith('{')) {
        reject(new Error(`bench child (${job.kind}, ${side.root}) exited ${signal ?? code}:\n${err}`));
        return;
      }
      if (err.trim() !== '') process.stderr.write(err);
      resolveRun(JSON.parse(last) as ResultOf<J>);
    });
  });
}

/**
 * `reps` runs of each side's job, interleaved A B, B A, A B ...: each side
 * goes first as often as the other. Returns each side's results in order.
 */
export async function interleave<J extends Job>(
  sides: readonly SideRun<J>[],
  reps: number,
  progress?: (rep: number) => void,
): Promise<ResultOf<J>[][]> {
  const results: ResultOf<J>[][] = sides.map(() => []);
  for (let r = 0; r < reps; r++) {
    progress?.(r);
    const order = sides.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) results[i]!.push(await runOnSide(sides[i]!));
  }
  return results;
}

/** `job` on this tree and on `baseline`, interleaved: [this tree's results, the baseline's]. */
export async function againstBaseline<J extends Job>(baseline: Side, job: J, reps: number, progress?: (rep: number) => void): Promise<[ResultOf<J>[], ResultOf<J>[]]> {
  const [mine, base] = await interleave(
    [
      { side: THIS_TREE, job },
      { side: baseline, job },
    ],
    reps,
    progress,
  );
  return [mine!, base!];
}

/** Which repetition a row reports: the highest (throughput, or worst growth) or the lowest (cost). */
export type Keep = 'max' | 'min';

/** The kept value of `values`, and their spread: (highest - lowest) / kept. */
export function keepOf(values: number[], keep: Keep): { value: number; spread: number } {
  const hi = Math.max(...values);
  const lo = Math.min(...values);
  const value = keep === 'max' ? hi : lo;
  return { value, spread: value !== 0 ? (hi - lo) / Math.abs(value) : 0 };
}

/** A row setting one side's repetitions beside the reference side's, each with its spread. */
export function comparedRow(
  c: string,
  metric: string,
  unit: string,
  mine: number[],
  ref: { name: string; values: number[] },
  keep: Keep,
  target?: { min?: number; max?: number },
): Row {
  const a = keepOf(mine, keep);
  const b = keepOf(ref.values, keep);
  const r = row(c, metric, a.value, unit, { name: ref.name, value: b.value }, target);
  return { ...r, spread: a.spread, reference: { name: ref.name, value: b.value, spread: b.spread } };
}
