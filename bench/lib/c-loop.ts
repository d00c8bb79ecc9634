// Runs bench/c/tap_loop (built by the bench, see c-build.ts) and reads its JSON report.
import { spawn } from 'node:child_process';

import { cProgram } from './c-build.js';

export interface LoopResult {
  frames: number;
  bytes: number;
  seconds: number;
  errors: number;
  /** CPU seconds used (user + system). */
  cpu: number;
}

let binary: string | null = null;

/**
 * Where tap_loop is: this tree's build, unless set here. A bench child
 * process running another checkout is told the path, so that it loads
 * nothing of this tree's src/.
 */
export function useTapLoop(path: string): void {
  binary = path;
}

export async function tapLoopPath(): Promise<string> {
  binary ??= cProgram('tap_loop');
  return binary;
}

export async function runC(args: string[]): Promise<LoopResult> {
  const bin = await tapLoopPath();
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
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

/** A host UDP socket that is never read, in a process of its own (tap_loop sink). */
export interface Sink {
  port: number;
  stop(): void;
}

/**
 * Starts the sink on `host`. A sink in the bench's own process would be read
 * by Node's event loop, on the thread the TypeScript device runs on, but on
 * another core while a C loop runs: an unfair share of the work.
 */
export async function startSink(host: string, maxSeconds = 3600): Promise<Sink> {
  const bin = await tapLoopPath();
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['sink', host, String(maxSeconds)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      child.stdout.off('data', onData);
      const { port } = JSON.parse(out.slice(0, nl)) as { port: number };
      resolve({ port, stop: () => child.kill('SIGKILL') });
    };
    child.stdout.on('data', onData);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`tap_loop sink ${host} exited ${code}`)));
  });
}
