// A v86 guest on a TAP, and the checks run in it: boot to the guest's
// VT-READY (its init has loaded virtio_pci and virtio_net and configured
// eth0), ping the host, move bytes over TCP either way with their SHA-256
// compared. Used by `virtio-tap v86` and by the real-guest test.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

import { NetDevice } from '../net/device.js';
import type { NetFeatureSwitches } from '../net/features.js';
import type { Tap } from '../tap/tap.js';
import { V86Machine } from './machine.js';
import { receivePayload, servePayload } from './host-peer.js';
import { V86Error } from './v86-api.js';

export interface V86GuestOptions {
  tap: Tap;
  guestIp: string;
  /** Directory with vmlinuz and initramfs.gz (test/guest/build-v86-guest.sh). */
  imageDir?: string;
  bootTimeoutMs?: number;
  features?: NetFeatureSwitches;
  mac?: string;
  /** Echo the guest's console here as it comes. */
  onConsole?: (s: string) => void;
}

export interface V86Guest {
  machine: V86Machine;
  device: NetDevice;
  /** Wall time from start to the guest's VT-READY. */
  bootMs: number;
  /** What the guest's init said about eth0: its MAC, or null without one. */
  eth0: string | null;
  close(): Promise<void>;
}

/** Where the guest image is by default (the build script's cache). */
export function defaultImageDir(): string {
  return process.env['VIRTIO_TAP_V86_CACHE'] ?? join(homedir(), '.cache', 'virtio-tap-v86');
}

/** Boots the guest with a virtio-tap NIC on `tap` (split ring unless told otherwise) and waits for its init to finish. */
export async function bootV86Guest(o: V86GuestOptions): Promise<V86Guest> {
  const dir = o.imageDir ?? defaultImageDir();
  for (const f of ['vmlinuz', 'initramfs.gz']) {
    if (!existsSync(join(dir, f))) throw new V86Error('ERR_V86_IMAGE', `no guest image in ${dir} (${f} missing): build it with bash test/guest/build-v86-guest.sh`);
  }
  const t0 = performance.now();
  let machine: V86Machine | null = null;
  const device = new NetDevice({
    tap: o.tap,
    ...(o.mac !== undefined ? { mac: o.mac } : {}),
    features: { RING_PACKED: false, ...o.features },
    interrupt: (kind, queue) => machine?.notify(kind, queue),
  });
  try {
    machine = await V86Machine.boot(device, {
      kernel: join(dir, 'vmlinuz'),
      initrd: join(dir, 'initramfs.gz'),
      cmdline: `console=ttyS0 quiet loglevel=3 vt.ip=${o.guestIp}`,
    });
  } catch (err) {
    device.close();
    throw err;
  }
  const m = machine;
  if (o.onConsole !== undefined) m.console.onOutput = o.onConsole;
  const close = async (): Promise<void> => {
    await m.stop();
    device.close();
  };
  try {
    await m.console.waitFor(/VT-READY/, o.bootTimeoutMs ?? 240_000);
  } catch (err) {
    await close();
    throw err;
  }
  const eth = /VT-ETH0 ([0-9a-f:]{17})/.exec(m.console.text);
  return { machine: m, device, bootMs: performance.now() - t0, eth0: eth === null ? null : eth[1]!, close };
}

/** The guest pings `host` `count` times: round-trip times in ms (min/avg/max), or an error with the output. */
export async function pingFromGuest(g: V86Guest, host: string, count = 3): Promise<{ min: number; avg: number; max: number }> {
  const r = await g.machine.console.run(`ping -c ${count} -W 5 ${host}`, 20_000 + 6_000 * count);
  const m = /= ([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(r.output);
  if (r.status !== 0 || m === null) throw new V86Error('ERR_V86_GUEST', `the guest's ping of ${host} failed (status ${r.status}):\n${r.output}`);
  return { min: Number(m[1]), avg: Number(m[2]), max: Number(m[3]) };
}

export interface CheckedTransfer {
  bytes: number;
  ms: number;
  hostSha256: string;
  guestSha256: string;
}

/** The guest fetches `bytes` random bytes from a host socket with nc; both sides hash what crossed. */
export async function fetchFromHost(g: V86Guest, host: string, port: number, bytes: number, timeoutMs = 120_000): Promise<CheckedTransfer> {
  const s = await servePayload(host, port, bytes, timeoutMs);
  try {
    const r = await g.machine.console.run(`nc ${host} ${port} | sha256sum`, timeoutMs);
    const sent = await s.sent;
    const m = /\n([0-9a-f]{64}) /.exec(r.output);
    if (m === null) throw new V86Error('ERR_V86_GUEST', `the guest printed no SHA-256 for the fetch:\n${r.output}`);
    return { bytes: sent.bytes, ms: sent.ms, hostSha256: sent.sha256, guestSha256: m[1]! };
  } finally {
    s.close();
  }
}

/** The guest sends `bytes` random bytes (made in its RAM) to a host socket; both sides hash what crossed. */
export async function sendToHost(g: V86Guest, host: string, port: number, bytes: number, timeoutMs = 120_000): Promise<CheckedTransfer> {
  const kb = Math.ceil(bytes / 1024);
  const made = await g.machine.console.run(`dd if=/dev/urandom of=/tmp/up bs=1024 count=${kb} 2>/dev/null; sha256sum /tmp/up`, 60_000);
  const m = /\n([0-9a-f]{64}) /.exec(made.output);
  if (m === null) throw new V86Error('ERR_V86_GUEST', `the guest printed no SHA-256 for its payload:\n${made.output}`);
  const s = await receivePayload(host, port, kb * 1024, timeoutMs);
  try {
    await g.machine.console.run(`nc ${host} ${port} < /tmp/up`, timeoutMs);
    const got = await s.received;
    return { bytes: got.bytes, ms: got.ms, hostSha256: got.sha256, guestSha256: m[1]! };
  } finally {
    s.close();
  }
}
