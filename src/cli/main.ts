#!/usr/bin/env node
// The virtio-tap command line.
import { parseArgs, styleText } from 'node:util';

import { runDemo, type DemoLog } from '../demo/demo.js';
import { runTour } from '../tour/present.js';
import { colorWanted } from '../util/color.js';
import { COMMAND_HELP, USAGE, nearest, packageVersion } from './usage.js';
import { traceFrom, vhostUserCommand } from './vhost-user-command.js';
import { SEE_INSIDE, UsageError, VHOST_USER_OPTIONS } from './vhost-user-flags.js';
import { v86Command } from './v86-command.js';

const DEMO_OPTIONS = {
  tap: { type: 'string' },
  bridge: { type: 'string' },
  'host-ip': { type: 'string', default: '198.18.0.1/24' },
  'guest-ip': { type: 'string', default: '198.18.0.2' },
  timeout: { type: 'string', default: '3000' },
  split: { type: 'boolean', default: false },
  ...SEE_INSIDE,
} as const;

const TOUR_OPTIONS = {
  split: { type: 'boolean', default: false },
  packed: { type: 'boolean', default: false },
  'no-pause': { type: 'boolean', default: false },
  svg: { type: 'string' },
} as const;

/** Each command's options, for the hint on a mistyped one. */
const OPTION_NAMES: Record<string, string[]> = {
  demo: Object.keys(DEMO_OPTIONS),
  'vhost-user': Object.keys(VHOST_USER_OPTIONS),
  tour: Object.keys(TOUR_OPTIONS),
  v86: ['tap', 'host-ip', 'guest-ip', 'image', 'bytes', 'shell'],
};

function color(kind: Parameters<typeof styleText>[0], text: string): string {
  return colorWanted() ? styleText(kind, text, { validateStream: false }) : text;
}

const log: DemoLog = {
  step: (t) => console.log(`\n${color('bold', `== ${t}`)}`),
  info: (t) => console.log(`   ${t}`),
  ok: (t) => console.log(` ${color('green', '✓')} ${t}`),
  fail: (t) => console.log(` ${color('red', '✗')} ${t}`),
};

/** The command being run, for the hint on a bad flag. */
let current = '';

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--version' || command === '-V' || command === 'version') {
    console.log(`virtio-tap ${packageVersion()}`);
    return 0;
  }
  if (command === undefined) {
    console.error(USAGE);
    return 2;
  }
  if (command === 'help' || command === '--help' || command === '-h') return help(rest[0]);
  if (command in COMMAND_HELP && (rest.includes('--help') || rest.includes('-h'))) return help(command);
  current = command;
  if (command === 'demo') {
    const { values } = parseArgs({ args: rest, options: DEMO_OPTIONS });
    const timeoutMs = Number(values.timeout);
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) {
      throw new UsageError(`--timeout must be an integer number of milliseconds, got "${values.timeout}"`);
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
  if (command === 'v86') return v86Command(rest, log);
  if (command === 'tour') {
    const { values } = parseArgs({ args: rest, options: TOUR_OPTIONS });
    const layouts: ('split' | 'packed')[] = values.split === values.packed ? ['split', 'packed'] : values.split === true ? ['split'] : ['packed'];
    return runTour({ layouts, pause: values['no-pause'] !== true, ...(values.svg !== undefined ? { svgDir: values.svg } : {}) });
  }
  const near = nearest(command, Object.keys(COMMAND_HELP));
  throw new UsageError(`unknown command "${command}"${near !== null ? `; did you mean "${near}"?` : ''} (commands: ${Object.keys(COMMAND_HELP).join(', ')})`);
}

/** `help [COMMAND]`: the overview or a command's text, on stdout. */
function help(command: string | undefined): number {
  if (command === undefined) {
    console.log(USAGE);
    return 0;
  }
  const text = COMMAND_HELP[command];
  if (text === undefined) throw new UsageError(`no help for "${command}": not a command (commands: ${Object.keys(COMMAND_HELP).join(', ')})`);
  console.log(text);
  return 0;
}

/** A usage mistake as one line, with the nearest option for an unknown one. */
function usageLine(e: { code?: string; message?: string }): string {
  const first = (e.message ?? '').split('\n')[0]!;
  const unknown = /^Unknown option '(-{1,2})([^']*)'/.exec(first);
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown !== null) {
    const near = nearest(unknown[2]!, OPTION_NAMES[current] ?? []);
    const hint = near !== null ? `; did you mean --${near}?` : '';
    return `unknown option '${unknown[1]}${unknown[2]}' for ${current}${hint} (options: virtio-tap help ${current})`;
  }
  return first.replace(/\. To specify a positional argument.*$/, '');
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // Usage mistakes (a bad flag or value): one line, exit 2. Anything else
    // failed at run time: one line naming it (errno names come with HostError
    // and TapError), exit 1.
    const e = err as { code?: string; message?: string };
    const usage = err instanceof UsageError || (typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS_'));
    console.error(`virtio-tap: ${usage ? usageLine(e) : (e.message ?? String(err)).split('\n')[0]}`);
    process.exit(usage ? 2 : 1);
  },
);
