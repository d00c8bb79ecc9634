// Memory hot-added to a running guest (QEMU: a memfd DIMM over QMP) reaches
// the back-end as ADD_MEM_REG (CONFIGURE_MEM_SLOTS) while a TCP stream runs;
// the guest onlines the new memory and its virtio_net then posts buffers
// there, which the back-end reads and fills (the trace shows descriptors at
// the DIMM's guest-physical addresses).
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, expect, it } from 'vitest';

import { vhostUserNetDevice } from '../src/cli/vhost-user-device.js';
import { Tap } from '../src/tap/tap.js';
import { Tracer } from '../src/trace/trace.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { bootGuest, buildGuest, describeGuest, iperfMbits, iperfServer } from './helpers/guest.js';

/** Runs QMP commands in order on QEMU's socket; resolves with their returns (rejects on an error). */
async function qmp(path: string, commands: [string, object?][]): Promise<unknown[]> {
  const sock = connect(path);
  const lines: string[] = [];
  let waiting: (() => void) | null = null;
  let buf = '';
  sock.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    waiting?.();
  });
  const next = async (): Promise<Record<string, unknown>> => {
    for (const end = Date.now() + 10_000; ; ) {
      const line = lines.shift();
      if (line !== undefined) return JSON.parse(line) as Record<string, unknown>;
      if (Date.now() > end) throw new Error('QMP: no answer');
      await new Promise<void>((r) => {
        waiting = r;
        setTimeout(r, 100);
      });
    }
  };
  try {
    await next(); // the greeting
    const out: unknown[] = [];
    for (const [execute, args] of [['qmp_capabilities'] as [string], ...commands]) {
      sock.write(`${JSON.stringify(args === undefined ? { execute } : { execute, arguments: args })}\n`);
      for (;;) {
        const r = await next();
        if ('error' in r) throw new Error(`QMP ${execute}: ${JSON.stringify(r.error)}`);
        if ('return' in r) {
          out.push(r.return);
          break;
        }
      }
    }
    return out.slice(1);
  } finally {
    sock.destroy();
  }
}

describeGuest('memory hot-added to a running guest (CONFIGURE_MEM_SLOTS)', () => {
  let guestDir: string;
  let dir: string;
  beforeAll(() => {
    guestDir = buildGuest();
    dir = mkdtempSync(join(tmpdir(), 'vt-hotplug-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a 256 MiB DIMM added over QMP during an iperf3 stream: ADD_MEM_REG, the stream goes on, and the guest then uses buffers in the DIMM', async () => {
    const tap = Tap.open({ name: 'vth%d', vnetHdr: true });
    tap.setUp();
    tap.setIpv4('198.18.174.1', 24);
    const trace = new Tracer();
    let dimm = -1; // its guest-physical base, once added
    const inDimm = { rx: 0, tx: 0 };
    trace.subscribe((e) => {
      if (e.type !== 'pop' || dimm < 0) return;
      if (e.descriptors.some((d) => d.addr >= dimm)) inDimm[e.queue === 0 ? 'rx' : 'tx']++;
    });
    const logs: string[] = [];
    const socket = join(dir, 'vu.sock');
    const backend = new VhostUserBackend({ socketPath: socket, device: vhostUserNetDevice({ tap, trace }), log: (l) => logs.push(l), logRequests: true });
    const errors: Error[] = [];
    backend.on('error', (e: Error) => errors.push(e));
    backend.start();
    const server = iperfServer('198.18.174.1', 5201);
    const qmpPath = join(dir, 'qmp.sock');
    let added: Promise<unknown[]> | null = null;
    try {
      const run = await bootGuest(guestDir, socket, '198.18.174.2', '198.18.174.1', '', {
        hotplug: { port: 5201, seconds: 8, qmp: qmpPath },
        timeoutMs: 120_000,
        onOutput: (out) => {
          if (added !== null || !out.includes('VT-HOTPLUG-READY')) return;
          // Two seconds into the stream.
          added = new Promise((r) => setTimeout(r, 2000)).then(async () => {
            const [, , devices] = await qmp(qmpPath, [
              ['object-add', { 'qom-type': 'memory-backend-memfd', id: 'm1', size: 256 << 20, share: true }],
              ['device_add', { driver: 'pc-dimm', id: 'd1', memdev: 'm1' }],
              ['query-memory-devices'],
            ]);
            dimm = (devices as { data: { addr: number } }[])[0]!.data.addr;
            return devices as unknown[];
          });
        },
      });
      expect(added, run.output).not.toBeNull();
      await added;
      expect(run.output).toContain('VT-DONE');
      expect(run.output).toMatch(/VT-MEM-ONLINE [1-9]/);
      for (const marker of ['VT-HOTPLUG-STREAM 0', 'VT-HOTPLUG-RX', 'VT-HOTPLUG-TX']) expect(iperfMbits(run.output, marker), `${marker} in:\n${run.output}`).toBeGreaterThan(1);
      // QEMU 7.2 with CONFIGURE_MEM_SLOTS: the boot memory and then the DIMM as ADD_MEM_REG, no SET_MEM_TABLE.
      expect(logs).toContain('request GET_MAX_MEM_SLOTS');
      expect(logs.filter((l) => l.startsWith('request ADD_MEM_REG')).length).toBe(2);
      expect(logs.some((l) => l.startsWith('request SET_MEM_TABLE'))).toBe(false);
      expect(logs.filter((l) => l.startsWith('refused'))).toEqual([]);
      console.log(`DIMM at 0x${dimm.toString(16)}: chains with buffers in it, receive ${inDimm.rx}, transmit ${inDimm.tx}; ${run.output.match(/VT-MEM-ONLINE.*/)?.[0]}`);
      expect(inDimm.rx).toBeGreaterThan(0);
      expect(inDimm.tx).toBeGreaterThan(0);
      expect(errors).toEqual([]);
    } finally {
      server.stop();
      backend.close();
      tap.close();
    }
  }, 180_000);
});
