// The building blocks of a hostile vhost-user front-end: a client that sends
// well-framed messages with whatever payload and fds it likes, the fds
// themselves (eventfds full or not, memfds of any size, pipes, sockets,
// files, directories), and a back-end in a child process with probes of what
// it holds (fds, mappings, CPU time). The hostile tests and the fuzzer are
// made of these.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { NetDriver } from '../../src/driver/net-driver.js';
import { native } from '../../src/host/binding.js';
import { errnoName, NEG_EAGAIN } from '../../src/host/errors.js';
import { TestFrontend } from './vhost-frontend.js';
import { encode, MessageReader, VHOST_USER_NEED_REPLY_MASK, VHOST_USER_VERSION, type Message } from '../../src/transport/vhost-user/protocol.js';

const n = native();
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A front-end that sends what it likes: any request, payload, flags and fds. */
export class HostileClient {
  private readonly reader = new MessageReader();
  private readonly buf = new Uint8Array(8192);
  private readonly fdBuf = new Int32Array(1 + 32);
  /** The back-end closed the connection. */
  closed = false;

  private constructor(readonly fd: number) {}

  /** Connects to `path`, retrying for up to `ms`. */
  static async connect(path: string, ms = 5000): Promise<HostileClient> {
    const deadline = Date.now() + ms;
    for (;;) {
      const fd = n.unixConnect(path);
      if (fd >= 0) return new HostileClient(fd);
      if (Date.now() > deadline) throw new Error(`connect ${path}: ${errnoName(fd)}`);
      await sleep(20);
    }
  }

  /** Sends one message; false when the socket refused it (the back-end went). */
  send(request: number, payload?: Uint8Array, fds: readonly number[] = [], flags = 0): boolean {
    return this.sendRaw(encode(request, VHOST_USER_VERSION | flags, payload), fds);
  }

  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): boolean {
    const rc = n.sendWithFds(this.fd, bytes, fds.length > 0 ? Int32Array.from(fds) : undefined);
    if (rc < 0 && rc !== NEG_EAGAIN) this.closed = true;
    return rc >= 0;
  }

  /** What has come back so far (replies; fds the back-end never sends are closed). */
  drain(): Message[] {
    const out: Message[] = [];
    for (let i = 0; i < 64 && !this.closed; i++) {
      const got = n.recvWithFds(this.fd, this.buf, this.fdBuf);
      for (let k = 1; k <= this.fdBuf[0]!; k++) n.close(this.fdBuf[k]!);
      if (got === NEG_EAGAIN) break;
      if (got <= 0) {
        this.closed = true;
        break;
      }
      this.reader.push(this.buf.subarray(0, got), []);
    }
    try {
      for (let m = this.reader.next(); m !== null; m = this.reader.next()) out.push(m);
    } catch {
      this.closed = true; // a reply we cannot parse: treat as gone
    }
    return out;
  }

  /** Waits up to `ms` for one reply; null when none came (or the back-end closed). */
  async reply(ms = 1000): Promise<Message | null> {
    const deadline = Date.now() + ms;
    for (;;) {
      const got = this.drain();
      if (got.length > 0) return got[0]!;
      if (this.closed || Date.now() > deadline) return null;
      await sleep(2);
    }
  }

  /** Sends with NEED_REPLY and returns the ack's u64 (0 yes), or null without one. */
  async acked(request: number, payload?: Uint8Array, fds: readonly number[] = [], ms = 1000): Promise<bigint | null> {
    this.drain();
    this.send(request, payload, fds, VHOST_USER_NEED_REPLY_MASK);
    const r = await this.reply(ms);
    return r === null || r.payload.length < 8 ? null : new DataView(r.payload.buffer, r.payload.byteOffset, 8).getBigUint64(0, true);
  }

  close(): void {
    if (this.fd >= 0) n.close(this.fd);
  }
}

/** The kinds of fd a hostile front-end hands over. */
export type FdKind =
  | 'eventfd'
  | 'eventfd-blocking-full'
  | 'memfd'
  | 'memfd-sealable'
  | 'memfd-small'
  | 'memfd-empty'
  | 'pipe'
  | 'pipe-full'
  | 'socket'
  | 'socket-eof'
  | 'file'
  | 'dir'
  | 'devnull';

export const FD_KINDS: readonly FdKind[] = ['eventfd', 'eventfd-blocking-full', 'memfd', 'memfd-sealable', 'memfd-small', 'memfd-empty', 'pipe', 'pipe-full', 'socket', 'socket-eof', 'file', 'dir', 'devnull'];

/** Makes fds of every kind and closes them all at the end (what the front-end holds). */
export class FdFactory {
  private readonly made: number[] = [];
  private readonly dir = mkdtempSync(join(tmpdir(), 'vt-hostile-'));
  private fifos = 0;

  make(kind: FdKind, size = 4 << 20): number {
    const fd = this.open(kind, size);
    this.made.push(fd);
    return fd;
  }

  private open(kind: FdKind, size: number): number {
    switch (kind) {
      case 'eventfd':
        return check(n.eventfdCreate());
      case 'eventfd-blocking-full': {
        const fd = check(n.eventfdCreate({ blocking: true }));
        check(n.eventfdWrite(fd, 0xffff_ffff_ffff_fffen));
        return fd;
      }
      case 'memfd':
        return check(n.memfdCreate('hostile', size));
      case 'memfd-sealable':
        return check(n.memfdCreate('hostile-sealable', size, { sealable: true }));
      case 'memfd-small':
        return check(n.memfdCreate('hostile-small', 4096));
      case 'memfd-empty':
        return check(n.memfdCreate('hostile-empty', 0));
      case 'pipe':
      case 'pipe-full':
        return this.pipe(kind === 'pipe-full');
      case 'socket':
      case 'socket-eof': {
        const pair = n.socketPair();
        if (typeof pair === 'number') throw new Error(`socketpair: ${errnoName(pair)}`);
        if (kind === 'socket-eof') n.close(pair[1]);
        else this.made.push(pair[1]);
        return pair[0];
      }
      case 'file': {
        const p = join(this.dir, 'file');
        writeFileSync(p, 'x'.repeat(64));
        return openSync(p, 'r+');
      }
      case 'dir':
        return openSync(this.dir, 'r');
      case 'devnull':
        return openSync('/dev/null', 'r+');
    }
  }

  // A pipe as a FIFO opened read-write (both ends in one fd); full: filled through a second, non-blocking open.
  private pipe(full: boolean): number {
    const p = join(this.dir, `fifo${this.fifos++}`);
    const r = spawnSync('mkfifo', [p]);
    if (r.status !== 0) throw new Error(`mkfifo failed: ${r.stderr}`);
    const fd = openSync(p, fsConstants.O_RDWR);
    if (full) {
      const filler = openSync(p, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
      const chunk = Buffer.alloc(65536, 1);
      try {
        for (let i = 0; i < 64; i++) n.writeFrame(filler, chunk);
      } finally {
        closeSync(filler);
      }
    }
    return fd;
  }

  /** Shrinks a file (ftruncate), as a front-end that shrinks guest RAM under the back-end would. */
  truncate(fd: number, size: number): void {
    const rc = n.ftruncate(fd, size);
    if (rc < 0) throw new Error(`ftruncate: ${errnoName(rc)}`);
  }

  closeAll(): void {
    for (const fd of this.made.splice(0)) n.close(fd);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function check(rc: number): number {
  if (rc < 0) throw new Error(errnoName(rc));
  return rc;
}

/** What the back-end process holds: open fds, mappings of memfds, CPU time in clock ticks. */
export interface Holdings {
  fds: number;
  memfdMaps: number;
  cpuTicks: number;
}

/** A back-end in a child process (test/helpers/vhost-backend-child.ts). */
export class ChildBackend {
  readonly logs: string[] = [];
  readonly errors: { code: string; message: string }[] = [];
  stats: Record<string, number> | null = null;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  stderr = '';
  private readonly proc: ChildProcess;
  private constructor(
    readonly socket: string,
    readonly dir: string,
  ) {
    const child = resolve(import.meta.dirname, 'vhost-backend-child.ts');
    this.proc = spawn(process.execPath, ['--import', 'tsx', child, socket], { stdio: ['pipe', 'pipe', 'pipe'] });
    let partial = '';
    this.proc.stdout!.on('data', (d: Buffer) => {
      partial += d.toString();
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) this.line(l);
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.proc.on('exit', (code, signal) => {
      this.exit = { code, signal };
    });
  }

  pid = 0;

  private line(l: string): void {
    let o: { ready?: number; log?: string; error?: { code: string; message: string }; stats?: Record<string, number> };
    try {
      o = JSON.parse(l);
    } catch {
      return;
    }
    if (o.ready !== undefined) this.pid = o.ready;
    if (o.log !== undefined) this.logs.push(o.log);
    if (o.error !== undefined) this.errors.push(o.error);
    if (o.stats !== undefined) this.stats = o.stats;
  }

  static async start(ms = 20_000): Promise<ChildBackend> {
    const dir = mkdtempSync(join(tmpdir(), 'vt-child-'));
    const b = new ChildBackend(join(dir, 'vhost.sock'), dir);
    const deadline = Date.now() + ms;
    while (b.pid === 0) {
      if (b.exit !== null) throw new Error(`back-end exited at start: ${b.stderr}`);
      if (Date.now() > deadline) throw new Error('back-end did not start');
      await sleep(20);
    }
    return b;
  }

  get alive(): boolean {
    return this.exit === null;
  }

  /** Waits until a log line matches (true) or `ms` pass (false). */
  async logged(re: RegExp, ms = 2000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.logs.some((l) => re.test(l))) {
      if (Date.now() > deadline || !this.alive) return false;
      await sleep(5);
    }
    return true;
  }

  async readStats(ms = 2000): Promise<Record<string, number>> {
    this.stats = null;
    this.proc.stdin!.write('stats\n');
    const deadline = Date.now() + ms;
    while (this.stats === null) {
      if (Date.now() > deadline || !this.alive) throw new Error(`no stats from the back-end (${this.why()})`);
      await sleep(5);
    }
    return this.stats;
  }

  /** What the process holds now, read from /proc. */
  holdings(): Holdings {
    const fds = readdirSync(`/proc/${this.pid}/fd`).length;
    const memfdMaps = readFileSync(`/proc/${this.pid}/maps`, 'utf8')
      .split('\n')
      .filter((l) => l.includes('/memfd:')).length;
    const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { fds, memfdMaps, cpuTicks: Number(f[11]) + Number(f[12]) };
  }

  /** How the process ended, or the last of its stderr, for failure messages. */
  why(): string {
    const tail = this.stderr.slice(-2000);
    return this.exit === null ? `alive; stderr: ${tail}` : `exited with ${this.exit.code ?? this.exit.signal}; stderr: ${tail}`;
  }

  async stop(): Promise<void> {
    if (this.alive) {
      this.proc.stdin!.write('exit\n');
      const deadline = Date.now() + 3000;
      while (this.alive && Date.now() < deadline) await sleep(10);
      if (this.alive) this.proc.kill('SIGKILL');
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A guest's driver on a front-end: frames that come back are counted; `echo` sends one and waits for it. */
export class EchoGuest {
  readonly driver: NetDriver;
  private readonly got: Uint8Array[] = [];

  constructor(
    readonly fe: TestFrontend,
    split = false,
  ) {
    if (split) fe.deviceFeatures &= ~(1n << 34n); // VIRTIO_F_RING_PACKED off
    this.driver = new NetDriver(fe, { memory: fe.mem, queueSize: 64 });
    this.driver.onFrame = (f) => this.got.push(f.frame);
    fe.onInterrupt = () => this.driver.interrupt('vring', 0);
    this.driver.start();
  }

  /** Sends a broadcast frame and waits for it to come back: null when it did, else why not. */
  async echo(ms = 5000): Promise<string | null> {
    const frame = new Uint8Array(60).fill(0x5a);
    frame.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 9], 0);
    const before = this.got.length;
    const deadline = Date.now() + ms;
    let sent = false;
    while (this.got.length === before) {
      if (!sent) sent = this.driver.send(frame);
      if (this.fe.closed) return 'the back-end closed the connection';
      if (Date.now() > deadline) return `no frame came back (sent: ${sent})`;
      await sleep(5);
      this.driver.poll();
    }
    const back = this.got[this.got.length - 1]!;
    return back.length === 60 ? null : `a frame of ${back.length} bytes came back`;
  }
}

/**
 * A well-behaved front-end (TestFrontend and NetDriver, as QEMU and its
 * guest) connects, sends a broadcast frame and waits for the echo: null when
 * it came back, else why not.
 */
export async function movesAFrame(socket: string, ms = 5000): Promise<string | null> {
  let fe: TestFrontend;
  try {
    fe = await TestFrontend.connect(socket, 8 << 20);
  } catch (err) {
    return `connect: ${(err as Error).message}`;
  }
  try {
    return await new EchoGuest(fe).echo(ms);
  } finally {
    fe.close();
  }
}
