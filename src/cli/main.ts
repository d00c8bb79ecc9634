#!/usr/bin/env node
// The virtio-tap command line.
import { parseArgs, styleText } from 'node:util';

import { runDemo, type DemoLog } from '../demo/demo.js';
import { runTour } from '../tour/present.js';
import { traceFrom, vhostUserCommand } from './vhost-user-command.js';
import { SEE_INSIDE } from './vhost-user-flags.js';

const USAGE = `usage: virtio-tap <command> [options]

commands:
  demo     run a virtio-net device on a TAP with the in-process guest driver,
           give the host side an address, and exchange ARP, ICMP echo and UDP
           with the host kernel, step by step
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
  vhost-user   serve a virtio-net device as a vhost-user back-end on a TAP: to QEMU
           (which runs the control queue and config space itself) or to a
           front-end that hands over every queue (User-Mode Linux's virtio_uml)
           --socket PATH     the vhost-user socket (a stale socket there is removed;
                             anything else there is refused)
           --socket-owner USER, --socket-group GROUP, --socket-mode MODE   owner,
                             group and octal mode of the socket, set after bind
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
           --trace, --trace-json, --trace-file PATH, --pcap FILE   as for demo
           The guest's link follows the TAP's (ip link set NAME down/up). Signals:
           SIGINT, SIGTERM stop it; SIGUSR1 asks the guest to announce itself
           (GUEST_ANNOUNCE, when the device runs the control queue)
  tour     walk one frame out of and one frame into the guest, step by step,
           showing the ring memory as it changes (no privileges needed)
           --split | --packed   one layout only (default both)
           --no-pause        all at once, without waiting for Enter
           --svg DIR         also write each step's ring diagram as SVG
  help     this text

Needs CAP_NET_ADMIN (for example root) to create a TAP, or a TAP you own:
  sudo ip tuntap add dev vtap0 mode tap user $USER && sudo ip link set vtap0 up
  virtio-tap demo --tap vtap0
`;

function color(kind: Parameters<typeof styleText>[0], text: string): string {
  return process.stdout.isTTY ? styleText(kind, text) : text;
}

const log: DemoLog = {
  step: (t) => console.log(`\n${color('bold', `== ${t}`)}`),
  info: (t) => console.log(`   ${t}`),
  ok: (t) => console.log(` ${color('green', '✓')} ${t}`),
  fail: (t) => console.log(` ${color('red', '✗')} ${t}`),
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    console.log(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === 'demo') {
    const { values } = parseArgs({
      args: rest,
      options: {
        tap: { type: 'string' },
        bridge: { type: 'string' },
        'host-ip': { type: 'string', default: '198.18.0.1/24' },
        'guest-ip': { type: 'string', default: '198.18.0.2' },
        timeout: { type: 'string', default: '3000' },
        split: { type: 'boolean', default: false },
        ...SEE_INSIDE,
      },
    });
    const timeoutMs = Number(values.timeout);
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) {
      throw new TypeError(`--timeout must be an integer number of milliseconds, got "${values.timeout}"`);
    }
    const trace = traceFrom(values);
    try {
      return await runDemo(
        {
          ...(trace !== null ? { tracer: trace.tracer } : {}),
          ...(values.pcap !== undefined ? { pcap: values.pcap } : {}),
          ...(values.tap !== undefined ? { tap: values.tap } : {}),
          ...(values.bridge !== undefined ? { bridge: values.bridge } : {}),
          hostCidr: values['host-ip'],
          guestIp: values['guest-ip'],
          timeoutMs,
          layout: values.split === true ? 'split' : 'packed',
        },
        log,
      );
    } finally {
      trace?.close();
    }
  }
  if (command === 'vhost-user') return vhostUserCommand(rest, log);
  if (command === 'tour') {
    const { values } = parseArgs({
      args: rest,
      options: {
        split: { type: 'boolean', default: false },
        packed: { type: 'boolean', default: false },
        'no-pause': { type: 'boolean', default: false },
        svg: { type: 'string' },
      },
    });
    const layouts: ('split' | 'packed')[] = values.split === values.packed ? ['split', 'packed'] : values.split === true ? ['split'] : ['packed'];
    return runTour({ layouts, pause: values['no-pause'] !== true, ...(values.svg !== undefined ? { svgDir: values.svg } : {}) });
  }
  console.error(`virtio-tap: unknown command "${command}"\n\n${USAGE}`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // Bad flags and other usage errors: one clear line, no stack.
    const e = err as { code?: string; message?: string };
    console.error(`virtio-tap: ${(e.message ?? String(err)).split('\n')[0]}`);
    process.exit(2);
  },
);
