// Host-side helpers for tests that talk to the kernel through a TAP: sockets,
// interface counters, and bounded waits.
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { cProgram } from '../../bench/lib/c-build.js';

import type { TapQueue } from '../../src/tap/tap.js';
import { waitForFrame } from '../../src/tap/wait.js';

/** Runs a command (ip, sysctl...) in the test's namespace; throws with its stderr. */
export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A counter from /sys/class/net/IF/statistics. */
export function linkCounter(ifname: string, counter: string): number {
  return Number(readFileSync(`/sys/class/net/${ifname}/statistics/${counter}`, 'utf8').trim());
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A UDP socket bound to addr:port (port 0: any) that collects what it receives. */
export async function udpReceiver(address: string, port = 0) {
  const sock = createSocket('udp4');
  const messages: { data: Buffer; from: string; port: number }[] = [];
  const waiters: (() => void)[] = [];
  sock.on('message', (data, rinfo) => {
    messages.push({ data, from: rinfo.address, port: rinfo.port });
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, address, () => resolve());
  });
  return {
    sock,
    port: sock.address().port,
    messages,
    /** Resolves with the next message, or null after `ms`. */
    async next(ms = 2000) {
      const deadline = Date.now() + ms;
      while (messages.length === 0 && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      return messages.shift() ?? null;
    },
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}

/** Reads frames from a TAP queue until one satisfies `match` (see waitForFrame). */
export function readMatching<T>(queue: TapQueue, match: (frame: Uint8Array) => T | null, ms = 3000): Promise<T | null> {
  return waitForFrame(queue, match, ms);
}

/** Sends `frame` into the host side of a TAP `count` times, through a packet socket (bench/c/tap_loop.c). */
export function injectFrame(ifname: string, frame: Uint8Array, count = 1): void {
  const dir = mkdtempSync(join(tmpdir(), 'vt-inject-'));
  try {
    const file = join(dir, 'frame.bin');
    writeFileSync(file, frame);
    execFileSync(cProgram('tap_loop'), ['inject', ifname, file, String(count)], { stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
