// Runs a command inside a fresh network + mount namespace (`unshare`), with
// lo up and /sys remounted so that /sys/class/net shows that namespace. The
// namespace, and every TAP, bridge and address made in it, vanishes when the
// command exits. VIRTIO_TAP_NETNS tells the command which namespace it is in.
import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;

/** True when this process may create namespaces and TAPs (root, typically). */
export function canMakeNetns() {
  const status = readFileSync('/proc/self/status', 'utf8');
  const caps = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0'}`);
  return ((caps >> CAP_NET_ADMIN) & 1n) === 1n && ((caps >> CAP_SYS_ADMIN) & 1n) === 1n;
}

/** True when already inside a namespace made by runInNetns. */
export function insideNetns() {
  const marker = process.env.VIRTIO_TAP_NETNS;
  return marker !== undefined && marker === readlinkSync('/proc/self/ns/net');
}

/** Runs argv[0] with argv[1..] in a new namespace; returns its exit status. */
export function runInNetns(argv, options = {}) {
  const script =
    'mount -t sysfs sysfs /sys && ip link set lo up && ' +
    'export VIRTIO_TAP_NETNS="$(readlink /proc/self/ns/net)" && exec "$@"';
  const r = spawnSync('unshare', ['--net', '--mount', '--', 'sh', '-c', script, 'sh', ...argv], {
    stdio: 'inherit',
    ...options,
    env: { ...(options.env ?? process.env), VIRTIO_TAP_HOST_NETNS: readlinkSync('/proc/self/ns/net') },
  });
  if (r.error) {
    console.error(`virtio-tap: cannot run unshare: ${r.error.message}`);
    return 1;
  }
  return r.status ?? 1;
}
