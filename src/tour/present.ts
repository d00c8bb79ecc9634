// Shows the tour: each step's explanation, the ring memory (changed cells
// highlighted) and its details, pausing for Enter between steps when there
// is a terminal. Also writes each ring diagram as SVG.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { styleText } from 'node:util';

import { colorWanted } from '../util/color.js';
import { renderRingText } from './snapshot.js';
import { renderRingSvg } from './svg.js';
import { recordTour, type TourStep } from './tour.js';

export interface TourOptions {
  layouts: ('split' | 'packed')[];
  /** Wait for Enter between steps (only with a terminal). */
  pause: boolean;
  /** Write each step's ring diagram here as SVG. */
  svgDir?: string;
  out?: (line: string) => void;
}

/** The file name of a step's diagram. */
export function svgName(layout: string, step: number): string {
  return `tour-${layout}-${String(step).padStart(2, '0')}.svg`;
}

/** Writes the SVG of every step that shows a ring; returns the files written. */
export function writeTourSvgs(dir: string, layout: string, steps: TourStep[]): string[] {
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  steps.forEach((s, i) => {
    if (s.ring === undefined) return;
    const file = join(dir, svgName(layout, i + 1));
    writeFileSync(file, renderRingSvg(s.ring.snapshot, `Step ${i + 1}: ${s.title}`, s.ring.before));
    files.push(file);
  });
  return files;
}

export async function runTour(o: TourOptions): Promise<number> {
  const out = o.out ?? ((l: string) => console.log(l));
  const tty = process.stdout.isTTY === true;
  const pause = o.pause && process.stdin.isTTY === true && tty;
  const colored = colorWanted();
  const color = (k: Parameters<typeof styleText>[0], t: string) => (colored ? styleText(k, t, { validateStream: false }) : t);
  const rl = pause ? createInterface({ input: process.stdin, output: process.stdout }) : null;
  try {
    for (const layout of o.layouts) {
      const steps = await recordTour(layout);
      out(color('bold', `\n######## The ${layout} ring: one frame out of the guest, one frame in ########`));
      for (const [i, s] of steps.entries()) {
        out(`\n${color('bold', `Step ${i + 1}/${steps.length}: ${s.title}`)}  ${color('dim', `[${s.section}]`)}`);
        for (const t of s.text) if (t !== '') out(`  ${t}`);
        if (s.ring !== undefined) {
          out('');
          const mark = colored ? (c: string) => styleText(['black', 'bgYellow'], c, { validateStream: false }) + ' ' : undefined;
          for (const l of renderRingText(s.ring.snapshot, s.ring.before, mark).split('\n')) out(`    ${l}`);
          if (s.ring.before !== undefined) out(color('dim', `    (${tty ? 'highlighted' : 'marked *'}: changed since the step before)`));
        }
        if (s.detail !== undefined) for (const d of s.detail) out(`    ${d}`);
        if (rl !== null && (i < steps.length - 1 || layout !== o.layouts.at(-1))) await rl.question(color('dim', '  -- Enter for the next step --'));
      }
      if (o.svgDir !== undefined) {
        const files = writeTourSvgs(o.svgDir, layout, steps);
        out(`\nwrote ${files.length} diagrams of the ${layout} ring to ${o.svgDir}`);
      }
    }
    return 0;
  } finally {
    rl?.close();
  }
}
