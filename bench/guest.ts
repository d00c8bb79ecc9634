// `npm run bench -- guest`: the real guest (test/guest/) under QEMU's software
// emulation runs iperf3 through QEMU's own TAP backend (vhost=off) and through
// virtio-tap's vhost-user back-end, in the same run. Per case: guest
// throughput, and backend CPU time per packet crossing the TAP -- QEMU's main
// loop thread for its own backend, the whole back-end process for ours.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { median, row, type Row } from './lib/report.js';

const root = resolve(import.meta.dirname, '..');
const CASES = ['tcp-tx', 'tcp-rx', 'udp64-tx', 'udp64-rx', 'udp1400-tx', 'udp1400-rx'] as const;
type Case = (typeof CASES)[number];
const TICK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface Sample {
  mbits: number;
  cpu: number; // seconds
  sys: number; // seconds of it in the kernel
  packets: number;
}

/** CPU seconds of a process or thread: all of it, and the kernel's part. */
function cpuOf(statPath: string): { cpu: number; sys: number } {
  const s = readFileSync(statPath, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  const sys = Number(f[12]) / TICK; // stime (field 15)
  return { cpu: Number(f[11]) / TICK + sys, sys }; // + utime (field 14)
}

function packetsOf(ifname: string): number {
  const c = (n: string) => Number(readFileSync(`/sys/class/net/${ifname}/statistics/${n}`, 'utf8'));
  return c('rx_packets') + c('tx_packets');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Boots the guest with `netdev`/`device` args and samples each case between its markers. */
function runGuest(guestDir: string, netArgs: string[], ifname: string, cpuStat: () => string, host: string, ip: string, seconds: number): Promise<Map<Case, Sample>> {
  const args = [
    '-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', '256',
    '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-nodefaults', '-no-reboot',
    '-kernel', `${guestDir}/vmlinuz`, '-initrd', `${guestDir}/initramfs.gz`,
    '-append', `console=ttyS0 quiet panic=-1 vt.ip=${ip} vt.host=${host} vt.bench=5201,${seconds}`,
    ...netArgs,
  ];
  return new Promise((res, rej) => {
    const q: ChildProcess = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = new Map<Case, Sample>();
    const begin = new Map<string, { cpu: number; sys: number; packets: number }>();
    let buf = '';
    const onLine = (line: string) => {
      const b = /^VT-BEGIN (\S+)/.exec(line);
      if (b !== null) begin.set(b[1]!, { ...cpuOf(cpuStat()), packets: packetsOf(ifname) });
      const e = /^VT-END (\S+) (.*)$/.exec(line);
      if (e !== null) {
        const start = begin.get(e[1]!);
        const m = /([\d.]+) Mbits\/sec/.exec(e[2]!);
        if (start !== undefined && m !== null) {
          const now = cpuOf(cpuStat());
          out.set(e[1] as Case, { mbits: Number(m[1]), cpu: now.cpu - start.cpu, sys: now.sys - start.sys, packets: packetsOf(ifname) - start.packets });
        }
      }
    };
    q.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, i).replace(/\r$/, ''));
        buf = buf.slice(i + 1);
      }
    });
    current = q;
    const t = setTimeout(() => q.kill('SIGKILL'), 60_000 + CASES.length * (seconds + 10) * 1000);
    q.on('error', rej);
    q.on('exit', () => {
      clearTimeout(t);
      res(out);
    });
  });
}

let current: ChildProcess | null = null;

export async function runGuestBench(o: { seconds: number; reps: number; progress: (m: string) => void }): Promise<Row[]> {
  const guestDir = execFileSync('bash', [join(root, 'test', 'guest', 'build-guest.sh')], { encoding: 'utf8' }).trim();
  const ours: Map<Case, Sample>[] = [];
  const qemus: Map<Case, Sample>[] = [];
  for (let rep = 0; rep < o.reps; rep++) {
    // QEMU's own userspace TAP backend: its main loop thread does the backend's work.
    o.progress(`guest: QEMU's own TAP backend (vhost=off), run ${rep + 1}/${o.reps}`);
    execFileSync('ip', ['tuntap', 'add', 'dev', 'vtgq0', 'mode', 'tap', 'vnet_hdr']);
    execFileSync('ip', ['addr', 'add', '198.18.170.1/24', 'dev', 'vtgq0']);
    execFileSync('ip', ['link', 'set', 'vtgq0', 'up']);
    let server = spawn('iperf3', ['-s', '-B', '198.18.170.1', '-p', '5201'], { stdio: 'ignore' });
    await sleep(200);
    qemus.push(
      await runGuest(guestDir, ['-netdev', 'tap,id=n0,ifname=vtgq0,script=no,downscript=no,vhost=off', '-device', 'virtio-net-pci,netdev=n0,vectors=0'], 'vtgq0',
        () => `/proc/${current!.pid}/task/${current!.pid}/stat`, '198.18.170.1', '198.18.170.2', o.seconds),
    );
    server.kill('SIGKILL');
    execFileSync('ip', ['link', 'del', 'vtgq0']);

    // virtio-tap's vhost-user back-end, as its own process (the command).
    o.progress(`guest: virtio-tap vhost-user back-end, run ${rep + 1}/${o.reps}`);
    const sock = `/tmp/vt-guestbench-${process.pid}.sock`;
    // One process (node --import tsx), so that its CPU time is the back-end's own.
    const backend = spawn(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), 'vhost-user', '--socket', sock, '--tap', 'vtgv0'], { cwd: root, stdio: 'ignore' });
    for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(100);
    execFileSync('ip', ['addr', 'add', '198.18.171.1/24', 'dev', 'vtgv0']);
    server = spawn('iperf3', ['-s', '-B', '198.18.171.1', '-p', '5201'], { stdio: 'ignore' });
    await sleep(200);
    ours.push(
      await runGuest(guestDir, [
        '-object', 'memory-backend-memfd,id=mem,size=256M,share=on', '-numa', 'node,memdev=mem',
        '-chardev', `socket,id=c0,path=${sock}`, '-netdev', 'vhost-user,id=n0,chardev=c0', '-device', 'virtio-net-pci,netdev=n0,vectors=0',
      ], 'vtgv0', () => `/proc/${backend.pid}/stat`, '198.18.171.1', '198.18.171.2', o.seconds),
    );
    server.kill('SIGKILL');
    backend.kill('SIGTERM');
    await new Promise((r) => backend.once('exit', r));
  }
  const rows: Row[] = [];
  for (const c of CASES) {
    const pick = (runs: Map<Case, Sample>[], f: (s: Sample) => number) => median(runs.map((r) => r.get(c)).filter((s): s is Sample => s !== undefined).map(f));
    const perPacket = (s: Sample) => (s.packets > 0 ? (s.cpu / s.packets) * 1e6 : 0);
    rows.push(row(`guest ${c}`, 'throughput', pick(ours, (s) => s.mbits), 'Mbit/s', { name: "QEMU's TAP backend", value: pick(qemus, (s) => s.mbits) }, { min: 1 }));
    rows.push(row(`guest ${c}`, 'backend CPU per packet', pick(ours, perPacket), 'µs', { name: "QEMU's main loop", value: pick(qemus, perPacket) }, { max: 0.5 }));
    // The kernel's part: the syscalls each backend makes (TAP reads and
    // writes, which carry the host stack's work, and eventfds), not its own code.
    const sysPerPacket = (s: Sample) => (s.packets > 0 ? (s.sys / s.packets) * 1e6 : 0);
    rows.push(row(`guest ${c}`, 'backend kernel CPU per packet', pick(ours, sysPerPacket), 'µs', { name: "QEMU's main loop", value: pick(qemus, sysPerPacket) }));
  }
  return rows;
}
