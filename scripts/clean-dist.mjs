#!/usr/bin/env node
// Before packing: dist/ is emptied, so that the package holds only what this
// tree's tsc writes, never a module left over from an older tree.
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

rmSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'dist'), { recursive: true, force: true });
