// A hostile front-end against a back-end in a child process: malformed and
// unusual but well-framed messages and fds. After each, the back-end is
// alive, holds what it held before, and serves a well-behaved front-end.
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { vhostUserNetDevice } from '../src/cli/vhost-user-device.js';
import { parseVhostUserFlags } from '../src/cli/vhost-user-flags.js';
import { Tap } from '../src/tap/tap.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';

import { native } from '../src/host/binding.js';
import { memTablePayload, ProtocolFeature, Req, statePayload, u64Payload, vringAddrPayload } from '../src/transport/vhost-user/protocol.js';
import { VIRTIO_F_VERSION_1 } from '../src/virtio/constants.js';
import { TestFrontend, VA_BASE } from './helpers/vhost-frontend.js';
import { ChildBackend, EchoGuest, FdFactory, HostileClient, movesAFrame, sleep, type Holdings } from './helpers/vhost-hostile.js';

const n = native();
const MiB = 1n << 20n;
const PROTOCOL = 1n << 30n;
const REPLY_ACK = 1n << BigInt(ProtocolFeature.REPLY_ACK);

describe('a hostile front-end cannot crash, hang or exhaust the back-end', () => {
  let b: ChildBackend;
  let fds: FdFactory;
  let base: Holdings;
  const clients: HostileClient[] = [];

  beforeEach(async () => {
    b = await ChildBackend.start();
    fds = new FdFactory();
    // One well-behaved front-end first, so that whatever the first connection allocates for good is in the baseline.
    expect(await movesAFrame(b.socket)).toBeNull();
    await sleep(50);
    base = b.holdings();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    fds.closeAll();
    await b.stop();
  });

  /** A client that negotiated VERSION_1, protocol features and REPLY_ACK, and took ownership. */
  async function client(): Promise<HostileClient> {
    const c = await HostileClient.connect(b.socket);
    clients.push(c);
    c.send(Req.SET_FEATURES, u64Payload((1n << BigInt(VIRTIO_F_VERSION_1)) | PROTOCOL));
    c.send(Req.SET_PROTOCOL_FEATURES, u64Payload(REPLY_ACK));
    expect(await c.acked(Req.SET_OWNER)).toBe(0n);
    return c;
  }

  /** One region of `size` at gpa 0 over `fd`, acked. */
  function memTable(c: HostileClient, regions: { gpa: bigint; size: bigint; offset?: bigint; va?: bigint }[], fdList: number[]) {
    const payload = memTablePayload(regions.map((r) => ({ guestPhysAddr: r.gpa, memorySize: r.size, userspaceAddr: r.va ?? VA_BASE + r.gpa, mmapOffset: r.offset ?? 0n })));
    return c.acked(Req.SET_MEM_TABLE, payload, fdList);
  }

  /** Ring i set up in a 4 MiB table: size 64, rings at 0x1000 * (1 + 3i). */
  function ring(c: HostileClient, i: number, va = VA_BASE) {
    c.send(Req.SET_VRING_NUM, statePayload(i, 64));
    const at = va + BigInt(0x1000 * (1 + 3 * i));
    c.send(Req.SET_VRING_ADDR, vringAddrPayload({ index: i, flags: 0, desc: at, avail: at + 0x1000n, used: at + 0x2000n, log: 0n }));
    c.send(Req.SET_VRING_BASE, statePayload(i, 0));
  }

  /** The back-end lived, let go of everything the hostile connections brought, and serves a well-behaved front-end. */
  async function unharmed(): Promise<void> {
    for (const c of clients.splice(0)) c.close();
    await sleep(100);
    expect(b.alive, b.why()).toBe(true);
    expect(await movesAFrame(b.socket), b.why()).toBeNull();
    await sleep(100);
    const now = b.holdings();
    expect({ fds: now.fds, memfdMaps: now.memfdMaps }).toEqual({ fds: base.fds, memfdMaps: base.memfdMaps });
  }

  it('refuses two regions whose guest-physical ranges overlap', async () => {
    const c = await client();
    expect(await memTable(c, [{ gpa: 0n, size: 4n * MiB }, { gpa: 2n * MiB, size: 4n * MiB }], [fds.make('memfd'), fds.make('memfd')])).toBe(1n);
    expect(await b.logged(/refused SET_MEM_TABLE: .*overlap/)).toBe(true);
    await unharmed();
  });

  it('serves a region larger than 4 GiB in views the engine takes, and unmaps every one', async () => {
    const c = await client();
    const big = 5n << 30n;
    expect(await memTable(c, [{ gpa: 0n, size: big }], [fds.make('memfd', Number(big))])).toBe(0n);
    expect(b.holdings().memfdMaps).toBeGreaterThan(base.memfdMaps + 1);
    await unharmed();
  });

  it('refuses a region whose size plus offset passes 2^40, or runs past the end of its file', async () => {
    const c = await client();
    expect(await memTable(c, [{ gpa: 0n, size: MiB, offset: 1n << 40n }], [fds.make('memfd')])).toBe(1n);
    expect(await memTable(c, [{ gpa: 0n, size: 8n * MiB }], [fds.make('memfd')])).toBe(1n);
    expect(await memTable(c, [{ gpa: 0n, size: MiB }], [fds.make('memfd-empty')])).toBe(1n);
    expect(await b.logged(/past the end of its file \(4194304 bytes\)/)).toBe(true);
    expect(await memTable(c, [{ gpa: 0n, size: 4n * MiB }], [fds.make('dir')])).toBe(1n);
    expect(await memTable(c, [{ gpa: 0n, size: 4n * MiB }], [fds.make('eventfd')])).toBe(1n);
    await unharmed();
  });

  it('seals a sealable memfd against shrinking; says so when it cannot', async () => {
    const c = await client();
    const sealable = fds.make('memfd-sealable');
    expect(await memTable(c, [{ gpa: 0n, size: 4n * MiB }], [sealable])).toBe(0n);
    expect(n.ftruncate(sealable, 4096)).toBeLessThan(0); // EPERM: the seal holds
    expect(await memTable(c, [{ gpa: 0n, size: 4n * MiB }], [fds.make('memfd')])).toBe(0n);
    expect(await b.logged(/region 0: its file can shrink/)).toBe(true);
    await unharmed();
  });

  // UML's virtio_uml signals over pipes and socket pairs, not eventfds: those are taken; what cannot signal is refused.
  for (const [kind, taken] of [['file', false], ['devnull', false], ['dir', false], ['memfd', false], ['pipe', true], ['socket', true], ['socket-eof', true]] as const) {
    it(`${taken ? 'takes' : 'refuses'} a kick, call or error fd that is a ${kind}; none leaves the back-end spinning`, async () => {
      const c = await client();
      const answer = taken ? 0n : 1n;
      expect(await memTable(c, [{ gpa: 0n, size: 4n * MiB }], [fds.make('memfd')])).toBe(0n);
      ring(c, 0);
      ring(c, 1);
      expect(await c.acked(Req.SET_VRING_CALL, u64Payload(0n), [fds.make(kind)])).toBe(answer);
      expect(await c.acked(Req.SET_VRING_ERR, u64Payload(0n), [fds.make(kind)])).toBe(answer);
      expect(await c.acked(Req.SET_VRING_KICK, u64Payload(0n), [fds.make('eventfd')])).toBe(0n);
      expect(await c.acked(Req.SET_VRING_ENABLE, statePayload(0, 1))).toBe(0n);
      expect(await c.acked(Req.SET_VRING_ENABLE, statePayload(1, 1))).toBe(0n);
      expect(await c.acked(Req.SET_VRING_KICK, u64Payload(1n), [fds.make(kind)])).toBe(answer);
      if (!taken) expect(await b.logged(/refused SET_VRING_CALL: .*not an eventfd or a pipe or a socket/)).toBe(true);
      if (kind === 'socket-eof') expect(await b.logged(/kick fd at end of file; the ring takes no more kicks/)).toBe(true);
      const t0 = b.holdings().cpuTicks;
      await sleep(500);
      expect(b.holdings().cpuTicks - t0).toBeLessThan(20); // idle: no spinning on an fd at EOF
      await unharmed();
    });
  }

  it('a ring start that fails half-way is undone; the retry starts both rings', async () => {
    const c = await client();
    expect(await memTable(c, [{ gpa: 0n, size: 4n * MiB }], [fds.make('memfd')])).toBe(0n);
    ring(c, 0);
    ring(c, 1, VA_BASE + (1n << 30n)); // ring 1's addresses are in no region
    expect(await c.acked(Req.SET_VRING_KICK, u64Payload(0n), [fds.make('eventfd')])).toBe(0n);
    expect(await c.acked(Req.SET_VRING_ENABLE, statePayload(0, 1))).toBe(0n);
    expect(await c.acked(Req.SET_VRING_ENABLE, statePayload(1, 1))).toBe(0n);
    expect(await c.acked(Req.SET_VRING_KICK, u64Payload(1n), [fds.make('eventfd')])).toBe(1n); // ring 0 would start, ring 1 cannot
    ring(c, 1); // the retry, with addresses in memory
    expect(await c.acked(Req.SET_VRING_KICK, u64Payload(1n), [fds.make('eventfd')])).toBe(0n);
    expect(await b.logged(/device started/)).toBe(true);
    await unharmed();
  });

  it('a refused SET_MEM_TABLE leaves the old table in use and its fds closed once', async () => {
    const fe = await TestFrontend.connect(b.socket, 8 << 20);
    try {
      const guest = new EchoGuest(fe);
      // A table that maps but in which the rings are nowhere: refused after mapping.
      const payload = memTablePayload([{ guestPhysAddr: 0n, memorySize: 4n * MiB, userspaceAddr: 0x1000_0000n, mmapOffset: 0n }]);
      expect(await fe.acked(Req.SET_MEM_TABLE, payload, [fds.make('memfd')])).toBe(1n);
      expect(await guest.echo()).toBeNull();
    } finally {
      fe.close();
    }
    await unharmed();
  });

  for (const kind of ['eventfd-blocking-full', 'pipe-full'] as const) {
    it(`a call fd whose write would block (${kind}) leaves the interrupt pending, not the back-end hung`, async () => {
      const fe = await TestFrontend.connect(b.socket, 8 << 20);
      try {
        const { driver } = new EchoGuest(fe);
        expect(await fe.acked(Req.SET_VRING_CALL, u64Payload(0n), [fds.make(kind)])).toBe(0n);
        expect(await fe.acked(Req.SET_VRING_CALL, u64Payload(1n), [fds.make(kind)])).toBe(0n);
        const frame = new Uint8Array(60).fill(0xff);
        for (let i = 0; i < 5; i++) driver.send(frame);
        await sleep(200);
        const stats = await b.readStats();
        expect(stats['callsPending']).toBeGreaterThan(0);
      } finally {
        fe.close();
      }
      await unharmed();
    });
  }

  it('a message with more fds than any request takes ends the connection with every fd closed', async () => {
    for (let round = 0; round < 3; round++) {
      const c = await client();
      const many = Array.from({ length: 20 }, () => fds.make('eventfd'));
      c.send(Req.GET_FEATURES, undefined, many);
      await sleep(50);
      expect(c.drain().length).toBe(0);
      expect(c.closed).toBe(true);
    }
    expect(await b.logged(/more fds than any request takes/)).toBe(true);
    await unharmed();
  });

  it('a ring the guest breaks: the error fd is written, one log line, an error event, a count; the guest reset recovers it', async () => {
    const fe = await TestFrontend.connect(b.socket, 8 << 20);
    try {
      const guest = new EchoGuest(fe, true); // split rings: an available index that jumps is a tier-2 fault
      const err = fds.make('eventfd');
      expect(await fe.acked(Req.SET_VRING_ERR, u64Payload(1n), [err])).toBe(0n);
      const tx = guest.driver.txQueue(0).addresses;
      const dv = new DataView(fe.mem.regions[0]!.bytes.buffer);
      dv.setUint16(tx.driver + 2, dv.getUint16(tx.driver + 2, true) + 1000, true);
      fe.kick(1);
      expect(await b.logged(/ring 1 broken: /)).toBe(true);
      let signalled = n.eventfdRead(err);
      for (let i = 0; i < 100 && signalled <= 0; i++, signalled = n.eventfdRead(err)) await sleep(10);
      expect(signalled).toBe(1);
      expect(b.errors.some((e) => e.code === 'ERR_VHOST_USER_RING_BROKEN' && /ring 1/.test(e.message))).toBe(true);
      expect((await b.readStats())['ringsBroken']).toBe(1);
      expect(b.logs.filter((l) => /ring 1 broken/.test(l)).length).toBe(1);
      // The guest resets the device: QEMU stops the rings (GET_VRING_BASE) and sets them up again.
      await fe.request(Req.GET_VRING_BASE, statePayload(0, 0));
      await fe.request(Req.GET_VRING_BASE, statePayload(1, 0));
      guest.driver.start();
      expect(await guest.echo()).toBeNull();
    } finally {
      fe.close();
    }
    await unharmed();
  });
});

describe('the socket path', () => {
  const root = resolve(import.meta.dirname, '..');
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vt-sockpath-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function command(...args: string[]) {
    return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'vhost-user', '--tap', 'vtsp0', ...args], { cwd: root, encoding: 'utf8', timeout: 20_000 });
  }

  it('`vhost-user --socket PATH` refuses a PATH that exists and is not a socket, and leaves it be (exit 2, one line)', () => {
    const file = join(dir, 'precious');
    writeFileSync(file, 'keep me');
    const r = command('--socket', file);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([`virtio-tap: ${file} exists and is not a socket: not removing it (remove it, or choose another --socket)`]);
    expect(readFileSync(file, 'utf8')).toBe('keep me');
  });

  it('a stale socket is removed; a socket another back-end listens on is refused', async () => {
    const path = join(dir, 'vhost.sock');
    const live = n.unixListen(path);
    const tap = Tap.socketPair({ name: 'vsp0' });
    const make = () => new VhostUserBackend({ socketPath: path, device: vhostUserNetDevice({ tap: tap.tap }) });
    try {
      expect(() => make().start()).toThrow(/another back-end listens on it/);
      n.close(live); // the socket file stays: stale
      expect(lstatSync(path).isSocket()).toBe(true);
      const b = make();
      b.start();
      const c = await HostileClient.connect(path);
      c.send(Req.GET_FEATURES);
      expect(await c.reply()).not.toBeNull();
      c.close();
      b.close();
    } finally {
      tap.tap.close();
      for (const p of tap.peers) p.close();
    }
  });

  it('--socket-owner, --socket-group and --socket-mode are set on the socket after bind', () => {
    const flags = parseVhostUserFlags(['--socket', 's', '--tap', 't', '--socket-owner', 'root', '--socket-group', '0', '--socket-mode', '0640']);
    expect(flags.socketAccess).toEqual({ uid: 0, gid: 0, mode: 0o640 });
    expect(() => parseVhostUserFlags(['--socket', 's', '--tap', 't', '--socket-mode', '999'])).toThrow(/--socket-mode must be octal/);
    expect(() => parseVhostUserFlags(['--socket', 's', '--tap', 't', '--socket-owner', 'no-such-user-here'])).toThrow(/no such user "no-such-user-here"/);
    const path = join(dir, 'vhost.sock');
    const tap = Tap.socketPair({ name: 'vsp1' });
    const b = new VhostUserBackend({ socketPath: path, device: vhostUserNetDevice({ tap: tap.tap }), socketAccess: { uid: 1, gid: 2, mode: 0o660 } });
    try {
      b.start();
      const st = lstatSync(path);
      expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o777 }).toEqual({ uid: 1, gid: 2, mode: 0o660 });
    } finally {
      b.close();
      tap.tap.close();
      for (const p of tap.peers) p.close();
    }
  });
});
