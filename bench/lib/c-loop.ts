// Runs bench/c/tap_loop (built by npm install) and reads its JSON report.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

import { nativeBuildDir } from '../../src/tap/binding.js';

export interface LoopResult {
  frames: number;
  bytes: number;
  seconds: number;
  errors: number;
  /** CPU seconds used (user + system). */
  cpu: number;
}

export function runC(args: string[]): Promise<LoopResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(nativeBuildDir(), 'tap_loop'), args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`tap_loop ${args.join(' ')} exited ${code}`));
      else resolve(JSON.parse(out.trim()) as LoopResult);
    });
  });
}

export function rate(r: { frames: number; seconds: number }): number {
  return r.frames / r.seconds;
}
