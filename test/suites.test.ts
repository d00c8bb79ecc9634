// The unprivileged selection (test/unprivileged.json) holds only files that
// need no TAP and no guest, so running it outside the test namespace skips
// nothing.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const { files } = JSON.parse(readFileSync(join(root, 'test', 'unprivileged.json'), 'utf8')) as { files: string[] };

describe('the unprivileged test selection', () => {
  it.each(files)('%s exists and holds no privileged or guest suite', (file) => {
    expect(existsSync(join(root, file))).toBe(true);
    const text = readFileSync(join(root, file), 'utf8');
    expect(text).not.toMatch(/\bdescribe(Privileged|Guest|Uml)\s*\(/);
  });
});
