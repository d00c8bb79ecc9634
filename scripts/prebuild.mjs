#!/usr/bin/env node
// Builds the prebuilt addons the package ships, from native/, into
// prebuilds/linux-<arch>/virtio_tap.napi.glibc.node (the layout node-gyp-build
// loads): linux-x64 with the machine's g++, linux-arm64 with Debian's
// g++-aarch64-linux-gnu. N-API (version 8), so one binary per architecture
// serves every Node from 22 on. Stripped, and built without debug info or
// build paths, so the same source and toolchain give the same bytes.
//   node scripts/prebuild.mjs [x64] [arm64]
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { missingTools, nodeGypScript, nodeHeaders } from './native-toolchain.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

// ELF e_machine for each architecture: the output is checked against it.
const TARGETS = {
  x64: { machine: 62, env: {}, strip: 'strip' },
  arm64: {
    machine: 183,
    env: { CC: 'aarch64-linux-gnu-gcc', CXX: 'aarch64-linux-gnu-g++', LINK: 'aarch64-linux-gnu-g++', AR: 'aarch64-linux-gnu-ar' },
    strip: 'aarch64-linux-gnu-strip',
    apt: 'g++-aarch64-linux-gnu',
  },
};

function die(message) {
  console.error(`prebuild: ${message}`);
  process.exit(1);
}

function build(arch, headers, gyp) {
  const t = TARGETS[arch];
  const env = { ...process.env, ...t.env, SOURCE_DATE_EPOCH: '0' };
  const missing = missingTools(env);
  if (missing.length > 0) die(`linux-${arch} needs ${missing.join(', ')} on PATH${t.apt ? ` (Debian: apt-get install ${t.apt})` : ''}`);
  const args = [gyp, 'rebuild', '--loglevel=warn', `--arch=${arch}`, `--nodedir=${headers}`];
  const r = spawnSync(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) die(`node-gyp failed for linux-${arch} (exit ${r.status ?? r.signal})`);
  const dir = join(root, 'prebuilds', `linux-${arch}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const out = join(dir, 'virtio_tap.napi.glibc.node');
  copyFileSync(join(root, 'build', 'Release', 'virtio_tap.node'), out);
  const s = spawnSync(t.strip, ['--strip-unneeded', out], { stdio: 'inherit' });
  if (s.status !== 0) die(`${t.strip} failed on ${out}`);
  const bytes = readFileSync(out);
  const machine = bytes.readUInt16LE(18);
  if (bytes.readUInt32BE(0) !== 0x7f454c46 || machine !== t.machine) die(`${out} is not an ELF for ${arch} (e_machine ${machine})`);
  const glibc = [...new Set(bytes.toString('latin1').match(/GLIBC_2\.\d+/g) ?? [])].sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]));
  const sha = createHash('sha256').update(bytes).digest('hex');
  console.log(`prebuilds/linux-${arch}/virtio_tap.napi.glibc.node  ${bytes.length} bytes  sha256 ${sha.slice(0, 16)}  needs glibc >= ${(glibc.at(-1) ?? 'GLIBC_2.17').slice(6)}`);
}

const headers = nodeHeaders();
if (headers === null) die('no Node headers (include/node/node_api.h, uv.h) found: set VIRTIO_TAP_NODEDIR');
const gyp = nodeGypScript(import.meta.url);
if (gyp === null) die('node-gyp not found: run `npm ci` first');
const archs = process.argv.slice(2);
for (const arch of archs.length > 0 ? archs : ['arm64', 'x64']) {
  if (!(arch in TARGETS)) die(`unknown architecture "${arch}" (known: ${Object.keys(TARGETS).join(', ')})`);
  build(arch, headers, gyp);
}
