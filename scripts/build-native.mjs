#!/usr/bin/env node
// Builds the native addon and the C reference loops of bench/ with node-gyp,
// against the headers of the Node.js that runs this script (no download).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');

// Node's own headers live beside its binary: <prefix>/include/node.
const prefix = resolve(dirname(process.execPath), '..');
const args = [nodeGyp, 'rebuild'];
if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${prefix}`);
} else {
  console.warn(`virtio-tap: no Node headers under ${prefix}/include/node; node-gyp will look for them itself`);
}
const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (result.status !== 0) {
  console.error('virtio-tap: building the native addon failed (needs python3, make and g++)');
  process.exit(result.status ?? 1);
}
