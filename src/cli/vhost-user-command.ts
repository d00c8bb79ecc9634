// `virtio-tap vhost-user`: a NetDevice on a TAP served as a vhost-user
// back-end until SIGINT or SIGTERM; SIGUSR1 asks the guest to announce
// itself (GUEST_ANNOUNCE).
import { lstatSync } from 'node:fs';

import type { DemoLog } from '../demo/demo.js';
import { PcapWriter } from '../net/pcap.js';
import { Link } from '../tap/link.js';
import { Tap } from '../tap/tap.js';
import { TraceSink } from '../trace/sink.js';
import { VhostUserBackend } from '../transport/vhost-user/backend.js';
import { serveMetrics } from './metrics-server.js';
import { vhostUserNetDevice } from './vhost-user-device.js';
import { parseVhostUserFlags, UsageError } from './vhost-user-flags.js';

/** What --print-capabilities prints: QEMU's vhost-user.json VHostUserBackendCapabilities for a net back-end. */
export const CAPABILITIES = { type: 'net' } as const;

/** The log with each line stamped with the time (ISO 8601, UTC): the server runs for long. */
function stamped(log: DemoLog): DemoLog {
  const at = (): string => new Date().toISOString();
  return {
    step: (t) => log.step(`${at()} ${t}`),
    info: (t) => log.info(`${at()} ${t}`),
    ok: (t) => log.ok(`${at()} ${t}`),
    fail: (t) => log.fail(`${at()} ${t}`),
  };
}

/** --socket names something that is not a socket: a usage mistake, refused before anything is opened (the file is left alone). */
function refuseNonSocket(path: string): void {
  let isOther = false;
  try {
    isOther = !lstatSync(path).isSocket();
  } catch {
    return; // nothing there (or not reachable): the back-end's own bind says what is wrong
  }
  if (isOther) throw new UsageError(`${path} exists and is not a socket: not removing it (remove it, or choose another --socket)`);
}

/** The trace the flags ask for, or null. */
export function traceFrom(values: { trace?: boolean; 'trace-json'?: boolean; 'trace-file'?: string | undefined }): TraceSink | null {
  const json = values['trace-json'] === true;
  if (values.trace !== true && !json && values['trace-file'] === undefined) return null;
  return new TraceSink(json ? 'json' : 'text', values['trace-file']);
}

/** The TAP named: attached to if it exists, created otherwise; brought up when this user may. */
function vhostUserTap(name: string, queues: number, log: DemoLog): Tap {
  const tapOptions = { vnetHdr: true, queues, multiQueue: queues > 1 };
  const tap = Link.exists(name) ? Tap.attach(name, tapOptions) : Tap.open({ name, ...tapOptions });
  if (!tap.isUp) {
    try {
      tap.setUp();
    } catch {
      log.info(`${tap.name} is down and this user cannot bring it up: \`sudo ip link set ${tap.name} up\` (the guest sees its link down until then)`);
    }
  }
  return tap;
}

/** Resolves on the first SIGINT or SIGTERM (or `also`); SIGUSR1 calls `announce` meanwhile. */
function untilStopped(log: DemoLog, announce: () => void, also: Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    void also.then(() => {
      process.off('SIGUSR1', announce);
      resolve();
    });
    const stop = (sig: string) => {
      log.info(`${sig}: stopping`);
      process.off('SIGUSR1', announce);
      resolve();
    };
    process.on('SIGUSR1', announce);
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}

export async function vhostUserCommand(args: string[], plainLog: DemoLog): Promise<number> {
  const flags = parseVhostUserFlags(args);
  if (flags.printCapabilities) {
    console.log(JSON.stringify(CAPABILITIES));
    return 0;
  }
  if (flags.fd === undefined && !flags.client) refuseNonSocket(flags.socket);
  const log = stamped(plainLog);
  // The capture file first: a path that cannot be written is refused before any TAP exists.
  const capture = flags.pcap !== undefined ? new PcapWriter(flags.pcap) : null;
  const trace = traceFrom(flags);
  const tap = vhostUserTap(flags.tap, flags.queues, log);
  const device = vhostUserNetDevice({
    tap,
    ...(trace !== null ? { trace: trace.tracer } : {}),
    ...(capture !== null ? { capture } : {}),
    ...(flags.mac !== undefined ? { mac: flags.mac } : {}),
    ...(flags.mtu !== undefined ? { mtu: flags.mtu } : {}),
    features: flags.features,
    rateLimit: flags.rateLimit,
    txTimerMs: flags.txTimerMs,
  });
  const backend = new VhostUserBackend({
    socketPath: flags.socket,
    device,
    client: flags.client,
    ...(flags.fd !== undefined ? { fd: flags.fd } : {}),
    logRequests: flags.logRequests,
    log: (l) => log.info(l),
    socketAccess: flags.socketAccess,
  });
  backend.on('error', (e: Error) => log.fail(e.message));
  // With --fd there is one front-end: when it goes, the command is done.
  const gone = new Promise<void>((resolve) => {
    if (flags.fd !== undefined) backend.once('disconnect', () => resolve());
  });
  const metrics = flags.metrics === undefined ? null : await serveMetrics(flags.metrics, () => device.totalMetrics().toPrometheus(tap.name));
  backend.start();
  const where = flags.fd !== undefined ? `fd ${flags.fd}` : `${flags.socket}${flags.client ? ' (client)' : ''}`;
  log.ok(`vhost-user back-end for ${tap.name} on ${where}`);
  if (metrics !== null) log.info(`metrics at http://${flags.metrics!.host.includes(':') ? `[${flags.metrics!.host}]` : flags.metrics!.host}:${metrics.port}/metrics`);
  const announce = (): void => {
    if (device.requestAnnounce()) log.info('SIGUSR1: asked the guest to announce itself');
    else log.info('SIGUSR1: no announce (the device does not run, or GUEST_ANNOUNCE and its control queue are not the device\'s)');
  };
  await untilStopped(log, announce, gone);
  metrics?.server.close();
  backend.close();
  tap.close();
  trace?.close();
  if (capture !== null) {
    await capture.close();
    log.ok(`wrote ${capture.frames} frames to ${capture.path}`);
  }
  return 0;
}
