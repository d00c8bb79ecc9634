// Whether to colour output: only on a terminal, and never when NO_COLOR is
// set to anything but the empty string (https://no-color.org).
import type { WriteStream } from 'node:tty';

export function colorWanted(stream: Pick<WriteStream, 'isTTY'> = process.stdout): boolean {
  const noColor = process.env['NO_COLOR'];
  return stream.isTTY === true && (noColor === undefined || noColor === '');
}
