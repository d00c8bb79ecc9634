// The `vhost-user` command's flags, checked: each bad value is one line
// naming the flag and the value (main turns it into exit 2).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { NET_FEATURES, type NetFeatureName, type NetFeatureSwitches } from '../net/features.js';
import type { RateLimit } from '../net/rate-limiter.js';
import type { SocketAccess } from '../transport/vhost-user/connection.js';

export const SEE_INSIDE = {
  trace: { type: 'boolean', default: false },
  'trace-json': { type: 'boolean', default: false },
  'trace-file': { type: 'string' },
  pcap: { type: 'string' },
} as const;

/** A usage mistake: one line for people, exit 2. */
export class UsageError extends TypeError {
  override readonly name = 'UsageError';
  readonly code = 'ERR_USAGE';
}

/** The offload features `--offloads off` turns off: checksums, segmentation, ECN. */
export const OFFLOAD_FEATURES: readonly NetFeatureName[] = [
  'CSUM',
  'GUEST_CSUM',
  'CTRL_GUEST_OFFLOADS',
  'GUEST_TSO4',
  'GUEST_TSO6',
  'GUEST_ECN',
  'GUEST_UFO',
  'GUEST_USO4',
  'GUEST_USO6',
  'HOST_TSO4',
  'HOST_TSO6',
  'HOST_ECN',
  'HOST_UFO',
  'HOST_USO',
];

/** Milliseconds a rate limiter's bucket takes to refill: the burst it allows is a tenth of a second's worth. */
const RATE_REFILL_MS = 100;

/** The command's options (parseArgs form). */
export const VHOST_USER_OPTIONS = {
  socket: { type: 'string' },
  'socket-path': { type: 'string' },
  fd: { type: 'string' },
  'print-capabilities': { type: 'boolean', default: false },
  tap: { type: 'string' },
  mac: { type: 'string' },
  client: { type: 'boolean', default: false },
  queues: { type: 'string', default: '1' },
  'tx-timer': { type: 'string', default: '1' },
  mtu: { type: 'string' },
  features: { type: 'string' },
  offloads: { type: 'string', default: 'on' },
  'rate-limit-tx': { type: 'string' },
  'rate-limit-rx': { type: 'string' },
  metrics: { type: 'string' },
  'socket-owner': { type: 'string' },
  'socket-group': { type: 'string' },
  'socket-mode': { type: 'string' },
  'log-requests': { type: 'boolean', default: false },
  ...SEE_INSIDE,
} as const;

/** Where --metrics serves: a host (name, IPv4, or IPv6 in brackets) and a port. */
export interface MetricsAddress {
  host: string;
  port: number;
}

export interface VhostUserFlags {
  /** The socket path to listen on (or connect to, with client); '' with fd. */
  socket: string;
  /** An inherited, connected vhost-user socket (--fd), or undefined. */
  fd: number | undefined;
  printCapabilities: boolean;
  metrics: MetricsAddress | undefined;
  tap: string;
  mac: string | undefined;
  client: boolean;
  /** --log-requests: one line per request the front-end sends. */
  logRequests: boolean;
  queues: number;
  txTimerMs: number;
  mtu: number | undefined;
  features: NetFeatureSwitches;
  rateLimit: { tx?: RateLimit; rx?: RateLimit };
  trace: boolean;
  'trace-json': boolean;
  'trace-file': string | undefined;
  pcap: string | undefined;
  /** --socket-owner, --socket-group, --socket-mode: set on the socket file after bind. */
  socketAccess: SocketAccess;
}

/** Parses and checks the command's arguments; throws UsageError (or parseArgs' own error) for a bad one. */
export function parseVhostUserFlags(args: string[]): VhostUserFlags {
  const { values } = parseArgs({ args: joinFeatureList(args), options: VHOST_USER_OPTIONS });
  const printCapabilities = values['print-capabilities'] === true;
  const socket = values.socket ?? values['socket-path'];
  const fd = values.fd === undefined ? undefined : wholeNumber('--fd', values.fd, 0, 1 << 20, 'a file descriptor number');
  if (!printCapabilities) {
    if (values.socket !== undefined && values['socket-path'] !== undefined) throw new UsageError('vhost-user takes --socket or --socket-path, not both');
    if ((socket === undefined) === (fd === undefined) || values.tap === undefined) throw new UsageError('vhost-user needs --socket PATH (or --fd N) and --tap NAME');
    if (fd !== undefined && values.client === true) throw new UsageError('--client connects to a socket path; --fd is already connected');
  }
  const queues = wholeNumber('--queues', values.queues, 1, 64, 'an integer from 1 to 64');
  const txTimerMs = wholeNumber('--tx-timer', values['tx-timer'], 0, 1000, 'a whole number of milliseconds from 0 to 1000');
  const mtu = values.mtu === undefined ? undefined : wholeNumber('--mtu', values.mtu, 68, 65535, 'an integer from 68 to 65535');
  if (values.offloads !== 'on' && values.offloads !== 'off') throw new UsageError(`--offloads must be on or off, got "${values.offloads}"`);
  const features: NetFeatureSwitches = {};
  if (values.offloads === 'off') for (const f of OFFLOAD_FEATURES) features[f] = false;
  Object.assign(features, values.features === undefined ? {} : parseFeatureSwitches(values.features));
  const rateLimit: { tx?: RateLimit; rx?: RateLimit } = {};
  if (values['rate-limit-tx'] !== undefined) rateLimit.tx = bytesPerSecond('--rate-limit-tx', values['rate-limit-tx']);
  if (values['rate-limit-rx'] !== undefined) rateLimit.rx = bytesPerSecond('--rate-limit-rx', values['rate-limit-rx']);
  return {
    socket: socket ?? '',
    fd,
    printCapabilities,
    metrics: values.metrics === undefined ? undefined : metricsAddress(values.metrics),
    tap: values.tap ?? '',
    mac: values.mac,
    client: values.client === true,
    logRequests: values['log-requests'] === true,
    queues,
    txTimerMs,
    mtu,
    features,
    rateLimit,
    trace: values.trace === true,
    'trace-json': values['trace-json'] === true,
    'trace-file': values['trace-file'],
    pcap: values.pcap,
    socketAccess: socketAccess(values['socket-owner'], values['socket-group'], values['socket-mode']),
  };
}

/** --socket-owner USER, --socket-group GROUP (names or numbers), --socket-mode MODE (octal, such as 0660). */
function socketAccess(owner: string | undefined, group: string | undefined, mode: string | undefined): SocketAccess {
  const a: SocketAccess = {};
  if (owner !== undefined) a.uid = idOf('--socket-owner', owner, '/etc/passwd');
  if (group !== undefined) a.gid = idOf('--socket-group', group, '/etc/group');
  if (mode !== undefined) {
    if (!/^0?[0-7]{3}$/.test(mode)) throw new UsageError(`--socket-mode must be octal permission bits such as 0660, got "${mode}"`);
    a.mode = parseInt(mode, 8);
  }
  return a;
}

// A user or group by number, or by name from the local database file (name:x:id:...).
function idOf(flag: string, text: string, db: string): number {
  if (/^\d+$/.test(text)) return wholeNumber(flag, text, 0, 0xfffffffe, 'a name or an id below 2^32 - 1');
  let lines: string[] = [];
  try {
    lines = readFileSync(db, 'utf8').split('\n');
  } catch {
    // no database: only numbers work
  }
  const line = lines.find((l) => l.split(':')[0] === text);
  const id = line === undefined ? NaN : Number(line.split(':')[2]);
  if (!Number.isInteger(id)) throw new UsageError(`${flag}: no such ${db === '/etc/group' ? 'group' : 'user'} "${text}" in ${db} (a number works too)`);
  return id;
}

// `--features -RING_PACKED,...` as one argument: parseArgs takes a value
// that starts with a dash for a flag of its own.
function joinFeatureList(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const next = args[i + 1];
    if (args[i] === '--features' && next !== undefined && !next.startsWith('--')) out.push(`--features=${args[++i]}`);
    else out.push(args[i]!);
  }
  return out;
}

function wholeNumber(flag: string, text: string, min: number, max: number, what: string): number {
  const v = Number(text);
  if (!/^\d+$/.test(text) || v < min || v > max) throw new UsageError(`${flag} must be ${what}, got "${text}"`);
  return v;
}

/**
 * `-RING_PACKED,-MRG_RXBUF,+X`: each name (as in NET_FEATURES) switched off
 * (-) or on (+) over the defaults (everything on).
 */
export function parseFeatureSwitches(text: string): NetFeatureSwitches {
  const out: NetFeatureSwitches = {};
  for (const item of text.split(',')) {
    const sign = item[0];
    const name = item.slice(1);
    if ((sign !== '+' && sign !== '-') || !(name in NET_FEATURES)) {
      throw new UsageError(`--features takes +NAME or -NAME, comma-separated (names: ${Object.keys(NET_FEATURES).join(' ')}), got "${item}" in "${text}"`);
    }
    if (name === 'VERSION_1' && sign === '-') throw new UsageError(`--features cannot take -VERSION_1: the device speaks VERSION_1 only, got "${text}"`);
    out[name as NetFeatureName] = sign === '+';
  }
  return out;
}

/** HOST:PORT, [IPv6]:PORT: where to serve metrics. No default address: only what the user names is bound. */
function metricsAddress(text: string): MetricsAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d+)$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port >= 0 && port <= 65535)) throw new UsageError(`--metrics must be HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464), got "${text}"`);
  return { host: m[1] ?? m[2]!, port };
}

/** A byte rate, with an optional k, M or G (powers of 1000): a token bucket of a tenth of a second's bytes. */
function bytesPerSecond(flag: string, text: string): RateLimit {
  const m = /^(\d+)([kMG]?)$/.exec(text);
  const rate = m === null ? NaN : Number(m[1]) * { '': 1, k: 1e3, M: 1e6, G: 1e9 }[m[2] as '' | 'k' | 'M' | 'G'];
  if (!(rate >= 1) || rate > 1e12) throw new UsageError(`${flag} must be bytes per second from 1 to 1000G (e.g. 125000000 or 125M), got "${text}"`);
  return { bytes: { size: (rate * RATE_REFILL_MS) / 1000, refillMs: RATE_REFILL_MS } };
}
