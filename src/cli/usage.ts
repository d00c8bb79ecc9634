// The command line's help: one text per command (`virtio-tap help COMMAND`,
// `virtio-tap COMMAND --help`), the overview, and the nearest name to a
// mistyped one.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const DEMO = `usage: virtio-tap demo [options]

Runs a virtio-net device on a TAP with the in-process guest driver, gives the
host side an address, and exchanges ARP, ICMP echo and UDP with the host
kernel, step by step.

  --tap NAME        attach to an existing TAP (e.g. one you own) instead of creating one
  --bridge NAME     join the TAP to a Linux bridge that holds the host address
  --host-ip CIDR    host side address (default 198.18.0.1/24)
  --guest-ip ADDR   guest address (default 198.18.0.2)
  --timeout MS      how long to wait for each answer (default 3000)
  --split           use the split ring layout (default packed)
  --trace           print each device step, naming its spec section (stderr)
  --trace-json      the same as JSON lines
  --trace-file PATH write the trace there instead of stderr
  --pcap FILE       write every frame crossing the device to a pcapng file

Needs CAP_NET_ADMIN (for example root) to create a TAP, or a TAP you own:
  sudo ip tuntap add dev vtap0 mode tap user $USER && sudo ip link set vtap0 up
  virtio-tap demo --tap vtap0
`;

const VHOST_USER = `usage: virtio-tap vhost-user (--socket PATH | --fd N) --tap NAME [options]
       virtio-tap vhost-user --print-capabilities

Serves a virtio-net device as a vhost-user back-end on a TAP: to QEMU (which
runs the control queue and config space itself) or to a front-end that hands
over every queue (User-Mode Linux's virtio_uml).

  --socket PATH     the vhost-user socket (also --socket-path PATH); a stale socket
                    there is removed, anything else there is refused
  --socket-owner USER, --socket-group GROUP, --socket-mode MODE   owner, group
                    and octal mode of the socket, set after bind
  --fd N            serve the connected vhost-user socket inherited as fd N instead
                    (QEMU's backend program conventions); exits when it closes
  --print-capabilities   print the back-end's capabilities as JSON and exit
  --tap NAME        the TAP: attached to if it exists (a TAP you own needs no
                    privileges), created otherwise
  --mac MAC         the device's MAC (QEMU's own config space governs its guest)
  --client          connect to a front-end that listens (reconnecting when it goes)
  --log-requests    one log line per request the front-end sends
  --queues N        queue pairs (a multi-queue TAP, one fd per pair)
  --mtu N           the MTU offered to the guest (MTU feature; default the TAP's)
  --features LIST   feature switches over the defaults (everything on), e.g.
                    -RING_PACKED,-MRG_RXBUF,+CTRL_VQ; names as VIRTIO 1.2 has them
                    without VIRTIO_NET_F_ (VERSION_1, RING_PACKED, INDIRECT_DESC,
                    EVENT_IDX, IN_ORDER, CSUM, GUEST_CSUM, HOST_TSO4, MQ, STATUS...)
  --offloads on|off off: no checksum or segmentation offload either way
                    (CSUM, GUEST_CSUM, *_TSO4/6, *_ECN, *_UFO, *_USO*); default on
  --rate-limit-tx BYTES_PER_S   cap what the guest sends (k, M, G: powers of
                    1000; bursts of a tenth of a second's bytes)
  --rate-limit-rx BYTES_PER_S   cap what the guest receives, the same way
  --tx-timer MS     after a kick's frames are sent, keep kicks off and look
                    again MS later, until a look finds nothing: one wakeup
                    per MS for a burst, not one per frame (default 1; 0: off)
  --metrics HOST:PORT   serve the device's metrics as Prometheus text over HTTP
                    at http://HOST:PORT/metrics (bound to that address only)
  --trace, --trace-json, --trace-file PATH, --pcap FILE   as for demo

The guest's link follows the TAP's (ip link set NAME down/up). Signals:
SIGINT, SIGTERM stop it; SIGUSR1 asks the guest to announce itself
(GUEST_ANNOUNCE, when the device runs the control queue). Log lines start
with an ISO 8601 time.
`;

const V86 = `usage: virtio-tap v86 [options]

Boots the project's Linux guest (test/guest/build-v86-guest.sh) in v86 under
Node with a virtio-tap NIC on virtio-pci, on a TAP; the guest's own virtio_net
pings the host and fetches bytes over TCP (SHA-256 checked on both sides);
then the device's metrics. Needs the optional package v86@0.5.462 and seabios.

  --tap NAME        attach to an existing TAP (with the host address on it)
  --host-ip CIDR    host side address of a TAP it creates (default 198.18.86.1/24)
  --guest-ip ADDR   guest address (default 198.18.86.2)
  --image DIR       vmlinuz and initramfs.gz (default ~/.cache/virtio-tap-v86)
  --bytes N         bytes the guest fetches (default 262144)
  --shell           leave the guest's console attached instead (Ctrl-] leaves)
`;

const TOUR = `usage: virtio-tap tour [options]

Walks one frame out of and one frame into the guest, step by step, showing
the ring memory as it changes (no privileges needed).

  --split | --packed   one layout only (default both)
  --no-pause        all at once, without waiting for Enter
  --svg DIR         also write each step's ring diagram as SVG
`;

const HELP = `usage: virtio-tap help [COMMAND]

Prints the overview, or COMMAND's options (the same as virtio-tap COMMAND --help).
`;

/** Each command's help text. */
export const COMMAND_HELP: Readonly<Record<string, string>> = { demo: DEMO, 'vhost-user': VHOST_USER, v86: V86, tour: TOUR, help: HELP };

export const USAGE = `usage: virtio-tap <command> [options]

commands:
  demo         a device on a TAP with the in-process guest driver: ARP, ICMP echo
               and UDP with the host kernel, step by step
  vhost-user   serve a virtio-net device on a TAP to QEMU or User-Mode Linux
  v86          boot Linux in v86 under Node with a virtio-tap NIC on virtio-pci
  tour         one frame out of and one into the guest, showing the ring memory
  help         this text, or a command's: virtio-tap help COMMAND

options: --version (-V), --help (-h); virtio-tap COMMAND --help for a command's own
`;

/** The package's version, from the package.json two levels above this file (src/cli or dist/cli). */
export function packageVersion(): string {
  const file = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** The candidate nearest to `name` when it is near enough to be a slip (or a prefix of it), else null. */
export function nearest(name: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = c.startsWith(name) ? 0 : editDistance(name, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best !== null && bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}
