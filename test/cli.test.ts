// The command line's conventions, none of which needs a TAP: --version, help
// for each command, a hint for a mistyped flag or command, exit 2 for usage
// and 1 for a failure at run time, NO_COLOR, and vhost-user's
// --print-capabilities (QEMU's backend program conventions).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { escapeLabel } from '../src/net/metrics.js';
import { nearest } from '../src/cli/usage.js';

const root = resolve(import.meta.dirname, '..');
const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [tsx, 'src/cli/main.ts', ...args], { cwd: root, encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });

describe('the command line', () => {
  it('--version, -V and version print the package version, exit 0', () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V', 'version']) {
      const r = cli([flag]);
      expect(r.status, flag).toBe(0);
      expect(r.stdout.trim()).toBe(`virtio-tap ${version}`);
    }
  });

  it('help COMMAND and COMMAND --help print the same text, exit 0', () => {
    for (const [command, line] of [['demo', 'usage: virtio-tap demo'], ['vhost-user', '--print-capabilities'], ['tour', '--no-pause']] as const) {
      const a = cli(['help', command]);
      const b = cli([command, '--help']);
      expect(a.status).toBe(0);
      expect(b.status).toBe(0);
      expect(a.stdout).toContain(line);
      expect(b.stdout).toBe(a.stdout);
    }
    expect(cli(['vhost-user', '-h']).stdout).toContain('--metrics HOST:PORT');
  });

  it('a mistyped flag or command gets the nearest name, exit 2', () => {
    const a = cli(['demo', '--brige', 'br0']);
    expect(a.status).toBe(2);
    expect(a.stderr.trim()).toBe("virtio-tap: unknown option '--brige' for demo; did you mean --bridge? (options: virtio-tap help demo)");
    const b = cli(['vhost-user', '--rate-limit', '1M']);
    expect(b.stderr).toContain('did you mean --rate-limit-');
    const c = cli(['tuor']);
    expect(c.status).toBe(2);
    expect(c.stderr).toContain('unknown command "tuor"; did you mean "tour"?');
    expect(cli(['help', 'nothing']).status).toBe(2);
    expect(cli([]).status).toBe(2);
  });

  it('usage mistakes exit 2; --metrics takes HOST:PORT only', () => {
    const base = ['vhost-user', '--socket', '/nonexistent/vu.sock', '--tap', 'vtbad0'];
    for (const bad of ['9464', 'localhost', '127.0.0.1:', '127.0.0.1:70000', ':9464']) {
      const r = cli([...base, '--metrics', bad]);
      expect(r.status, bad).toBe(2);
      expect(r.stderr.trim()).toBe(`virtio-tap: --metrics must be HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464), got "${bad}"`);
    }
    expect(cli(['vhost-user', '--tap', 'vtbad0']).stderr).toContain('needs --socket PATH (or --fd N)');
    expect(cli(['vhost-user', '--fd', '3', '--socket', '/x', '--tap', 'vtbad0']).status).toBe(2);
    expect(cli(['vhost-user', '--fd', '3', '--client', '--tap', 'vtbad0']).status).toBe(2);
  });

  it('a failure at run time is one line and exit 1: an --svg directory that cannot be made', () => {
    const r = cli(['tour', '--no-pause', '--svg', '/dev/null/svg']);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^virtio-tap: .*ENOTDIR/);
  });

  it('vhost-user --print-capabilities prints the back-end type as JSON, exit 0, before needing anything else', () => {
    const r = cli(['vhost-user', '--print-capabilities']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ type: 'net' });
  });

  it('on a terminal the tour is in colour, and with NO_COLOR set it is not', () => {
    // script(1) gives the command a pseudo-terminal.
    const onTerminal = (env: NodeJS.ProcessEnv) =>
      spawnSync('script', ['-qec', `"${process.execPath}" "${tsx}" src/cli/main.ts tour --no-pause --split`, '/dev/null'], {
        cwd: root,
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...process.env, TERM: 'xterm', ...env },
      });
    const plain = onTerminal({ NO_COLOR: '1' });
    expect(plain.status).toBe(0);
    expect(plain.stdout).toContain('split');
    expect(plain.stdout).not.toMatch(/\x1b\[[0-9;]*m/);
    const colored = onTerminal({ NO_COLOR: '' });
    expect(colored.stdout).toMatch(/\x1b\[[0-9;]*m/);
  });

  it('nearest: a slip or a prefix, never a far-off name', () => {
    expect(nearest('brige', ['bridge', 'tap'])).toBe('bridge');
    expect(nearest('rate-limit', ['rate-limit-tx', 'rate-limit-rx'])).toBe('rate-limit-tx');
    expect(nearest('frobnicate', ['bridge', 'tap'])).toBeNull();
  });

  it('Prometheus label values are escaped as the exposition format says', () => {
    expect(escapeLabel('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
  });
});
