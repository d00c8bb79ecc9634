// Reads a capture back with tshark, the way a person would look at it.
import { spawnSync } from 'node:child_process';

/** One row per frame: the fields asked for, in order ('' where a frame has none). */
export function tsharkFields(file: string, fields: string[], filter?: string): string[][] {
  const args = ['-r', file, '-T', 'fields', '-E', 'separator=\t', ...fields.flatMap((f) => ['-e', f])];
  if (filter !== undefined) args.push('-Y', filter);
  const r = spawnSync('tshark', args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error !== undefined) throw new Error(`tshark could not run (install the tshark package): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`tshark failed on ${file}: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split('\t'));
}
