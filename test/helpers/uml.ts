// A User-Mode Linux guest (test/guest/build-uml.sh) whose virtio_uml device
// reaches a vhost-user back-end: the `virtio-tap vhost-user` command run from
// source, or a VhostUserBackend in the test's own process. The guest runs a
// shell script from a host directory (hostfs); the script can stop at named
// steps until the host says go, so one boot can take the host through several
// phases (take the link down, send frames, ask for an announce) while the
// guest watches.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { describe, it } from 'vitest';

import { privilegedReason, requirePrivileged } from './privileged.js';
import { rawSocketMissing } from './raw-socket.js';

const root = resolve(import.meta.dirname, '..', '..');

function toolsMissing(): string | null {
  for (const [tool, pkg] of [
    ['iperf3', 'iperf3'],
    ['ethtool', 'ethtool'],
    ['patchelf', 'patchelf'],
    ['busybox', 'busybox-static'],
    ['cpio', 'cpio'],
  ] as const) {
    const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
    if (r.status !== 0) return `needs ${tool} (apt-get install ${pkg}; test/guest/build-uml.sh lists what it needs)`;
  }
  return rawSocketMissing();
}

export const umlReason = privilegedReason ?? toolsMissing();

/** describe() for User-Mode Linux tests: skipped with the reason, or failing under VIRTIO_TAP_REQUIRE_PRIVILEGED=1. */
export function describeUml(name: string, body: () => void): void {
  if (umlReason === null) describe(name, body);
  else if (requirePrivileged) {
    describe(name, () => {
      it('has what it needs (VIRTIO_TAP_REQUIRE_PRIVILEGED=1)', () => {
        throw new Error(`skipped would hide this suite: ${umlReason}`);
      });
    });
  } else describe.skip(`${name} (skipped: ${umlReason})`, body);
}

/** Builds (or finds cached) `linux` and `initramfs.gz`; returns their directory. */
export function buildUml(): string {
  return execFileSync('bash', [resolve(root, 'test', 'guest', 'build-uml.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000 }).trim();
}

/** Waits until `check()` is true, polling; throws `what` after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `virtio-tap vhost-user ...` run from source, its output collected. */
export class CliBackend {
  readonly child: ChildProcess;
  output = '';
  private readonly exited: Promise<number | null>;

  private constructor(args: string[]) {
    // tsx as a loader in this one process (not tsx's own command, which runs
    // the program in a child and passes on SIGINT and SIGTERM only): a
    // signal such as SIGUSR1 reaches the command itself.
    this.child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'vhost-user', ...args], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((r) => this.child.once('exit', (code) => r(code)));
  }

  /** Starts the command; resolves once it says it serves (its socket is listening). */
  static async start(args: string[], timeoutMs = 20_000): Promise<CliBackend> {
    const b = new CliBackend(args);
    try {
      await until(() => b.output.includes('vhost-user back-end for') || b.child.exitCode !== null, timeoutMs, 'the vhost-user command to serve');
    } catch (e) {
      b.child.kill('SIGKILL');
      throw e;
    }
    if (b.child.exitCode !== null) throw new Error(`virtio-tap vhost-user exited ${b.child.exitCode}:\n${b.output}`);
    return b;
  }

  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed). */
  async stop(graceMs = 5000): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }
}

// Shell functions every guest script starts with.
//   ip ...      iproute2's ip (busybox's sh would run its own applet, which
//               has no maddr, allmulticast or VLAN links).
//   at NAME     prints "VT-AT NAME" and waits (up to 30 s) until the host has
//               written go-NAME into the shared directory.
//   rx IF / tx IF   the interface's rx / tx packet counters.
//   carrier_is IF V  waits (up to 5 s) until IF's carrier reads V and its
//               operstate follows (up for 1, down for 0); prints
//               "VT-CARRIER IF <carrier> <operstate>".
const PRELUDE = `
ip() { /usr/bin/ip "$@"; }
at() {
  echo "VT-AT $1"
  n=0
  while [ ! -e "/host/go-$1" ]; do
    n=$((n + 1)); [ $n -gt 600 ] && { echo "VT-AT-TIMEOUT $1"; return 1; }
    sleep 0.05
  done
}
rx() { cat /sys/class/net/$1/statistics/rx_packets; }
tx() { cat /sys/class/net/$1/statistics/tx_packets; }
carrier_is() {
  want=down; [ "$2" = 1 ] && want=up
  n=0
  while [ $n -lt 100 ]; do
    [ "$(cat /sys/class/net/$1/carrier 2>/dev/null)" = "$2" ] && [ "$(cat /sys/class/net/$1/operstate)" = $want ] && break
    n=$((n + 1)); sleep 0.05
  done
  echo "VT-CARRIER $1 $(cat /sys/class/net/$1/carrier 2>/dev/null) $(cat /sys/class/net/$1/operstate)"
}
`;

export interface UmlRun {
  output: string;
  /** The status `sh /host/run.sh` exited with ("VT-DONE <status>"), or null when the guest never said. */
  status: number | null;
  /** The linux process's exit code (null when killed). */
  code: number | null;
}

/** One User-Mode Linux boot running `script` against the vhost-user socket `socket`. */
export class UmlGuest {
  /** The shared directory: /host in the guest. */
  readonly dir: string;
  output = '';
  readonly done: Promise<UmlRun>;
  private readonly proc: ChildProcess;
  private finished = false;

  /**
   * Boots `linux` from `umlDir` (buildUml()) with `script` as /host/run.sh
   * (after the shell functions above). Killed after `timeoutMs`.
   */
  constructor(umlDir: string, socket: string, script: string, timeoutMs = 90_000) {
    this.dir = mkdtempSync(join(tmpdir(), 'vt-uml-'));
    writeFileSync(join(this.dir, 'run.sh'), `${PRELUDE}\n${script}\n`);
    // An empty disk of its own: UML locks its ubd0 file, so guests sharing
    // /dev/null would refuse each other's boot.
    writeFileSync(join(this.dir, 'ubd0'), '');
    const args = [
      'mem=256M', `initrd=${umlDir}/initramfs.gz`, 'con=null', 'con0=fd:0,fd:1', 'quiet', `ubd0=${join(this.dir, 'ubd0')}`,
      `virtio_uml.device=${socket}:1`, `vt.dir=${this.dir}`,
    ];
    // Its own process group: UML's helper processes go with it.
    this.proc = spawn(join(umlDir, 'linux'), args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, cwd: this.dir });
    this.proc.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    const timer = setTimeout(() => this.kill(), timeoutMs);
    this.done = new Promise((res) => {
      this.proc.once('exit', (code) => {
        clearTimeout(timer);
        this.finished = true;
        this.killGroup();
        const m = /VT-DONE (\d+)/.exec(this.output);
        res({ output: this.output, status: m === null ? null : Number(m[1]), code });
      });
    });
  }

  /** The rest of the first console line starting with `prefix` (waits for it, up to `timeoutMs`). */
  async line(prefix: string, timeoutMs = 20_000): Promise<string> {
    let found: string | undefined;
    await until(
      () => {
        found = this.output.split('\n').find((l) => l.startsWith(prefix));
        return found !== undefined || this.finished;
      },
      timeoutMs,
      `"${prefix}" from the guest`,
    );
    if (found === undefined) throw new Error(`the guest ended without saying "${prefix}":\n${this.output}`);
    return found.slice(prefix.length).trim();
  }

  /** Every console line starting with `prefix`, what follows it. */
  lines(prefix: string): string[] {
    return this.output
      .split('\n')
      .filter((l) => l.startsWith(prefix))
      .map((l) => l.slice(prefix.length).trim());
  }

  /** Resolves when the guest's script reaches `at NAME`. */
  async at(name: string, timeoutMs = 30_000): Promise<void> {
    await this.line(`VT-AT ${name}`, timeoutMs);
  }

  /** Lets the guest's script go on past `at NAME`. */
  go(name: string): void {
    writeFileSync(join(this.dir, `go-${name}`), '');
  }

  /** A file the guest's script left in /host, or null. */
  file(name: string): string | null {
    const p = join(this.dir, name);
    return existsSync(p) ? readFileSync(p, 'utf8') : null;
  }

  kill(): void {
    if (!this.finished) this.killGroup();
  }

  /** Kills (if needed) and removes the shared directory. */
  async close(): Promise<UmlRun> {
    this.kill();
    const run = await this.done;
    rmSync(this.dir, { recursive: true, force: true });
    return run;
  }

  private killGroup(): void {
    try {
      if (this.proc.pid !== undefined) process.kill(-this.proc.pid, 'SIGKILL');
    } catch {
      // the group is gone already
    }
  }
}
