// The demo and the command line.
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { runDemo, type DemoLog } from '../src/demo/demo.js';
import { Link } from '../src/tap/link.js';
import { describePrivileged } from './helpers/privileged.js';

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
    expect(r.stdout).toContain('npx virtio-tap demo --tap vtdemo0');
  });
});

describe('the command line', () => {
  const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
  const cli = (...args: string[]) => spawnSync(process.execPath, [tsx, 'src/cli/main.ts', ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });

  it('rejects a bad flag value with one clear line and exit 2', () => {
    const r = cli('demo', '--timeout', 'soon');
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('virtio-tap: --timeout must be an integer number of milliseconds, got "soon"');
  });

  it('rejects an unknown flag and an unknown command', () => {
    const a = cli('demo', '--frobnicate');
    expect(a.status).toBe(2);
    expect(a.stderr).toContain("Unknown option '--frobnicate'");
    const b = cli('launch');
    expect(b.status).toBe(2);
    expect(b.stderr).toContain('unknown command "launch"');
  });

  it('prints help', () => {
    const r = cli('help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('usage: virtio-tap <command>');
  });
});
