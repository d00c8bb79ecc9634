// `virtio-tap v86`: boots the project's Linux guest in v86 under Node with a
// virtio-tap NIC (virtio-pci) on a TAP, and has the guest's own virtio_net
// ping the host and fetch bytes over TCP, checksummed on both sides.
import { parseArgs } from 'node:util';

import type { DemoLog } from '../demo/demo.js';
import { Tap } from '../tap/tap.js';
import { parseCidr } from '../util/addr.js';
import { bootV86Guest, defaultImageDir, fetchFromHost, pingFromGuest, type V86Guest } from '../v86/session.js';

const FETCH_PORT = 5186;

function openTap(name: string | undefined, hostCidr: string): { tap: Tap; created: boolean } {
  if (name !== undefined) return { tap: Tap.attach(name, { vnetHdr: true }), created: false };
  const tap = Tap.open({ name: 'vt86_%d', vnetHdr: true });
  const { address, prefixLength } = parseCidr(hostCidr);
  tap.setUp();
  tap.setIpv4(address, prefixLength);
  return { tap, created: true };
}

async function shell(g: V86Guest): Promise<void> {
  process.stdout.write(g.machine.console.text.slice(-400));
  g.machine.console.onOutput = (s) => process.stdout.write(s);
  if (process.stdin.isTTY) process.stdin.setRawMode(true);
  process.stdin.on('data', (d: Buffer) => g.machine.console.send(d.toString('latin1')));
  // Ctrl-] leaves (as telnet does); stdin ending too.
  await new Promise<void>((resolve) => {
    process.stdin.on('data', (d: Buffer) => d.includes(0x1d) && resolve());
    process.stdin.on('end', () => resolve());
  });
  if (process.stdin.isTTY) process.stdin.setRawMode(false);
  process.stdin.pause();
}

async function checks(g: V86Guest, host: string, bytes: number, log: DemoLog): Promise<boolean> {
  log.step(`the guest pings ${host}`);
  const rtt = await pingFromGuest(g, host);
  log.ok(`3 replies, round trip min/avg/max ${rtt.min}/${rtt.avg}/${rtt.max} ms`);
  log.step(`the guest fetches ${bytes} bytes over TCP from ${host}:${FETCH_PORT}`);
  const t = await fetchFromHost(g, host, FETCH_PORT, bytes);
  const kbs = t.bytes / 1024 / (t.ms / 1000);
  if (t.guestSha256 !== t.hostSha256) {
    log.fail(`SHA-256 differs: host sent ${t.hostSha256}, the guest got ${t.guestSha256}`);
    return false;
  }
  log.ok(`${t.bytes} bytes in ${(t.ms / 1000).toFixed(2)} s (${kbs.toFixed(0)} KiB/s), SHA-256 ${t.hostSha256.slice(0, 16)}… on both sides`);
  return true;
}

/** The command; resolves with its exit status. */
export async function v86Command(args: string[], log: DemoLog): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      tap: { type: 'string' },
      'host-ip': { type: 'string', default: '198.18.86.1/24' },
      'guest-ip': { type: 'string', default: '198.18.86.2' },
      image: { type: 'string', default: defaultImageDir() },
      bytes: { type: 'string', default: '262144' },
      shell: { type: 'boolean', default: false },
    },
  });
  const bytes = Number(values.bytes);
  if (!Number.isInteger(bytes) || bytes < 1 || bytes > 64 << 20) throw new TypeError(`--bytes must be an integer from 1 to ${64 << 20}, got "${values.bytes}"`);
  const host = formatHost(values['host-ip']);
  const { tap, created } = openTap(values.tap, values['host-ip']);
  log.step(`booting Linux in v86 with a virtio-tap NIC (virtio-pci, I/O BAR, INTx) on ${tap.name}${created ? `, host side ${values['host-ip']}` : ''}`);
  let g: V86Guest | null = null;
  try {
    g = await bootV86Guest({ tap, guestIp: values['guest-ip'], imageDir: values.image });
    if (g.eth0 === null) {
      log.fail(`the guest has no eth0: virtio_net did not bind. Console:\n${g.machine.console.text.slice(-1500)}`);
      return 1;
    }
    log.ok(`the guest's virtio_net is up in ${(g.bootMs / 1000).toFixed(1)} s: eth0 ${g.eth0}, features 0x${g.device.features.toString(16)}`);
    if (values.shell) {
      log.info('the guest console (Ctrl-] leaves):');
      await shell(g);
      return 0;
    }
    const ok = await checks(g, host, bytes, log);
    log.step('device metrics');
    console.log(g.device.metrics.toPrometheus(tap.name));
    const t = g.machine.transport.stats;
    log.info(`transport: ${g.machine.transport.invalidAccesses} invalid accesses, ${t.refusedQueues} queue set-ups and ${t.refusedWrites} queue writes refused`);
    const r = g.machine.ram.stats;
    log.info(`guest RAM: v86's buffer replaced ${r.replaced} times (${r.movedWithQueues} with queues active); ${r.dirtyCalls} code-cache invalidations over ${r.dirtyBytes} bytes`);
    return ok ? 0 : 1;
  } finally {
    await g?.close();
    tap.close();
  }
}

function formatHost(cidr: string): string {
  return cidr.split('/')[0]!;
}
