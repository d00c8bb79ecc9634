// From bench/results/<suite>.json (not baseline-<suite>.json, a one-off
// comparison of two builds): a Markdown summary (bench/results/summary.md),
// SVG charts (bench/results/charts/), and the README's performance section
// (between its bench markers), all with the machine the figures came from.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { escapeXml } from '../../src/tour/svg.js';
import { BASELINE_PREFIX, fmt, meets, resultsDir, targetText, type Row, type SuiteResult } from './report.js';

const ORDER = ['tap', 'ring', 'net', 'guest', 'observe'];
const TITLES: Record<string, string> = {
  tap: 'TAP I/O from TypeScript beside C loops',
  ring: 'The virtqueue alone (TypeScript driver and device, no I/O)',
  net: 'The net device with the in-process driver, on a TAP, beside C loops',
  guest: 'A real Linux guest (QEMU) through the vhost-user back-end, beside QEMU\'s own TAP backend',
  observe: 'What tracing and capture cost',
};

export function readResults(dir = resultsDir): SuiteResult[] {
  if (!existsSync(dir)) return [];
  const all = readdirSync(dir)
    .filter((f) => f.endsWith('.json') && !f.startsWith(BASELINE_PREFIX))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as SuiteResult);
  const rank = (s: string) => (ORDER.includes(s) ? ORDER.indexOf(s) : ORDER.length);
  return all.sort((a, b) => rank(a.suite) - rank(b.suite));
}

function machineLine(r: SuiteResult): string {
  const m = r.machine;
  return `${m.cpus} CPUs (${m.cpuModel ?? 'unknown model'}), Linux ${m.kernel}, Node ${m.node}`;
}

function cell(v: number, unit: string): string {
  return `${fmt(v)} ${unit}`.replace(/\s+/g, ' ');
}

/** The summary as Markdown. */
export function summaryMarkdown(results: SuiteResult[], chartsPrefix = 'charts/'): string {
  const out: string[] = ['# virtio-tap benchmark summary', ''];
  const machines = new Set(results.map(machineLine));
  out.push(`Machine: ${[...machines].join('; ')}.`, '');
  out.push('Ratios are virtio-tap over the reference measured in the same run; these machines are noisy, so compare ratios, not absolute rates.', '');
  const all = results.flatMap((r) => r.rows);
  const judged = all.filter((r) => meets(r) !== null);
  out.push(`Targets met: ${judged.filter((r) => meets(r) === true).length} of ${judged.length}.`, '');
  out.push(`![frames per second](${chartsPrefix}frames-per-second.svg)`, '');
  out.push(`![Gbit/s](${chartsPrefix}gbits-per-second.svg)`, '');
  out.push(`![guest vs QEMU](${chartsPrefix}guest-vs-qemu.svg)`, '');
  for (const r of results) {
    out.push(`## ${r.suite}: ${TITLES[r.suite] ?? ''}`, '', `Run ${r.date.slice(0, 16).replace('T', ' ')} UTC on ${machineLine(r)}.`, '');
    out.push('| case | metric | virtio-tap | reference | ratio | target |', '|---|---|---|---|---|---|');
    for (const x of r.rows) {
      const ref = x.reference ? `${x.reference.name}: ${cell(x.reference.value, x.unit)}` : '-';
      out.push(`| ${x.case} | ${x.metric} | ${cell(x.value, x.unit)} | ${ref} | ${x.ratio === null ? '-' : x.ratio.toFixed(2)} | ${targetText(x)} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

interface Bar {
  group: string;
  ours: number;
  ref: number;
}

/** A grouped bar chart: virtio-tap beside its reference in each group, with the ratio above. */
export function barChart(title: string, unit: string, refName: string, bars: Bar[]): string {
  const W = Math.ceil(Math.max(520, 110 * bars.length + 100, 70 + title.length * 8.6 + 20));
  const H = 340;
  const left = 70;
  const top = 70;
  const plotH = 200;
  // Headroom above the tallest bar for its ratio.
  const max = 1.1 * Math.max(1e-9, ...bars.flatMap((b) => [b.ours, b.ref]));
  const scale = (v: number) => (v / max) * plotH;
  const gw = (W - left - 20) / Math.max(1, bars.length);
  const parts: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    parts.push(`<line x1="${left}" y1="${y}" x2="${W - 20}" y2="${y}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${y + 4}" text-anchor="end" class="axis">${escapeXml(fmt((max * i) / 4))}</text>`);
  }
  bars.forEach((b, i) => {
    const x = left + i * gw + gw * 0.15;
    const bw = gw * 0.33;
    for (const [k, v, cls] of [
      [0, b.ours, 'ours'],
      [1, b.ref, 'ref'],
    ] as const) {
      const h = scale(v);
      parts.push(`<rect x="${(x + k * bw).toFixed(1)}" y="${(top + plotH - h).toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" class="${cls}"/>`);
    }
    const ratio = b.ref > 0 ? b.ours / b.ref : 0;
    parts.push(`<text x="${(x + bw).toFixed(1)}" y="${(top + plotH - scale(Math.max(b.ours, b.ref)) - 6).toFixed(1)}" text-anchor="middle" class="ratio">${ratio.toFixed(2)}x</text>`);
    parts.push(`<text x="${(x + bw).toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle" class="axis">${escapeXml(b.group)}</text>`);
  });
  const legendY = H - 20;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`,
    '<style>.ours{fill:#2f6db5}.ref{fill:#b0b0b0}.axis{fill:#333}.ratio{fill:#000;font-weight:bold}.title{font-size:15px;font-weight:bold}</style>',
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${left}" y="24" class="title">${escapeXml(title)}</text>`,
    `<text x="${left}" y="40" class="axis">${escapeXml(unit)}; the ratio is virtio-tap over ${escapeXml(refName)}</text>`,
    ...parts,
    `<rect x="${left}" y="${legendY - 10}" width="12" height="12" class="ours"/><text x="${left + 18}" y="${legendY}">virtio-tap</text>`,
    `<rect x="${left + 110}" y="${legendY - 10}" width="12" height="12" class="ref"/><text x="${left + 128}" y="${legendY}">${escapeXml(refName)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

function find(results: SuiteResult[], suite: string, c: RegExp, metric = 'throughput'): Row | undefined {
  return results.find((r) => r.suite === suite)?.rows.find((x) => c.test(x.case) && x.metric.startsWith(metric) && x.reference !== null);
}

/** The charts' bars from the results (missing suites give no bars). */
export function chartBars(results: SuiteResult[]): { frames: Bar[]; gbits: Bar[]; guest: Bar[] } {
  const frames: Bar[] = [];
  const gbits: Bar[] = [];
  for (const size of [64, 1500]) {
    for (const [dir, re] of [
      ['TX', new RegExp(`^transmit ${size} B$`)],
      ['RX', new RegExp(`^receive ${size} B, MRG_RXBUF on$`)],
    ] as const) {
      const r = find(results, 'net', re);
      if (r?.reference) {
        frames.push({ group: `${dir} ${size} B`, ours: r.value, ref: r.reference.value });
        gbits.push({ group: `${dir} ${size} B`, ours: (r.value * size * 8) / 1e9, ref: (r.reference.value * size * 8) / 1e9 });
      }
    }
  }
  for (const [dir, re] of [
    ['TX', /^transmit 64 KB/],
    ['RX', /^receive 64 KB/],
  ] as const) {
    const r = find(results, 'net', re);
    if (r?.reference) gbits.push({ group: `${dir} 64 KB GSO`, ours: r.value, ref: r.reference.value });
  }
  const guest: Bar[] = [];
  for (const c of ['udp64-tx', 'udp64-rx', 'udp1400-tx', 'udp1400-rx', 'tcp-tx', 'tcp-rx']) {
    const r = find(results, 'guest', new RegExp(`^guest ${c}$`));
    if (r?.reference) guest.push({ group: c, ours: r.value / 1000, ref: r.reference.value / 1000 });
  }
  return { frames, gbits, guest };
}

/** Writes summary.md and the charts; replaces the README's section between the bench markers. Returns the files written. */
export function writeReport(dir = resultsDir, readme = resolve(dir, '..', '..', 'README.md')): string[] {
  const results = readResults(dir);
  const files: string[] = [];
  const charts = join(dir, 'charts');
  mkdirSync(charts, { recursive: true });
  const b = chartBars(results);
  const write = (f: string, text: string) => {
    writeFileSync(f, text);
    files.push(f);
  };
  write(join(charts, 'frames-per-second.svg'), barChart('Frames/s by frame size: the net device beside a C loop on the same TAP', 'frames/s', 'the C loop', b.frames));
  write(join(charts, 'gbits-per-second.svg'), barChart('Gbit/s by frame size: the net device beside a C loop on the same TAP', 'Gbit/s (frame bytes)', 'the C loop', b.gbits));
  write(join(charts, 'guest-vs-qemu.svg'), barChart("A QEMU guest through virtio-tap's vhost-user back-end beside QEMU's own TAP backend", 'Gbit/s (iperf3)', "QEMU's TAP backend", b.guest));
  write(join(dir, 'summary.md'), summaryMarkdown(results));
  if (existsSync(readme)) {
    const text = readFileSync(readme, 'utf8');
    const start = '<!-- bench:start -->';
    const end = '<!-- bench:end -->';
    const i = text.indexOf(start);
    const j = text.indexOf(end);
    if (i >= 0 && j > i) {
      const section = summaryMarkdown(results, 'bench/results/charts/')
        .replace(/^# virtio-tap benchmark summary\n\n/, '')
        .replace(/^## /gm, '#### ');
      writeFileSync(readme, `${text.slice(0, i + start.length)}\n${section}\n${text.slice(j)}`);
      files.push(readme);
    }
  }
  return files;
}
