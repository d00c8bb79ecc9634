#!/usr/bin/env node
// npm's install step. When a prebuilt addon in prebuilds/ fits this machine
// (linux-x64 or linux-arm64, glibc) and loads, there is nothing to do.
// Otherwise -- or with `npm rebuild virtio-tap --build-from-source` -- the
// addon is compiled from native/ with node-gyp (npm brings its own) against
// this Node's headers. `--from-source` (npm run build) always compiles.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { missingTools, nodeGypScript, nodeHeaders } from './native-toolchain.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function prebuildLoads() {
  if (process.env.npm_config_build_from_source === 'true' || process.argv.includes('--from-source')) return 'building from source as asked';
  // Only prebuilds/ counts here: a build/ left over from an earlier source build is rebuilt.
  process.env.PREBUILDS_ONLY = '1';
  try {
    require(require('node-gyp-build').path(root));
    return null;
  } catch (err) {
    return err.message.split('\n')[0];
  }
}

const why = prebuildLoads();
if (why === null) process.exit(0);

const fail = (what) => {
  console.error(`virtio-tap: ${why}; ${what}`);
  console.error('virtio-tap: then run `npm rebuild virtio-tap` (pnpm: `pnpm rebuild virtio-tap`)');
  process.exit(1);
};
const missing = missingTools();
if (missing.length > 0) fail(`building the addon from source needs ${missing.join(', ')} on PATH (Debian: apt-get install python3 make g++)`);
const gyp = nodeGypScript(import.meta.url);
if (gyp === null) fail('building the addon from source needs node-gyp, which npm brings: run this through npm');
const headers = nodeHeaders();
if (headers === null) fail(`no Node headers (include/node/node_api.h) under ${resolve(dirname(process.execPath), '..')}: set VIRTIO_TAP_NODEDIR to a directory holding them`);
console.log(`virtio-tap: ${why}: building the addon from source`);
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${headers}`], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) fail(`building the addon from source failed (node-gyp exited ${r.status ?? r.signal})`);
