// The shape of every bench/results/<suite>.json, and the table printed beside it.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Row {
  case: string;
  metric: string;
  value: number;
  unit: string;
  /**
   * Over the repetitions a best-of value came from: (highest - lowest) /
   * best. Present where a row compares two sides, each run several times.
   */
  spread?: number;
  reference: { name: string; value: number; spread?: number } | null;
  /** value / reference.value, or null without a reference. */
  ratio: number | null;
  /** What the ratio must be: at least `min`, or at most `max`. */
  target?: { min?: number; max?: number };
}

/** Whether a row meets its target: true, false, or null when it has none. */
export function meets(r: Row): boolean | null {
  if (r.target === undefined || r.ratio === null) return null;
  if (r.target.min !== undefined && r.ratio < r.target.min) return false;
  if (r.target.max !== undefined && r.ratio > r.target.max) return false;
  return true;
}

export interface SuiteResult {
  suite: string;
  date: string;
  machine: { cpus: number; kernel: string; node: string; cpuModel?: string };
  /** For a run against a baseline build: the two checkouts compared. */
  builds?: { this: BuildInfo; baseline: BuildInfo };
  rows: Row[];
}

export interface BuildInfo {
  dir: string;
  /** `git describe --always --dirty` of the checkout, or null outside git. */
  commit: string | null;
}

export const resultsDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'results');

/** Results of a run against a baseline build: one-offs, kept out of the summary. */
export const BASELINE_PREFIX = 'baseline-';

export function row(c: string, metric: string, value: number, unit: string, reference?: { name: string; value: number }, target?: { min?: number; max?: number }): Row {
  return {
    case: c,
    metric,
    value,
    unit,
    reference: reference ?? null,
    ratio: reference !== undefined && reference.value > 0 ? value / reference.value : null,
    ...(target !== undefined ? { target } : {}),
  };
}

/** Writes bench/results/<suite>.json, or baseline-<suite>.json for a run against a baseline. */
export function writeSuite(suite: string, rows: Row[], builds?: SuiteResult['builds']): string {
  const result: SuiteResult = {
    suite,
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, kernel: release(), node: process.version, cpuModel: cpus()[0]?.model },
    ...(builds !== undefined ? { builds } : {}),
    rows,
  };
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `${builds !== undefined ? BASELINE_PREFIX : ''}${suite}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  return file;
}

/** The target as text, with whether it was met. */
export function targetText(r: Row): string {
  if (r.target === undefined) return '-';
  const t = r.target.min !== undefined ? `>= ${r.target.min}` : `<= ${r.target.max}`;
  const ok = meets(r);
  return ok === null ? t : `${t} ${ok ? 'met' : 'NOT met'}`;
}

export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(3)} M`;
  if (Math.abs(n) >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(Math.abs(n) < 10 ? 3 : 1);
}

function spreadText(s: number | undefined): string {
  return s === undefined ? '-' : `${(s * 100).toFixed(1)} %`;
}

/**
 * The rows as a table on stdout. Rows with spreads get a spread column for
 * each side; `title` follows the suite's name (which builds were compared).
 */
export function printTable(suite: string, rows: Row[], title?: string): void {
  const spreads = rows.some((r) => r.spread !== undefined);
  const header = ['case', 'metric', 'virtio-tap', ...(spreads ? ['spread'] : []), 'reference', 'ref value', ...(spreads ? ['ref spread'] : []), 'ratio', 'target'];
  const body = rows.map((r) => [
    r.case,
    `${r.metric} (${r.unit})`,
    fmt(r.value),
    ...(spreads ? [spreadText(r.spread)] : []),
    r.reference?.name ?? '-',
    r.reference ? fmt(r.reference.value) : '-',
    ...(spreads ? [spreadText(r.reference?.spread)] : []),
    r.ratio === null ? '-' : r.ratio.toFixed(2),
    targetText(r),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ');
  console.log(`\n${suite}${title !== undefined ? `: ${title}` : ''}`);
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
  for (const b of body) console.log(line(b));
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}
