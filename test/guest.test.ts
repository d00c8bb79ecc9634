// A real guest: QEMU (software emulation) boots Debian's cloud kernel, whose
// own virtio_net driver reaches virtio-tap's vhost-user back-end on a TAP in
// this run's network namespace, and pings the host.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, expect, it } from 'vitest';

import { Tap } from '../src/tap/tap.js';
import { vhostUserNetDevice } from '../src/cli/vhost-user-device.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { PcapWriter } from '../src/net/pcap.js';
import { Tracer, type TraceEvent } from '../src/trace/trace.js';
import { tsharkFields } from './helpers/tshark.js';
import { bootGuest, buildGuest, describeGuest, iperfMbits, iperfServer } from './helpers/guest.js';

describeGuest('a Linux guest through the vhost-user back-end', () => {
  let guestDir: string;
  let dir: string;
  beforeAll(() => {
    guestDir = buildGuest();
    dir = mkdtempSync(join(tmpdir(), 'vt-guest-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function start(subnet: number, queues = 1, see: { trace?: Tracer; capture?: PcapWriter } = {}, txTimerMs = 0) {
    const tap = Tap.open({ name: 'vtg%d', vnetHdr: true, queues, multiQueue: queues > 1 });
    tap.setUp();
    tap.setIpv4(`198.18.${subnet}.1`, 24);
    const logs: string[] = [];
    const socket = join(dir, `vu-${subnet}.sock`);
    const backend = new VhostUserBackend({ socketPath: socket, device: vhostUserNetDevice({ tap, txTimerMs, ...see }), log: (l) => logs.push(l) });
    const errors: Error[] = [];
    backend.on('error', (e: Error) => errors.push(e));
    backend.start();
    return {
      socket,
      logs,
      errors,
      backend,
      boot: (opts = '', extra: { killOn?: string; iperfPort?: number; queuePairs?: number } = {}) =>
        bootGuest(guestDir, socket, `198.18.${subnet}.2`, `198.18.${subnet}.1`, opts, extra),
      close() {
        backend.close();
        tap.close();
      },
    };
  }

  // [name, QEMU device options, ring layout, the back-end's transmit timer (ms)]
  const VARIANTS: [string, string, string, number?][] = [
    ['default features', '', 'split'],
    ['default features, a 1 ms transmit timer (the command\'s default)', '', 'split', 1],
    ['packed=on', 'packed=on', 'packed'],
    ['mrg_rxbuf=off', 'mrg_rxbuf=off', 'split'],
    [
      'all offloads off',
      'csum=off,guest_csum=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off',
      'split',
    ],
  ];
  let subnet = 140;
  for (const [name, opts, layout, txTimerMs] of VARIANTS) {
    const net = subnet++;
    it(`the guest's virtio_net comes up, pings the host, and runs iperf3 TCP both ways and UDP (${name})`, async () => {
      const s = start(net, 1, {}, txTimerMs ?? 0);
      const server = iperfServer(`198.18.${net}.1`, 5201);
      try {
        const run = await s.boot(opts, { iperfPort: 5201 });
        expect(run.output).toContain('VT-ETH0');
        expect(run.output).toContain('VT-PING-OK');
        expect(run.output).not.toContain('VT-IPERF-ERROR');
        for (const marker of ['VT-TCP-TX', 'VT-TCP-RX', 'VT-UDP-TX']) {
          const mbits = iperfMbits(run.output, marker);
          expect(mbits, `${marker} in:\n${run.output}`).not.toBeNull();
          expect(mbits!).toBeGreaterThan(1);
        }
        expect(s.logs).toContain(`device started: 2 rings, ${layout}`);
        expect(s.errors).toEqual([]);
        expect(s.backend.device.metrics.dropped).toBe(0);
      } finally {
        server.stop();
        s.close();
      }
    }, 150_000);
  }

  it('a capture and a trace of a real guest: tshark finds its ICMP echo with the host; the trace shows its rings at work', async () => {
    const pcap = join(dir, 'guest.pcapng');
    const capture = new PcapWriter(pcap);
    const trace = new Tracer();
    const counts = new Map<string, number>();
    let features: TraceEvent | undefined;
    trace.subscribe((e) => {
      counts.set(e.type, (counts.get(e.type) ?? 0) + 1);
      if (e.type === 'features') features = structuredClone(e);
    });
    const s = start(157, 1, { trace, capture });
    try {
      const run = await s.boot();
      expect(run.output).toContain('VT-PING-OK');
      s.close();
      await capture.close();
      const m = s.backend.device.metrics;
      const rows = tsharkFields(pcap, ['frame.number', 'icmp.type', 'ip.src', 'frame.comment']);
      expect(rows.length).toBe(m.txPackets + m.rxPackets);
      const requests = rows.filter((f) => f[1] === '8' && f[2] === '198.18.157.2');
      const replies = rows.filter((f) => f[1] === '0' && f[2] === '198.18.157.1');
      expect(requests.length).toBe(3);
      expect(replies.length).toBe(3);
      expect(requests.every((f) => f[3]!.includes('from guest, transmitq 1'))).toBe(true);
      expect(replies.every((f) => f[3]!.includes('to guest, receiveq 0'))).toBe(true);
      // QEMU negotiates (vhost-user SET_FEATURES) and starts the rings; then the data path runs.
      expect(features?.type === 'features' && features.accepted).toBe(true);
      expect(counts.get('queue_ready')).toBeGreaterThanOrEqual(2);
      expect(counts.get('tap_write')).toBe(m.txPackets);
      expect(counts.get('tap_read')).toBe(m.rxPackets);
      for (const t of ['kick', 'pop', 'used', 'notify_decision', 'interrupt']) expect(counts.get(t) ?? 0, t).toBeGreaterThan(0);
    } finally {
      s.close();
      await capture.close();
    }
  }, 150_000);

  it('mq=on with 2 queue pairs: the guest enables both, and both carry traffic', async () => {
    const s = start(155, 2);
    const server = iperfServer('198.18.155.1', 5201);
    try {
      const run = await s.boot('', { iperfPort: 5201, queuePairs: 2 });
      expect(run.output).toContain('VT-MQ-OK 2');
      expect(run.output).toContain('VT-PING-OK');
      for (const marker of ['VT-TCP-TX', 'VT-TCP-RX', 'VT-UDP-TX']) expect(iperfMbits(run.output, marker), run.output).toBeGreaterThan(1);
      expect(s.logs).toContain('queue pair 1 started');
      // QEMU 7.2 adds each memory region once per queue pair (ADD_MEM_REG): counted, not refused.
      expect(s.logs.filter((l) => l.startsWith('refused'))).toEqual([]);
      const chains = (ring: number) => Number(/: (\d+) chains/.exec(s.logs.find((l) => l.startsWith(`ring ${ring} stopped`)) ?? '')?.[1] ?? 0);
      // Pair 1's receive ring filled (the TAP spreads flows over its queues), and its transmit ring sent.
      expect(chains(2)).toBeGreaterThan(0);
      expect(chains(3)).toBeGreaterThan(0);
      expect(s.errors).toEqual([]);
    } finally {
      server.stop();
      s.close();
    }
  }, 150_000);

  it('QEMU is killed and started again while the back-end keeps running: the second guest works too', async () => {
    const s = start(150);
    try {
      const first = await s.boot('', { killOn: 'VT-PING-OK' }); // SIGKILL as soon as it has pinged
      expect(first.output).toContain('VT-PING-OK');
      expect(first.code).toBeNull(); // killed, not exited
      const second = await s.boot();
      expect(second.output).toContain('VT-PING-OK');
      expect(s.logs.filter((l) => l === 'front-end connected').length).toBe(2);
      expect(s.logs.filter((l) => l.startsWith('front-end gone')).length).toBe(2);
    } finally {
      s.close();
    }
  }, 240_000);
});
