#!/usr/bin/env node
// `npm test`: runs vitest. With CAP_NET_ADMIN and CAP_SYS_ADMIN (root), the
// whole run happens inside a network namespace made for it (`unshare --net`,
// with a mount namespace so /sys shows that network namespace),
// so TAPs, bridges and addresses the tests create never touch the host and
// vanish with the run. Without those capabilities the tests that need them are
// skipped with the reason, or fail when VIRTIO_TAP_REQUIRE_PRIVILEGED=1 (CI).
import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const vitest = resolve(dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
const args = ['run', ...process.argv.slice(2)];

function capabilities() {
  const status = readFileSync('/proc/self/status', 'utf8');
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  return BigInt(`0x${hex}`);
}

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const caps = capabilities();
const privileged = ((caps >> CAP_NET_ADMIN) & 1n) === 1n && ((caps >> CAP_SYS_ADMIN) & 1n) === 1n;

function run(cmd, argv, env) {
  const r = spawnSync(cmd, argv, { cwd: root, stdio: 'inherit', env });
  if (r.error) {
    console.error(`virtio-tap tests: cannot run ${cmd}: ${r.error.message}`);
    return 1;
  }
  return r.status ?? 1;
}

let status;
if (privileged && process.env.VIRTIO_TAP_NETNS === undefined) {
  // The inner shell records its namespace, so a test can check that it runs
  // in the run's own namespace and not in the host's.
  // A mount namespace too, so that /sys can be remounted to show this
  // network namespace's interfaces (/sys/class/net/*/statistics).
  const script =
    'mount -t sysfs sysfs /sys && ip link set lo up && export VIRTIO_TAP_NETNS="$(readlink /proc/self/ns/net)" && exec "$0" "$@"';
  const hostNs = readlinkSync('/proc/self/ns/net');
  status = run('unshare', ['--net', '--mount', '--', 'sh', '-c', script, process.execPath, vitest, ...args], {
    ...process.env,
    VIRTIO_TAP_HOST_NETNS: hostNs,
  });
} else {
  if (!privileged) {
    console.log('virtio-tap tests: no CAP_NET_ADMIN/CAP_SYS_ADMIN: tests that need a TAP will be skipped');
  }
  status = run(process.execPath, [vitest, ...args], process.env);
}
process.exit(status);
