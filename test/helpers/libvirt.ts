// libvirt for the tests: libvirtd and virtlogd started by hand, in the test
// run's network namespace and in a mount namespace of their own, in which
// /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
// /var/cache/libvirt are directories under a temporary directory. The daemons
// see only the configuration written here and keep all their state there;
// the machine's own libvirt configuration and state (if any) are untouched.
// Those paths must exist to be mounted over: the ones missing on the machine
// are created empty and removed again by stop().
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, it } from 'vitest';

import { guestReason } from './guest.js';
import { requirePrivileged } from './privileged.js';
import { until } from './uml.js';

function libvirtMissing(): string | null {
  for (const [tool, pkg] of [
    ['libvirtd', 'libvirt-daemon'],
    ['virtlogd', 'libvirt-daemon'],
    ['virsh', 'libvirt-clients'],
  ] as const) {
    const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
    if (r.status !== 0) return `needs ${tool} (apt-get install --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)`;
  }
  if (!existsSync('/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so') && spawnSync('sh', ['-c', 'ls /usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so']).status !== 0) {
    return 'needs libvirt-daemon-driver-qemu';
  }
  return null;
}

export const libvirtReason = guestReason ?? libvirtMissing();

/** describe() for libvirt tests: skipped with the reason, or failing under VIRTIO_TAP_REQUIRE_PRIVILEGED=1. */
export function describeLibvirt(name: string, body: () => void): void {
  if (libvirtReason === null) describe(name, body);
  else if (requirePrivileged) {
    describe(name, () => {
      it('has what it needs (VIRTIO_TAP_REQUIRE_PRIVILEGED=1)', () => {
        throw new Error(`skipped would hide this suite: ${libvirtReason}`);
      });
    });
  } else describe.skip(`${name} (skipped: ${libvirtReason})`, body);
}

/**
 * The account QEMU runs as: Debian's libvirt-qemu (libvirt-daemon-system makes
 * it). libvirtd refuses to start without that name, which the minimal packages
 * do not create: then it is a free uid and gid, named libvirt-qemu in copies of
 * /etc/passwd and /etc/group that only the daemons' mount namespace sees.
 */
export function qemuAccount(): { uid: number; gid: number; made: boolean } {
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':'));
  const group = readFileSync('/etc/group', 'utf8').split('\n').map((l) => l.split(':'));
  const own = passwd.find((f) => f[0] === 'libvirt-qemu');
  if (own !== undefined) return { uid: Number(own[2]), gid: Number(own[3]), made: false };
  let id = 64055;
  while (passwd.some((f) => Number(f[2]) === id) || group.some((f) => Number(f[2]) === id)) id++;
  return { uid: id, gid: id, made: true };
}

// Where each of libvirt's directories is, under the temporary directory.
const MOUNTS: [string, string][] = [
  ['etc', '/etc/libvirt'],
  ['run', '/run/libvirt'],
  ['lib', '/var/lib/libvirt'],
  ['log', '/var/log/libvirt'],
  ['cache', '/var/cache/libvirt'],
];

export interface Libvirt {
  /** The connection URI: qemu:///system on this daemon's own socket. */
  uri: string;
  /** Runs virsh with `args`; resolves with its stdout, rejects with its stderr. */
  virsh(args: string[], timeoutMs?: number): Promise<string>;
  /** libvirtd's and virtlogd's output so far. */
  output(): string;
  /** The end of QEMU's log for domain `name` (libvirt's /var/log/libvirt/qemu/NAME.log). */
  qemuLog(name: string): string;
  /** The PID of the QEMU running domain `name`, or null. */
  qemuPid(name: string): number | null;
  /** Stops both daemons (SIGTERM, then SIGKILL) and removes the mount points this made. */
  stop(): Promise<void>;
}

/** Starts virtlogd and libvirtd with their directories under `dir`, QEMU running as `qemu`; resolves once virsh reaches libvirtd. */
export async function startLibvirt(dir: string, qemu: { uid: number; gid: number; made: boolean }, timeoutMs = 60_000): Promise<Libvirt> {
  for (const [sub] of MOUNTS) mkdirSync(join(dir, sub), { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755); // QEMU reaches the guest's files and sockets under it
  writeFileSync(
    join(dir, 'etc', 'libvirtd.conf'),
    [
      // Root only reaches the socket (mode 0700 dir); no polkit.
      'auth_unix_ro = "none"',
      'auth_unix_rw = "none"',
      'log_outputs = "3:stderr"',
      '',
    ].join('\n'),
  );
  writeFileSync(join(dir, 'etc', 'virtlogd.conf'), 'log_outputs = "2:stderr"\n');
  writeFileSync(
    join(dir, 'etc', 'qemu.conf'),
    [
      `user = "+${qemu.uid}"`,
      `group = "+${qemu.gid}"`,
      // The test gives QEMU's account what it needs itself: libvirt changes
      // no file's owner, labels nothing, makes no /dev namespace and no cgroup.
      'dynamic_ownership = 0',
      'remember_owner = 0',
      'security_driver = "none"',
      'namespaces = [ ]',
      'cgroup_controllers = [ ]',
      'stdio_handler = "logd"',
      '',
    ].join('\n'),
  );
  const made: string[] = [];
  for (const [, path] of MOUNTS) {
    if (!existsSync(path)) {
      mkdirSync(path, { recursive: true });
      made.push(path);
    }
  }
  const accounts: string[] = [];
  if (qemu.made) {
    const passwd = join(dir, 'passwd');
    const group = join(dir, 'group');
    writeFileSync(passwd, `${readFileSync('/etc/passwd', 'utf8').trimEnd()}\nlibvirt-qemu:x:${qemu.uid}:${qemu.gid}:libvirt QEMU (test):/nonexistent:/usr/sbin/nologin\n`);
    writeFileSync(group, `${readFileSync('/etc/group', 'utf8').trimEnd()}\nlibvirt-qemu:x:${qemu.gid}:\n`);
    chmodSync(passwd, 0o644);
    chmodSync(group, 0o644);
    accounts.push(`mount --bind '${passwd}' /etc/passwd`, `mount --bind '${group}' /etc/group`);
  }
  // libvirt probes QEMU's capabilities as root, with KVM when /dev/kvm opens,
  // and throws the result away whenever QEMU's account cannot open /dev/kvm:
  // every lookup probes again, about 4 s each under software emulation, 40 s
  // to define and start a domain (with it, one probe: 4 s). Debian's libvirt-qemu is in group kvm for
  // this; here QEMU's group gets a /dev/kvm of its own (the same device, mode
  // 0660) in the daemons' mount namespace. The domain is type='qemu' still.
  const kvm = join(dir, 'kvm');
  mkdirSync(kvm, { recursive: true });
  const devKvm = [
    'if [ -c /dev/kvm ]; then',
    `  mount -t tmpfs -o mode=0755 tmpfs '${kvm}'`,
    `  mknod -m 0660 '${kvm}/kvm' c $(stat -c '0x%t 0x%T' /dev/kvm)`,
    `  chgrp ${qemu.gid} '${kvm}/kvm'`,
    `  mount --bind '${kvm}/kvm' /dev/kvm`,
    'fi',
  ];
  const script = [
    'set -e',
    ...MOUNTS.map(([sub, path]) => `mount --bind '${join(dir, sub)}' '${path}'`),
    ...accounts,
    ...devKvm,
    `virtlogd & echo $! > '${join(dir, 'virtlogd.pid')}'`,
    'exec libvirtd',
  ].join('\n');
  let out = '';
  const daemon: ChildProcess = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  daemon.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  daemon.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => daemon.once('exit', () => r()));
  const socket = join(dir, 'run', 'libvirt-sock');
  const uri = `qemu:///system?socket=${socket}`;

  const virsh = (args: string[], t = 60_000) =>
    new Promise<string>((res, rej) => {
      execFile('virsh', ['-q', '-c', uri, ...args], { timeout: t, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (err) rej(new Error(`virsh ${args.join(' ')}: ${stderr || err.message}`));
        else res(stdout);
      });
    });
  const pidOf = (file: string): number | null => {
    try {
      const n = Number(readFileSync(file, 'utf8').trim());
      return n > 0 ? n : null;
    } catch {
      return null;
    }
  };
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const stop = async () => {
    const virtlogd = pidOf(join(dir, 'virtlogd.pid'));
    if (daemon.exitCode === null && daemon.signalCode === null) {
      daemon.kill('SIGTERM');
      const t = setTimeout(() => daemon.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    if (virtlogd !== null && alive(virtlogd)) {
      process.kill(virtlogd, 'SIGTERM');
      const end = Date.now() + 5000;
      while (alive(virtlogd) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      if (alive(virtlogd)) process.kill(virtlogd, 'SIGKILL');
    }
    // The mounts went with the daemons' mount namespace; the paths made for them go now.
    for (const path of made.reverse()) {
      try {
        rmdirSync(path);
      } catch {
        // not empty: not ours any more
      }
    }
  };

  try {
    await until(() => existsSync(socket) || daemon.exitCode !== null, timeoutMs, 'libvirtd to listen');
    if (daemon.exitCode !== null) throw new Error(`libvirtd exited ${daemon.exitCode}:\n${out}`);
    // Listening is not serving yet: the QEMU driver probes QEMU first.
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        await virsh(['uri'], 10_000);
        break;
      } catch (e) {
        if (Date.now() > end) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    uri,
    virsh,
    output: () => out,
    qemuLog: (name) => {
      try {
        return readFileSync(join(dir, 'log', 'qemu', `${name}.log`), 'utf8').split('\n').slice(-40).join('\n');
      } catch {
        return '';
      }
    },
    qemuPid: (name) => pidOf(join(dir, 'run', 'qemu', `${name}.pid`)),
    stop,
  };
}
