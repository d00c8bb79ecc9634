// The demo and the command line.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { runDemo, type DemoLog } from '../src/demo/demo.js';
import { Link } from '../src/tap/link.js';
import { describePrivileged } from './helpers/privileged.js';
import { tsharkFields } from './helpers/tshark.js';

const root = resolve(import.meta.dirname, '..');

function capture(): { log: DemoLog; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    log: {
      step: (t) => lines.push(`== ${t}`),
      info: (t) => lines.push(`   ${t}`),
      ok: (t) => lines.push(`ok ${t}`),
      fail: (t) => lines.push(`FAIL ${t}`),
    },
  };
}

describePrivileged('the demo', () => {
  it('talks ARP, ICMP and UDP with the host kernel and cleans up', async () => {
    const { log, lines } = capture();
    const code = await runDemo({ hostCidr: '198.18.20.1/24', guestIp: '198.18.20.2', timeoutMs: 3000 }, log);
    expect(lines.filter((l) => l.startsWith('FAIL'))).toEqual([]);
    expect(code).toBe(0);
    expect(lines.filter((l) => l.startsWith('ok echo reply')).length).toBe(3);
    expect(lines.some((l) => l.includes('received "hello, host"'))).toBe(true);
    expect(lines.some((l) => l.includes('received "hello, guest"'))).toBe(true);
    expect(Link.exists('vtdemo0')).toBe(false);
  });

  it('works through a Linux bridge that holds the host address', async () => {
    const { log, lines } = capture();
    const code = await runDemo({ hostCidr: '198.18.21.1/24', guestIp: '198.18.21.2', bridge: 'vtdemobr0', timeoutMs: 3000 }, log);
    expect(lines.filter((l) => l.startsWith('FAIL'))).toEqual([]);
    expect(code).toBe(0);
    expect(lines.some((l) => l.includes('joined bridge vtdemobr0'))).toBe(true);
    expect(Link.exists('vtdemobr0')).toBe(false);
  });

  it('--pcap and --trace-json: tshark reads every frame and the ICMP exchange; each step is a JSON line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-demo-'));
    try {
      const pcap = join(dir, 'demo.pcapng');
      const trace = join(dir, 'demo.jsonl');
      const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
      const args = ['src/cli/main.ts', 'demo', '--host-ip', '198.18.22.1/24', '--guest-ip', '198.18.22.2', '--pcap', pcap, '--trace-json', '--trace-file', trace];
      const r = spawnSync(process.execPath, [tsx, ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
      expect(r.stdout).not.toMatch(/✗/);
      expect(r.status).toBe(0);
      const m = /transmit: (\d+) frames, \d+ bytes; receive: (\d+) frames/.exec(r.stdout);
      expect(m).not.toBeNull();
      const crossed = Number(m![1]) + Number(m![2]);
      expect(r.stdout).toContain(`wrote ${crossed} frames to ${pcap}`);
      const rows = tsharkFields(pcap, ['frame.number', 'icmp.type', 'frame.comment', 'eth.type']);
      expect(rows.length).toBe(crossed);
      expect(rows.filter((f) => f[1] === '8').length).toBe(3); // echo requests
      expect(rows.filter((f) => f[1] === '0').length).toBe(3); // echo replies
      expect(rows.every((f) => f[2]!.startsWith('virtio_net_hdr flags='))).toBe(true);
      expect(rows.filter((f) => f[2]!.includes('from guest')).length).toBe(Number(m![1]));
      // tcpdump reads it too.
      const td = spawnSync('tcpdump', ['-nr', pcap, 'icmp'], { encoding: 'utf8', timeout: 30_000 });
      expect(td.status, td.stderr).toBe(0);
      expect(td.stdout.match(/ICMP echo (request|reply)/g)?.length).toBe(6);
      const events = readFileSync(trace, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; seq: number });
      expect(events[0]!.seq).toBe(1);
      expect(events.filter((e) => e.type === 'tap_write').length).toBe(Number(m![1]));
      expect(events.filter((e) => e.type === 'tap_read').length).toBe(Number(m![2]));
      for (const t of ['status', 'features', 'queue_ready', 'kick', 'pop', 'used', 'notify_decision', 'interrupt']) {
        expect(events.some((e) => e.type === t), t).toBe(true);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('without privileges says what to do instead', () => {
    const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
    const r = spawnSync(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, tsx, 'src/cli/main.ts', 'demo'],
      { cwd: root, encoding: 'utf8', env: { ...process.env, HOME: '/tmp', TMPDIR: '/tmp' }, timeout: 60_000 },
    );
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/CAP_NET_ADMIN/);
    expect(r.stdout).toMatch(/ip tuntap add dev vtdemo0 mode tap user/); // a name one can type, not the "%d" pattern
    expect(r.stdout).toContain('virtio-tap demo --tap vtdemo0');
  });
});

describe('the command line', () => {
  const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
  const cli = (...args: string[]) => spawnSync(process.execPath, [tsx, 'src/cli/main.ts', ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });

  it('rejects a bad flag value with one clear line and exit 2', () => {
    const r = cli('demo', '--timeout', 'soon');
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('virtio-tap: --timeout must be an integer number of milliseconds, got "soon"');
    for (const bad of ['-1', '1.5', 'x', '1001']) {
      const t = cli('vhost-user', '--socket', '/nonexistent/vu.sock', '--tap', 'vtbad0', `--tx-timer=${bad}`);
      expect(t.status).toBe(2);
      expect(t.stderr.trim()).toBe(`virtio-tap: --tx-timer must be a whole number of milliseconds from 0 to 1000, got "${bad}"`);
    }
  });

  it('vhost-user: a bad --features, --mtu, --offloads, --queues or --rate-limit-* value is one line naming it, exit 2', () => {
    const base = ['vhost-user', '--socket', '/nonexistent/vu.sock', '--tap', 'vtbad0'];
    const cases: [string[], RegExp][] = [
      [['--features', '-RING_PACKED,MRG_RXBUF'], /^virtio-tap: --features takes \+NAME or -NAME, .* got "MRG_RXBUF" in "-RING_PACKED,MRG_RXBUF"$/],
      [['--features', '+WARP_DRIVE'], /^virtio-tap: --features .* got "\+WARP_DRIVE"/],
      [['--features', '-VERSION_1'], /^virtio-tap: --features cannot take -VERSION_1/],
      [['--mtu', '67'], /^virtio-tap: --mtu must be an integer from 68 to 65535, got "67"$/],
      [['--mtu', '9000x'], /^virtio-tap: --mtu must be .*, got "9000x"$/],
      [['--offloads', 'maybe'], /^virtio-tap: --offloads must be on or off, got "maybe"$/],
      [['--queues', '0'], /^virtio-tap: --queues must be an integer from 1 to 64, got "0"$/],
      [['--rate-limit-tx', 'fast'], /^virtio-tap: --rate-limit-tx must be bytes per second .*, got "fast"$/],
      [['--rate-limit-rx', '0'], /^virtio-tap: --rate-limit-rx must be bytes per second .*, got "0"$/],
    ];
    for (const [flags, line] of cases) {
      const r = cli(...base, ...flags);
      expect(r.status, flags.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n').length, r.stderr).toBe(1);
      expect(r.stderr.trim()).toMatch(line);
    }
  });

  it('help lists the vhost-user switches and SIGUSR1', () => {
    const r = cli('help', 'vhost-user');
    for (const s of ['--features LIST', '--mtu N', '--offloads on|off', '--rate-limit-tx BYTES_PER_S', '--rate-limit-rx BYTES_PER_S', '--queues N', 'SIGUSR1']) {
      expect(r.stdout).toContain(s);
    }
  });

  it('rejects an unknown flag and an unknown command', () => {
    const a = cli('demo', '--frobnicate');
    expect(a.status).toBe(2);
    expect(a.stderr.trim()).toBe("virtio-tap: unknown option '--frobnicate' for demo (options: virtio-tap help demo)");
    const b = cli('launch');
    expect(b.status).toBe(2);
    expect(b.stderr).toContain('unknown command "launch"');
  });

  it('the built command runs as installed: dist/cli/main.js, executable, with its shebang', () => {
    // The bin link npm makes points at dist/cli/main.js (built by prepare). Run
    // directly: never through npx, which inside this checkout installs the
    // package into its cache and rebuilds it.
    const r = spawnSync(join(root, 'dist', 'cli', 'main.js'), ['help'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('usage: virtio-tap <command>');
  });

  it('prints help', () => {
    const r = cli('help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('usage: virtio-tap <command>');
  });
});
