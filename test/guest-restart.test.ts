// The back-end dies (SIGKILL) in the middle of a guest's TCP stream and is
// started again; QEMU, reconnecting (-chardev ...,reconnect=1), sets the
// device up again on the new back-end and the guest's stream resumes on its
// own, with no reboot. Split and packed rings. The host's iperf3 server
// reports every half second; the run of empty half seconds is the gap the
// guest saw, printed for the report.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { afterAll, beforeAll, expect, it } from 'vitest';

import { Tap } from '../src/tap/tap.js';
import { bootGuest, buildGuest, describeGuest } from './helpers/guest.js';

const root = resolve(import.meta.dirname, '..');

/** The back-end command in a process of its own, so that it can be killed outright. */
function backend(socket: string, tap: string, client: boolean): { proc: ChildProcess; out: () => string; until: (text: string, ms: number) => Promise<void> } {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'vhost-user', '--socket', socket, '--tap', tap, '--tx-timer', '0', '--log-requests', ...(client ? ['--client'] : [])], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const until = async (text: string, ms: number): Promise<void> => {
    for (const end = Date.now() + ms; !out.includes(text); ) {
      if (Date.now() > end || proc.exitCode !== null) throw new Error(`the back-end did not say "${text}":\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { proc, out: () => out, until };
}

/** The server's half-second intervals: [start, end, MBytes]. */
function intervals(server: string): [number, number, number][] {
  const rows: [number, number, number][] = [];
  for (const m of server.matchAll(/\]\s+([\d.]+)-([\d.]+)\s+sec\s+([\d.]+) (K|M|G)?Bytes\s+[\d.]+ \w+\/sec\s*$/gm)) {
    const scale = m[4] === 'G' ? 1024 : m[4] === 'K' ? 1 / 1024 : m[4] === 'M' ? 1 : 1 / (1024 * 1024);
    rows.push([Number(m[1]), Number(m[2]), Number(m[3]) * scale]);
  }
  return rows.filter(([a, b]) => b - a < 1); // not the summary line
}

describeGuest('the back-end restarted under a running guest', () => {
  let guestDir: string;
  let dir: string;
  beforeAll(() => {
    guestDir = buildGuest();
    dir = mkdtempSync(join(tmpdir(), 'vt-restart-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // [ring layout, QEMU device options, subnet, the back-end connects to QEMU (--client) rather than listening]
  const VARIANTS = [
    ['split', '', 175, false],
    ['packed', 'packed=on', 176, false],
    ['packed', 'packed=on', 177, true],
  ] as const;
  for (const [layout, opts, subnet, client] of VARIANTS) {
    const how = client ? 'the back-end connects (--client) to QEMU listening' : 'QEMU reconnects';
    it(`${layout} ring, ${how}: SIGKILL during an iperf3 stream, started again; the stream resumes`, async () => {
      // A persistent TAP that outlives each back-end: the new one attaches to it, addresses and all.
      const made = Tap.open({ name: 'vtr%d', vnetHdr: true });
      const tapName = made.name;
      made.setPersistent(true);
      made.setUp();
      made.setIpv4(`198.18.${subnet}.1`, 24);
      made.close();
      const socket = join(dir, `vu-${subnet}.sock`);
      let server = '';
      const srv = spawn('iperf3', ['-s', '-1', '-B', `198.18.${subnet}.1`, '-p', '5201', '-i', '0.5', '-f', 'm', '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] });
      srv.stdout.on('data', (d: Buffer) => (server += d.toString()));
      const first = backend(socket, tapName, client);
      const later: { second?: ReturnType<typeof backend> } = {};
      let restarting: Promise<void> | null = null;
      try {
        await first.until(client ? 'vhost-user back-end for' : 'listening on', 30_000);
        const run = await bootGuest(guestDir, socket, `198.18.${subnet}.2`, `198.18.${subnet}.1`, opts, {
          stream: { port: 5201, seconds: 16 },
          reconnect: client ? 'server' : 'client',
          timeoutMs: 120_000,
          onOutput: (out) => {
            if (restarting !== null || !out.includes('VT-STREAM-BEGIN')) return;
            // Four seconds into the stream: killed as a crash would, and a new back-end at once.
            restarting = new Promise((res) => setTimeout(res, 4000)).then(async () => {
              first.proc.kill('SIGKILL');
              await new Promise((res) => first.proc.once('exit', res));
              later.second = backend(socket, tapName, client);
              await later.second.until('device started', 30_000);
            });
          },
        });
        expect(restarting, run.output).not.toBeNull();
        await restarting;
        const log = later.second!.out();
        expect(run.output).toMatch(/VT-STREAM-END 0 .*receiver/);
        expect(run.output).toContain('VT-DONE'); // the same guest, no reboot
        expect(first.proc.signalCode).toBe('SIGKILL');
        // What QEMU 7.2 sends the new back-end: the whole set-up again, each ring's base included.
        let from = 0;
        for (const r of ['GET_FEATURES', 'GET_MAX_MEM_SLOTS', 'SET_OWNER', 'SET_FEATURES', 'ADD_MEM_REG', 'SET_VRING_BASE ring 0', 'SET_VRING_KICK', 'SET_VRING_BASE ring 1', 'SET_VRING_KICK']) {
          from = log.indexOf(`request ${r}`, from);
          expect(from, `${r} in order in:\n${log}`).toBeGreaterThanOrEqual(0);
        }
        expect(log).toContain(`device started: 2 rings, ${layout}`);
        // Split: QEMU restores the position from the used index in guest memory. Packed: it cannot, and the back-end reads the ring.
        if (layout === 'split') expect(log).not.toContain('resuming at');
        else expect(log).toMatch(/ring 0: the front-end's base \(used index 0 wrap 1\) is not where the ring stands; resuming at/);
        const rows = intervals(server);
        const empty = rows.filter(([, , mb]) => mb === 0);
        const gap = empty.reduce((sum, [a, b]) => sum + (b - a), 0);
        // The traffic lost to the restart, in seconds at the stream's median rate (finer than whole empty half seconds).
        const rates = rows.map(([a, b, mb]) => mb / (b - a)).sort((x, y) => x - y);
        const median = rates[Math.floor(rates.length / 2)]!;
        const deficit = rows.reduce((sum, [a, b, mb]) => sum + Math.max(0, median * (b - a) - mb) / median, 0);
        const lastEmpty = empty.length === 0 ? -1 : rows.indexOf(empty[empty.length - 1]!);
        const after = rows.slice(lastEmpty + 1).filter(([, , mb]) => mb > 1);
        console.log(
          `${layout} ring, ${how}: the guest's stream had ${gap.toFixed(1)} s with no bytes (half seconds at ${empty.map(([a]) => a).join(', ') || 'none'}), ` +
            `${deficit.toFixed(1)} s of traffic lost at its median rate (${(median * 8).toFixed(0)} Mbit/s), then carried ${after.reduce((sum, [, , mb]) => sum + mb, 0).toFixed(0)} MB in ${after.length} half seconds`,
        );
        expect(gap).toBeLessThan(8);
        expect(deficit).toBeLessThan(8);
        expect(after.length, server).toBeGreaterThanOrEqual(4);
      } finally {
        first.proc.kill('SIGKILL');
        later.second?.proc.kill('SIGTERM');
        srv.kill('SIGKILL');
        try {
          const t = Tap.attach(tapName, { vnetHdr: true });
          t.setPersistent(false);
          t.close();
        } catch {
          // already gone
        }
      }
    }, 180_000);
  }
});
