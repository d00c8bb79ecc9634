// The benchmark report: from suite results to a Markdown summary with
// targets judged, charts that are well-formed SVG, and the README section.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { row, type SuiteResult } from '../bench/lib/report.js';
import { writeReport } from '../bench/lib/summary.js';

const machine = { cpus: 2, kernel: '6.1.0', node: 'v20.20.2', cpuModel: 'Test CPU' };

describe('bench report', () => {
  it('judges each target, draws the charts and replaces only the README section', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-report-'));
    try {
      const results = join(dir, 'bench', 'results');
      mkdirSync(results, { recursive: true });
      const net: SuiteResult = {
        suite: 'net',
        date: '2026-11-24T06:00:00.000Z',
        machine,
        rows: [
          row('transmit 64 B', 'throughput', 950, 'frames/s', { name: 'C write() loop', value: 1000 }, { min: 0.9 }),
          row('receive 64 B, MRG_RXBUF on', 'throughput', 500, 'frames/s', { name: 'C read() loop', value: 1000 }, { min: 0.9 }),
          row('transmit 64 KB USO super-frames', 'throughput', 20, 'Gbit/s', { name: 'C', value: 10 }, { min: 0.9 }),
        ],
      };
      const guest: SuiteResult = {
        suite: 'guest',
        date: '2026-11-24T06:10:00.000Z',
        machine,
        rows: [row('guest tcp-tx', 'backend CPU per packet', 3, 'µs', { name: "QEMU's main loop", value: 4 }, { max: 0.5 })],
      };
      writeFileSync(join(results, 'net.json'), JSON.stringify(net));
      writeFileSync(join(results, 'guest.json'), JSON.stringify(guest));
      const readme = join(dir, 'README.md');
      writeFileSync(readme, 'before\n<!-- bench:start -->\nold figures\n<!-- bench:end -->\nafter\n');
      const files = writeReport(results, readme);
      expect(files.length).toBe(5);
      const md = readFileSync(join(results, 'summary.md'), 'utf8');
      expect(md).toContain('Targets met: 2 of 4.');
      expect(md).toContain('| transmit 64 B | throughput | 950.0 frames/s | C write() loop: 1.0 k frames/s | 0.95 | >= 0.9 met |');
      expect(md).toContain('| 0.50 | >= 0.9 NOT met |');
      expect(md).toContain('| 0.75 | <= 0.5 NOT met |');
      expect(md).toContain('2 CPUs (Test CPU), Linux 6.1.0, Node v20.20.2');
      const text = readFileSync(readme, 'utf8');
      expect(text.startsWith('before\n<!-- bench:start -->\n')).toBe(true);
      expect(text.endsWith('<!-- bench:end -->\nafter\n')).toBe(true);
      expect(text).not.toContain('old figures');
      expect(text).toContain('bench/results/charts/frames-per-second.svg');
      const svgs = files.filter((f) => f.endsWith('.svg'));
      const check = spawnSync('python3', ['-c', 'import sys, xml.etree.ElementTree as E\nfor f in sys.argv[1:]: E.parse(f)\nprint("ok")', ...svgs], { encoding: 'utf8' });
      expect(check.stdout.trim(), check.stderr).toBe('ok');
      // The frames chart has the two bars (and the ratio) of each net case with frames/s.
      const frames = readFileSync(join(results, 'charts', 'frames-per-second.svg'), 'utf8');
      expect(frames).toContain('0.95x');
      expect(frames).toContain('0.50x');
      expect(frames.match(/class="ours"/g)?.length).toBe(2 + 1); // two bars and the legend
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
