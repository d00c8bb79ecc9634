// Boots the test guest (test/guest/) under QEMU's software emulation with
// its network device on a vhost-user socket, and collects its serial output.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

import { describe, it } from 'vitest';

import { privilegedReason, requirePrivileged } from './privileged.js';

const root = resolve(import.meta.dirname, '..', '..');

function qemuMissing(): string | null {
  const r = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? null : 'needs qemu-system-x86_64 (apt-get install qemu-system-x86 busybox-static cpio kmod)';
}

export const guestReason = privilegedReason ?? qemuMissing();

/** describe() for real-guest tests: skipped with the reason, or failing under VIRTIO_TAP_REQUIRE_PRIVILEGED=1. */
export function describeGuest(name: string, body: () => void): void {
  if (guestReason === null) describe(name, body);
  else if (requirePrivileged) {
    describe(name, () => {
      it('has what it needs (VIRTIO_TAP_REQUIRE_PRIVILEGED=1)', () => {
        throw new Error(`skipped would hide this suite: ${guestReason}`);
      });
    });
  } else describe.skip(`${name} (skipped: ${guestReason})`, body);
}

/** Builds (or finds cached) the guest kernel and initramfs; returns their directory. */
export function buildGuest(): string {
  return execFileSync('bash', [resolve(root, 'test', 'guest', 'build-guest.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

export interface GuestRun {
  output: string;
  code: number | null;
}

export interface GuestOptions {
  timeoutMs?: number;
  /** SIGKILL QEMU once the guest prints this. */
  killOn?: string;
  /** iperf3 TCP both ways and UDP against the host's server on this port. */
  iperfPort?: number;
  queuePairs?: number;
  /** One TCP stream to the host's server, reported every half second (vt.stream). */
  stream?: { port: number; seconds: number };
  /**
   * A back-end that goes may come back: QEMU connects to it again every
   * second ('client': -chardev ...,reconnect=1), or listens and takes the
   * next one ('server': server=on,wait=off; the back-end runs with --client).
   */
  reconnect?: 'client' | 'server';
  /** Room for DIMMs (slots=4, maxmem=2G), QMP on this socket, and the guest's hot-add run (vt.memhotplug: a stream meanwhile). */
  hotplug?: { port: number; seconds: number; qmp: string };
  /** Called with all the output so far, each time more comes. */
  onOutput?: (output: string) => void;
}

/** Boots the guest against `socket` with `deviceOptions` on -device virtio-net-pci; resolves when it powers off. */
export function bootGuest(
  dir: string,
  socket: string,
  ip: string,
  host: string,
  deviceOptions = '',
  o: GuestOptions = {},
): Promise<GuestRun> {
  const timeoutMs = o.timeoutMs ?? 90_000;
  const iperf =
    (o.iperfPort === undefined ? '' : ` vt.iperf=${o.iperfPort}`) +
    (o.queuePairs === undefined ? '' : ` vt.mq=${o.queuePairs}`) +
    (o.stream === undefined ? '' : ` vt.stream=${o.stream.port},${o.stream.seconds}`) +
    (o.hotplug === undefined ? '' : ` vt.memhotplug=${o.hotplug.port},${o.hotplug.seconds}`);
  const mq = o.queuePairs ?? 1;
  const args = [
    '-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', o.hotplug === undefined ? '256' : '256M,slots=4,maxmem=2G', '-smp', String(mq),
    ...(o.hotplug === undefined ? [] : ['-qmp', `unix:${o.hotplug.qmp},server=on,wait=off`]),
    '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-nodefaults', '-no-reboot',
    '-kernel', `${dir}/vmlinuz`, '-initrd', `${dir}/initramfs.gz`,
    '-append', `console=ttyS0 quiet panic=-1 vt.ip=${ip} vt.host=${host}${iperf}`,
    '-object', 'memory-backend-memfd,id=mem,size=256M,share=on', '-numa', 'node,memdev=mem',
    '-chardev', `socket,id=c0,path=${socket}${o.reconnect === 'client' ? ',reconnect=1' : o.reconnect === 'server' ? ',server=on,wait=off' : ''}`, '-netdev', `vhost-user,id=n0,chardev=c0${mq > 1 ? `,queues=${mq}` : ''}`,
    // MACHINE-NOTES: under software emulation QEMU 7.2 needs vectors=0 (INTx).
    '-device', `virtio-net-pci,netdev=n0,vectors=0${mq > 1 ? ',mq=on' : ''}${deviceOptions === '' ? '' : `,${deviceOptions}`}`,
  ];
  return new Promise((res) => {
    const q = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    q.stdout.on('data', (d: Buffer) => {
      output += d.toString();
      // Kill QEMU outright once the guest says `killOn`, as a crash would.
      if (o.killOn !== undefined && output.includes(o.killOn)) q.kill('SIGKILL');
      o.onOutput?.(output);
    });
    q.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const t = setTimeout(() => q.kill('SIGKILL'), timeoutMs);
    q.on('exit', (code) => {
      clearTimeout(t);
      res({ output, code });
    });
  });
}

/** Mbit/s of an iperf3 receiver line the guest printed after `marker`, or null. */
export function iperfMbits(output: string, marker: string): number | null {
  const line = output.split('\n').find((l) => l.startsWith(marker));
  const m = line === undefined ? null : /([\d.]+) Mbits\/sec/.exec(line);
  return m === null ? null : Number(m[1]);
}

/** An iperf3 server on the host side, bound to `address`; stop() ends it. */
export function iperfServer(address: string, port: number): { stop: () => void } {
  const p = spawn('iperf3', ['-s', '-B', address, '-p', String(port)], { stdio: 'ignore' });
  return { stop: () => p.kill('SIGKILL') };
}
