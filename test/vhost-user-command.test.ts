// The vhost-user command as a long-running server: its log lines carry the
// time, --metrics serves Prometheus text over HTTP on the address given, and
// --fd serves an inherited, connected socket (QEMU's backend program conventions).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { afterEach, expect, it } from 'vitest';

import { describePrivileged } from './helpers/privileged.js';

const root = resolve(import.meta.dirname, '..');
const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function start(args: string[], stdio: ('ignore' | 'pipe' | Socket)[] = ['ignore', 'pipe', 'pipe']) {
  // tsx as a loader in this process (its command line would run a child of its own, taking fd 3 for IPC).
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'vhost-user', ...args], { cwd: root, stdio });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const waitFor = async (re: RegExp, ms = 20_000): Promise<RegExpExecArray> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = re.exec(out);
      if (m !== null) return m;
      if (Date.now() > deadline) throw new Error(`no ${re} in: ${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, exited, waitFor, output: () => out };
}

describePrivileged('the vhost-user command', () => {
  it('stamps each log line with an ISO time and serves --metrics on 127.0.0.1 only, until SIGINT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-cmd-'));
    dirs.push(dir);
    const s = start(['--socket', join(dir, 'vu.sock'), '--tap', 'vtcmd0', '--metrics', '127.0.0.1:0']);
    const [, port] = await s.waitFor(/metrics at http:\/\/127\.0\.0\.1:(\d+)\/metrics/);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const body = await res.text();
    expect(body).toContain('virtio_tap_packets_total{interface="vtcmd0",direction="tx"} 0');
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    s.child.kill('SIGINT');
    expect(await s.exited).toBe(0);
    const lines = s.output().split('\n').filter((l) => l !== '');
    expect(lines.length).toBeGreaterThanOrEqual(4);
    for (const line of lines) expect(line).toMatch(/^ [ ✓✗] \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /);
  });

  it('--fd N serves the connected socket it inherits, and exits 0 when the front-end closes it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-cmd-'));
    dirs.push(dir);
    const path = join(dir, 'pair.sock');
    const server = createServer();
    await new Promise<void>((r) => server.listen(path, r));
    const frontEnd = new Promise<Socket>((r) => server.once('connection', r));
    const backEnd = createConnection(path);
    await new Promise<void>((r) => backEnd.once('connect', r));
    const s = start(['--fd', '3', '--tap', 'vtcmd1'], ['ignore', 'pipe', 'pipe', backEnd]);
    backEnd.destroy(); // the child holds its own copy
    const fe = await frontEnd;
    await s.waitFor(/on fd 3/);
    // VHOST_USER_GET_FEATURES (1), version 1, no payload; the reply carries a u64.
    const reply = new Promise<Buffer>((r) => fe.once('data', r));
    fe.write(Buffer.from([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
    const r = await reply;
    expect(r.readUInt32LE(0)).toBe(1);
    expect(r.readUInt32LE(4) & 0x4).toBe(0x4); // the reply flag
    expect(r.readUInt32LE(8)).toBe(8);
    expect((r.readBigUInt64LE(12) >> 32n) & 1n).toBe(1n); // VIRTIO_F_VERSION_1
    fe.end();
    expect(await s.exited).toBe(0);
    server.close();
  });
});
