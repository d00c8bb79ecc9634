#!/usr/bin/env node
// After tsc: the command's entry point must be executable, since `npx
// virtio-tap` inside this package runs dist/cli/main.js directly and tsc
// writes files without the executable bit.
import { chmodSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
for (const bin of Object.values(pkg.bin ?? {})) chmodSync(join(root, bin), 0o755);
