// A real guest in a JavaScript VMM: v86 under Node boots Debian's i386
// kernel, whose own virtio_pci and virtio_net drive virtio-tap (virtio-pci,
// I/O BAR, INTx, split ring; the kernel decides the features) on a TAP in
// this run's network namespace. One boot (30-80 s) serves every check.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Tap } from '../src/tap/tap.js';
import { bootV86Guest, fetchFromHost, pingFromGuest, sendToHost, type V86Guest } from '../src/v86/session.js';
import { privilegedReason, requirePrivileged } from './helpers/privileged.js';

const HOST = '198.18.87.1';
const GUEST = '198.18.87.2';
const PAYLOAD = 300 * 1024;

function v86Missing(): string | null {
  try {
    createRequire(import.meta.url).resolve('v86');
  } catch {
    return 'needs the optional package v86@0.5.462 (npm install)';
  }
  if (!existsSync('/usr/share/seabios/bios.bin')) return 'needs SeaBIOS (apt-get install seabios)';
  return null;
}

const reason = privilegedReason ?? v86Missing();

function describeV86(name: string, body: () => void): void {
  if (reason === null) describe(name, body);
  else if (requirePrivileged) {
    describe(name, () => {
      it('has what it needs (VIRTIO_TAP_REQUIRE_PRIVILEGED=1)', () => {
        throw new Error(`skipped would hide this suite: ${reason}`);
      });
    });
  } else describe.skip(`${name} (skipped: ${reason})`, body);
}

describeV86('a Linux guest in v86 whose own virtio_net drives virtio-tap over virtio-pci', () => {
  let tap: Tap;
  let g: V86Guest;
  const run = async (cmd: string, timeoutMs = 30_000) => g.machine.console.run(cmd, timeoutMs);

  beforeAll(async () => {
    const dir = execFileSync('bash', [resolve(import.meta.dirname, 'guest', 'build-v86-guest.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000 }).trim();
    // Two queue pairs, so that the guest has something to ask for with ethtool -L.
    tap = Tap.open({ name: 'vt86t%d', vnetHdr: true, queues: 2, multiQueue: true });
    tap.setUp();
    tap.setIpv4(HOST, 24);
    execFileSync('sysctl', ['-qw', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]); // no host chatter in the counters
    g = await bootV86Guest({ tap, guestIp: GUEST, imageDir: dir, bootTimeoutMs: 240_000 });
    await run('echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6');
    console.log(`v86 guest up in ${(g.bootMs / 1000).toFixed(1)} s`);
  }, 900_000);

  afterAll(async () => {
    await g?.close();
    tap?.close();
  });

  it('the guest\'s virtio_net bound to the device: eth0 with its MAC, split ring, INTx', () => {
    expect(g.eth0).toBe([...g.device.mac].map((b) => b.toString(16).padStart(2, '0')).join(':'));
    expect(g.machine.console.text).toContain('0x1af4');
    expect(g.device.queues[0]?.layout).toBe('split');
    expect(g.device.running).toBe(true);
    expect(g.machine.transport.msix).toBeNull();
  });

  it('pings the host through the TAP', async () => {
    const rtt = await pingFromGuest(g, HOST, 5);
    console.log(`ping RTT min/avg/max ${rtt.min}/${rtt.avg}/${rtt.max} ms`);
    expect(rtt.max).toBeLessThan(2000);
  }, 120_000);

  it('fetches bytes over TCP from a host socket, the same SHA-256 on both sides', async () => {
    const t = await fetchFromHost(g, HOST, 5187, PAYLOAD);
    console.log(`host -> guest TCP: ${t.bytes} bytes in ${t.ms.toFixed(0)} ms (${(t.bytes / 1024 / (t.ms / 1000)).toFixed(0)} KiB/s)`);
    expect(t.bytes).toBe(PAYLOAD);
    expect(t.guestSha256).toBe(t.hostSha256);
  }, 180_000);

  it('sends bytes over TCP to a host socket, the same SHA-256 on both sides', async () => {
    const t = await sendToHost(g, HOST, 5188, PAYLOAD);
    console.log(`guest -> host TCP: ${t.bytes} bytes in ${t.ms.toFixed(0)} ms (${(t.bytes / 1024 / (t.ms / 1000)).toFixed(0)} KiB/s)`);
    expect(t.bytes).toBe(PAYLOAD);
    expect(t.hostSha256).toBe(t.guestSha256);
  }, 180_000);

  it('ip link set eth0 address goes through the control queue, and the new MAC receives', async () => {
    const r = await run('ip link set eth0 address 02:56:38:36:00:07');
    expect(r.status).toBe(0);
    expect([...g.device.mac]).toEqual([0x02, 0x56, 0x38, 0x36, 0x00, 0x07]);
    execFileSync('ip', ['neigh', 'flush', 'dev', tap.name]);
    await pingFromGuest(g, HOST, 2); // the host's replies go to the new MAC, which the device's filter now takes
  }, 120_000);

  it('ethtool -L asks for the second queue pair through the control queue', async () => {
    const before = await run('ethtool -l eth0');
    if (!/Combined:\s+2/.test(before.output)) throw new Error(`the guest kernel offers no second pair:\n${before.output}`);
    const r = await run('ethtool -L eth0 combined 2');
    expect(r.status, r.output).toBe(0);
    expect(g.device.activePairs).toBe(2);
    await pingFromGuest(g, HOST, 2);
  }, 120_000);

  it('ethtool -K changes the guest offloads through the control queue, and the TAP follows', async () => {
    const k = await run('ethtool -k eth0 | grep -i gro-hw');
    if (k.output.includes('[fixed]') || !k.output.includes('rx-gro-hw')) throw new Error(`the guest kernel cannot change rx-gro-hw:\n${k.output}`);
    const before = tap.offloads;
    const off = await run('ethtool -K eth0 rx-gro-hw off');
    expect(off.status, off.output).toBe(0);
    expect(tap.offloads).not.toBe(before);
    const on = await run('ethtool -K eth0 rx-gro-hw on');
    expect(on.status, on.output).toBe(0);
    expect(tap.offloads).toBe(before);
    const t = await fetchFromHost(g, HOST, 5189, 64 * 1024);
    expect(t.guestSha256).toBe(t.hostSha256);
  }, 180_000);

  it("the device's counters match the guest's /sys/class/net/eth0/statistics", async () => {
    const names = ['rx_packets', 'tx_packets', 'rx_bytes', 'tx_bytes', 'rx_dropped', 'tx_dropped'];
    let guest: Record<string, number> = {};
    let m = g.device.totalMetrics();
    // Both sides read while nothing moves; a frame in flight between the two reads is retried (bounded).
    for (let i = 0; i < 5; i++) {
      const r = await run(`cd /sys/class/net/eth0/statistics && for f in ${names.join(' ')}; do echo "S $f $(cat $f)"; done`);
      guest = Object.fromEntries([...r.output.matchAll(/S (\w+) (\d+)/g)].map((x) => [x[1]!, Number(x[2])]));
      m = g.device.totalMetrics();
      if (guest['tx_packets'] === m.txPackets && guest['rx_packets'] === m.rxPackets) break;
    }
    expect(guest['tx_packets']).toBe(m.txPackets);
    expect(guest['rx_packets']).toBe(m.rxPackets);
    // The device counts each frame with its 12-byte virtio_net_hdr.
    expect(m.txBytes).toBe(guest['tx_bytes']! + 12 * m.txPackets);
    expect(m.rxBytes).toBe(guest['rx_bytes']! + 12 * m.rxPackets);
    expect(guest['rx_dropped']).toBe(0);
    expect(g.machine.transport.invalidAccesses).toBe(0);
    console.log(`guest RAM moved ${g.machine.ram.stats.replaced} times (${g.machine.ram.stats.movedWithQueues} with queues active)`);
  }, 180_000);
});
