#!/usr/bin/env node
// The virtio-tap command line.
import { parseArgs, styleText } from 'node:util';

import { runDemo, type DemoLog } from '../demo/demo.js';
import { runTour } from '../tour/present.js';
import { Link } from '../tap/link.js';
import { Tap } from '../tap/tap.js';
import { VhostUserBackend } from '../transport/vhost-user/backend.js';
import { vhostUserNetDevice } from './vhost-user-device.js';
import { PcapWriter } from '../net/pcap.js';
import { TraceSink } from '../trace/sink.js';

const SEE_INSIDE = {
  trace: { type: 'boolean', default: false },
  'trace-json': { type: 'boolean', default: false },
  'trace-file': { type: 'string' },
  pcap: { type: 'string' },
} as const;

/** The trace the flags ask for, or null. */
function traceFrom(values: { trace?: boolean; 'trace-json'?: boolean; 'trace-file'?: string | undefined }): TraceSink | null {
  const json = values['trace-json'] === true;
  if (values.trace !== true && !json && values['trace-file'] === undefined) return null;
  return new TraceSink(json ? 'json' : 'text', values['trace-file']);
}

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
  vhost-user   serve a QEMU guest's virtio-net device as a vhost-user back-end on a TAP
           --socket PATH     the vhost-user socket
           --tap NAME        the TAP: attached to if it exists (a TAP you own needs no
                             privileges), created otherwise
           --mac MAC         the device's MAC (QEMU's own config space governs the guest)
           --client          connect to a QEMU that listens (reconnecting when it goes)
           --queues N        queue pairs (a multi-queue TAP, one fd per pair)
           --tx-timer MS     after a kick's frames are sent, keep kicks off and look
                             again MS later, until a look finds nothing: one wakeup
                             per MS for a burst, not one per frame (default 1; 0: off)
           --trace, --trace-json, --trace-file PATH, --pcap FILE   as for demo
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
  if (command === 'vhost-user') return vhostUser(rest);
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

/** The vhost-user command's flags, checked. */
function vhostUserFlags(args: string[]) {
  const { values } = parseArgs({
    args,
    options: {
      socket: { type: 'string' },
      tap: { type: 'string' },
      mac: { type: 'string' },
      client: { type: 'boolean', default: false },
      queues: { type: 'string', default: '1' },
      'tx-timer': { type: 'string', default: '1' },
      ...SEE_INSIDE,
    },
  });
  if (values.socket === undefined || values.tap === undefined) throw new TypeError('vhost-user needs --socket PATH and --tap NAME');
  const queues = Number(values.queues);
  if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new TypeError(`--queues must be an integer from 1 to 64, got "${values.queues}"`);
  const txTimerMs = Number(values['tx-timer']);
  if (!/^\d+$/.test(values['tx-timer']) || txTimerMs > 1000) {
    throw new TypeError(`--tx-timer must be a whole number of milliseconds from 0 to 1000, got "${values['tx-timer']}"`);
  }
  return { ...values, socket: values.socket, tap: values.tap, queues, txTimerMs };
}

/** The TAP named: attached to if it exists, created otherwise; brought up when this user may. */
function vhostUserTap(name: string, queues: number): Tap {
  const tapOptions = { vnetHdr: true, queues, multiQueue: queues > 1 };
  const tap = Link.exists(name) ? Tap.attach(name, tapOptions) : Tap.open({ name, ...tapOptions });
  if (!tap.isUp) {
    try {
      tap.setUp();
    } catch {
      log.info(`${tap.name} is down and this user cannot bring it up: \`sudo ip link set ${tap.name} up\``);
    }
  }
  return tap;
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilStopped(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig}: stopping`);
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}

async function vhostUser(args: string[]): Promise<number> {
  const flags = vhostUserFlags(args);
  // The capture file first: a path that cannot be written is refused before any TAP exists.
  const capture = flags.pcap !== undefined ? new PcapWriter(flags.pcap) : null;
  const trace = traceFrom(flags);
  const tap = vhostUserTap(flags.tap, flags.queues);
  const device = vhostUserNetDevice({
    tap,
    ...(trace !== null ? { trace: trace.tracer } : {}),
    ...(capture !== null ? { capture } : {}),
    ...(flags.mac !== undefined ? { mac: flags.mac } : {}),
    txTimerMs: flags.txTimerMs,
  });
  const backend = new VhostUserBackend({ socketPath: flags.socket, device, client: flags.client === true, log: (l) => log.info(l) });
  backend.on('error', (e: Error) => log.fail(e.message));
  backend.start();
  log.ok(`vhost-user back-end for ${tap.name} on ${flags.socket}${flags.client === true ? ' (client)' : ''}`);
  await untilStopped();
  backend.close();
  tap.close();
  trace?.close();
  if (capture !== null) {
    await capture.close();
    log.ok(`wrote ${capture.frames} frames to ${capture.path}`);
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // Bad flags and other usage errors: one clear line, no stack.
    const e = err as { code?: string; message?: string };
    console.error(`virtio-tap: ${e.message ?? String(err)}`);
    process.exit(2);
  },
);
