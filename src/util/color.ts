// Whether to colour output: only on a terminal that is not TERM=dumb, and
// never when NO_COLOR is set to anything but the empty string
// (https://no-color.org). Callers pass styleText { validateStream: false }:
// this is the one decision.
import type { WriteStream } from 'node:tty';

export function colorWanted(stream: Pick<WriteStream, 'isTTY'> = process.stdout): boolean {
  const noColor = process.env['NO_COLOR'];
  return stream.isTTY === true && process.env['TERM'] !== 'dumb' && (noColor === undefined || noColor === '');
}
