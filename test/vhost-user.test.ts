// The vhost-user backend against a front-end written for the test (QEMU's
// part), over a stand-in TAP: no privileges needed.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { NetDriver } from '../src/driver/net-driver.js';
import { Tap, type TapPeer } from '../src/tap/tap.js';
import { vhostUserNetDevice } from '../src/cli/vhost-user-device.js';
import type { NetDevice } from '../src/net/device.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { native } from '../src/host/binding.js';
import { encode, memRegionPayload, memTablePayload, ProtocolFeature, Req, statePayload, u64Payload, type MemRegion } from '../src/transport/vhost-user/protocol.js';
import { MAX_MEM_SLOTS, MemoryTable } from '../src/transport/vhost-user/memory.js';
import { parseIpv4 as ip } from '../src/util/addr.js';
import { buildArp, parseArp } from '../src/util/packet.js';
import { sh } from './helpers/host.js';
import { tsharkFields } from './helpers/tshark.js';
import { describePrivileged } from './helpers/privileged.js';
import { TestFrontend, VA_BASE } from './helpers/vhost-frontend.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const openFds = () => readdirSync('/proc/self/fd').length;
const n = native();
const F_SEAL_SHRINK = 0x2;
const MB = 1n << 20n;
/** A region of `size` at guest-physical `gpa`, where the test front-end would map it. */
const at = (gpa: bigint, size: bigint): MemRegion => ({ guestPhysAddr: gpa, memorySize: size, userspaceAddr: VA_BASE + gpa, mmapOffset: 0n });

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(5);
  }
}

describe('vhost-user backend', () => {
  let dir: string;
  let tap: Tap;
  let peer: TapPeer;
  let backend: VhostUserBackend<NetDevice>;
  const logs: string[] = [];
  let socket: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vt-vu-'));
    socket = join(dir, 'vhost.sock');
    const sp = Tap.socketPair({ name: 'vu0' });
    tap = sp.tap;
    peer = sp.peers[0]!;
    logs.length = 0;
    backend = new VhostUserBackend({ socketPath: socket, device: vhostUserNetDevice({ tap }), log: (l) => logs.push(l) });
    backend.start();
  });
  afterEach(() => {
    backend.close();
    tap.close();
    peer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function guest(features: { packed?: boolean; protocol?: boolean } = {}) {
    const fe = await TestFrontend.connect(socket, 32 << 20, features.protocol ?? true);
    if (features.packed === false) fe.deviceFeatures &= ~(1n << 34n);
    const driver = new NetDriver(fe, { memory: fe.mem, queueSize: 128 });
    fe.onInterrupt = () => driver.interrupt('vring', 0);
    driver.start();
    await until(() => backend.device.running);
    return { fe, driver };
  }

  for (const packed of [true, false]) {
    it(`carries frames both ways through the guest's rings (${packed ? 'packed' : 'split'})`, async () => {
      const { fe, driver } = await guest({ packed });
      try {
        const frame = new Uint8Array(60).fill(0x42);
        frame.set([2, 0, 0, 0, 0, 1], 0);
        expect(driver.send(frame)).toBe(true);
        const buf = new Uint8Array(2048);
        let got = -11;
        await until(() => (got = peer.read(buf)) > 0);
        expect(got).toBe(72);
        expect(buf.subarray(12, 72)).toEqual(frame);
        const frames: Uint8Array[] = [];
        driver.onFrame = (f) => frames.push(f.frame);
        const inbound = new Uint8Array(12 + 100).fill(7, 12);
        peer.write(inbound);
        await until(() => frames.length === 1);
        expect(frames[0]!.length).toBe(100);
      } finally {
        fe.close();
      }
    });
  }

  it('without protocol features, rings start on their kick fd', async () => {
    const { fe, driver } = await guest({ protocol: false });
    try {
      expect(driver.send(new Uint8Array(60))).toBe(true);
      await until(() => backend.device.metrics.txPackets === 1);
    } finally {
      fe.close();
    }
  });

  it('GET_VRING_BASE of the receive ring: the chains popped ahead and not used are given back, not lost', async () => {
    const { fe, driver } = await guest({ packed: false });
    try {
      const frames: Uint8Array[] = [];
      driver.onFrame = (f) => frames.push(f.frame);
      peer.write(new Uint8Array(12 + 100).fill(7, 12));
      await until(() => frames.length === 1);
      const r = await fe.request(Req.GET_VRING_BASE, statePayload(0, 0));
      expect(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getUint32(4, true)).toBe(1); // the one chain used
    } finally {
      fe.close();
    }
  });

  it('GET_VRING_BASE stops the ring and gives its position back', async () => {
    const { fe, driver } = await guest({ packed: false });
    try {
      for (let i = 0; i < 3; i++) driver.send(new Uint8Array(60));
      await until(() => backend.device.metrics.txPackets === 3);
      const r = await fe.request(Req.GET_VRING_BASE, statePayload(1, 0));
      const dv = new DataView(r.payload.buffer, r.payload.byteOffset, 8);
      expect(dv.getUint32(0, true)).toBe(1);
      expect(dv.getUint32(4, true)).toBe(3); // three chains taken from the transmit ring
      expect(backend.device.running).toBe(false);
    } finally {
      fe.close();
    }
  });

  it('bad messages get an error reply and a log line; the connection goes on', async () => {
    const { fe } = await guest();
    try {
      expect(await fe.acked(Req.SET_VRING_NUM, statePayload(99, 64))).toBe(1n); // ring out of range
      expect(await fe.acked(Req.SET_VRING_NUM, statePayload(0, 0))).toBe(1n); // size 0
      expect(await fe.acked(Req.SET_VRING_KICK, u64Payload(0n))).toBe(1n); // fd missing
      expect(await fe.acked(99)).toBe(1n); // unknown request
      expect(await fe.acked(Req.SET_LOG_BASE, u64Payload(0n))).toBe(1n);
      expect(logs.filter((l) => l.startsWith('refused')).length).toBe(5);
      expect(logs.some((l) => l.includes('ring 99 out of range'))).toBe(true);
      // The connection still answers.
      const r = await fe.request(Req.GET_QUEUE_NUM);
      expect(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getBigUint64(0, true)).toBe(3n); // a pair and the control queue
    } finally {
      fe.close();
    }
  });

  it('a malformed header closes the connection; a new front-end connects; nothing leaks', async () => {
    const before = openFds();
    const { fe } = await guest();
    await fe.request(Req.GET_QUEUE_NUM);
    fe.sendRaw(encode(Req.GET_FEATURES, 0x2)); // protocol version 2: not ours
    await until(() => logs.some((l) => l.includes('front-end gone') && l.includes('version 2')));
    fe.close();
    await sleep(20);
    expect(openFds()).toBe(before);
    // A second front-end works.
    const again = await guest();
    try {
      expect(again.driver.send(new Uint8Array(60))).toBe(true);
      await until(() => backend.device.metrics.txPackets >= 1);
    } finally {
      again.fe.close();
    }
  });

  it('a memory table that does not add up is refused, its fds closed, and the old table kept', async () => {
    const { fe, driver } = await guest();
    try {
      const region = { guestPhysAddr: 0n, memorySize: 1n << 20n, userspaceAddr: 0n, mmapOffset: 0n };
      const before = openFds();
      const memfd = n.memfdCreate('table', 1 << 20);
      expect(await fe.acked(Req.SET_MEM_TABLE, memTablePayload([region]), [])).toBe(1n); // a region without its fd
      expect(await fe.acked(Req.SET_MEM_TABLE, memTablePayload([]), [memfd])).toBe(1n); // no regions
      expect(await fe.acked(Req.SET_MEM_TABLE, memTablePayload([{ ...region, memorySize: 0n }]), [memfd])).toBe(1n);
      n.close(memfd);
      expect(openFds()).toBe(before); // each refused message's copy of the fd was closed
      expect(logs.filter((l) => l.startsWith('refused SET_MEM_TABLE')).length).toBe(3);
      expect(driver.send(new Uint8Array(60))).toBe(true);
      await until(() => backend.device.metrics.txPackets === 1);
    } finally {
      fe.close();
    }
  });

  it('a socket that cannot listen is a HostError naming the errno', () => {
    const other = new VhostUserBackend({ socketPath: join(dir, 'missing', 'vhost.sock'), device: vhostUserNetDevice({ tap }) });
    try {
      expect(() => other.start()).toThrow(/listen: ENOENT \(no such file or directory\)/);
    } finally {
      other.close();
    }
  });

  it('close removes the socket file', () => {
    expect(existsSync(socket)).toBe(true);
    backend.close();
    expect(existsSync(socket)).toBe(false);
  });

  // CONFIGURE_MEM_SLOTS: regions come and go one at a time while the device
  // runs, each checked as SET_MEM_TABLE's are; each refusal leaves the table,
  // the traffic and the fds as they were. The guest's RAM is region 0 (32 MiB
  // at 0), the rings in it.
  async function slotGuest(slots = true) {
    const fe = await TestFrontend.connect(socket, 32 << 20, true, slots ? 1n << BigInt(ProtocolFeature.CONFIGURE_MEM_SLOTS) : 0n);
    const driver = new NetDriver(fe, { memory: fe.mem, queueSize: 128 });
    fe.onInterrupt = () => driver.interrupt('vring', 0);
    driver.start();
    await until(() => backend.device.running);
    const sends = async () => {
      const before = backend.device.metrics.txPackets;
      expect(driver.send(new Uint8Array(60))).toBe(true);
      await until(() => backend.device.metrics.txPackets === before + 1);
    };
    return { fe, sends };
  }

  it('GET_MAX_MEM_SLOTS answers once the feature is agreed, and is refused before', async () => {
    const off = await slotGuest(false);
    expect(await off.fe.acked(Req.GET_MAX_MEM_SLOTS)).toBe(1n);
    expect(await off.fe.acked(Req.ADD_MEM_REG, memRegionPayload(at(64n * MB, MB)), [n.memfdCreate('r', 1 << 20)])).toBe(1n);
    off.fe.close();
    await until(() => logs.filter((l) => l.startsWith('front-end gone')).length === 1);
    const { fe } = await slotGuest();
    try {
      const r = await fe.request(Req.GET_MAX_MEM_SLOTS);
      expect(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getBigUint64(0, true)).toBe(BigInt(MAX_MEM_SLOTS));
      expect(MAX_MEM_SLOTS).toBeGreaterThanOrEqual(32);
    } finally {
      fe.close();
    }
  });

  it('ADD_MEM_REG and REM_MEM_REG while the device runs: the table grows and shrinks, traffic goes on, each fd closed once', async () => {
    const { fe, sends } = await slotGuest();
    try {
      const before = openFds();
      const memfd = n.memfdCreate('dimm', 1 << 20, { sealable: true });
      expect(await fe.acked(Req.ADD_MEM_REG, memRegionPayload(at(64n * MB, MB)), [memfd])).toBe(0n);
      const info = n.fdInfo(memfd);
      expect(typeof info !== 'number' && (info.seals & F_SEAL_SHRINK) !== 0).toBe(true); // sealed against shrinking
      await sends();
      // Region 0 holds the rings: it cannot go while they run.
      expect(await fe.acked(Req.REM_MEM_REG, memRegionPayload(at(0n, 32n * MB)))).toBe(1n);
      expect(logs.at(-1)).toMatch(/refused REM_MEM_REG: ring address 0x[0-9a-f]+ \(\d+ bytes\) is in no memory region/);
      await sends();
      // QEMU 7.2 sends the region's fd with REM_MEM_REG: the back-end closes it, and its own.
      expect(await fe.acked(Req.REM_MEM_REG, memRegionPayload(at(64n * MB, MB)), [memfd])).toBe(0n);
      n.close(memfd);
      expect(openFds()).toBe(before);
      await sends();
      expect(logs.filter((l) => l.startsWith('refused')).length).toBe(1);
    } finally {
      fe.close();
    }
  });

  it('refusals: overlap, a file too small, no fd, not a file, bad sizes, no such region, the rings\' region; nothing changes, nothing leaks', async () => {
    const { fe, sends } = await slotGuest();
    try {
      const before = openFds();
      const small = n.memfdCreate('small', 4096);
      const ok = n.memfdCreate('ok', 1 << 20);
      const efd = n.eventfdCreate();
      const refusals: [string, number, Uint8Array, number[]][] = [
        ['regions 0 and 1 overlap', Req.ADD_MEM_REG, memRegionPayload(at(16n * MB, MB)), [ok]],
        ['runs past the end of its file', Req.ADD_MEM_REG, memRegionPayload(at(64n * MB, MB)), [small]],
        ['expected one fd', Req.ADD_MEM_REG, memRegionPayload(at(64n * MB, MB)), []],
        ['expected one fd', Req.ADD_MEM_REG, memRegionPayload(at(64n * MB, MB)), [ok, small]],
        ['not a file that can be mapped', Req.ADD_MEM_REG, memRegionPayload(at(64n * MB, MB)), [efd]],
        ['size is not 1 byte', Req.ADD_MEM_REG, memRegionPayload(at(64n * MB, 0n)), [ok]],
        ['ends past guest-physical 2^52', Req.ADD_MEM_REG, memRegionPayload(at((1n << 52n) - MB / 2n, MB)), [ok]],
        ['wraps past 2^64', Req.ADD_MEM_REG, memRegionPayload({ ...at(64n * MB, MB), userspaceAddr: (1n << 64n) - 4096n }), [ok]],
        ['needs 40', Req.ADD_MEM_REG, new Uint8Array(16), [ok]],
        ['no region at', Req.REM_MEM_REG, memRegionPayload(at(64n * MB, MB)), []],
        ['no region at', Req.REM_MEM_REG, memRegionPayload({ ...at(0n, 32n * MB), userspaceAddr: 0n }), []],
        ["the device's rings would be in no memory region", Req.REM_MEM_REG, memRegionPayload(at(0n, 32n * MB)), []],
      ];
      for (const [why, req, payload, fds] of refusals) {
        const count = logs.length;
        expect(await fe.acked(req, payload, fds), why).toBe(1n);
        expect(logs.slice(count).join('\n'), why).toContain(why);
      }
      for (const fd of [small, ok, efd]) n.close(fd);
      expect(openFds()).toBe(before);
      await sends(); // region 0 and the rings in it as before
    } finally {
      fe.close();
    }
  });

  it('the same region added again (QEMU 7.2: once per queue pair) is counted, and goes with its last REM_MEM_REG', async () => {
    const { fe, sends } = await slotGuest();
    try {
      const before = openFds();
      const memfd = n.memfdCreate('dimm', 1 << 20);
      const other = n.memfdCreate('other', 1 << 20);
      const dimm = memRegionPayload(at(64n * MB, MB));
      expect(await fe.acked(Req.ADD_MEM_REG, dimm, [memfd])).toBe(0n);
      expect(await fe.acked(Req.ADD_MEM_REG, dimm, [memfd])).toBe(0n); // the same file again
      expect(await fe.acked(Req.ADD_MEM_REG, dimm, [other])).toBe(1n); // the same numbers over another file
      expect(logs.at(-1)).toContain('regions 1 and 2 overlap');
      expect(openFds()).toBe(before + 3); // the table's one fd of the region, and the test's two
      expect(await fe.acked(Req.REM_MEM_REG, dimm)).toBe(0n);
      expect(openFds()).toBe(before + 3); // still in use once
      expect(await fe.acked(Req.REM_MEM_REG, dimm)).toBe(0n);
      expect(openFds()).toBe(before + 2);
      expect(await fe.acked(Req.REM_MEM_REG, dimm)).toBe(1n);
      for (const fd of [memfd, other]) n.close(fd);
      expect(openFds()).toBe(before);
      await sends();
    } finally {
      fe.close();
    }
  });

  it(`up to ${MAX_MEM_SLOTS} regions; one more is refused`, async () => {
    const { fe, sends } = await slotGuest();
    try {
      const before = openFds();
      for (let i = 1; i < MAX_MEM_SLOTS; i++) {
        const fd = n.memfdCreate(`slot${i}`, 4096);
        expect(await fe.acked(Req.ADD_MEM_REG, memRegionPayload(at(64n * MB + BigInt(i) * MB, 4096n)), [fd]), `slot ${i}`).toBe(0n);
        n.close(fd);
      }
      const fd = n.memfdCreate('one-more', 4096);
      expect(await fe.acked(Req.ADD_MEM_REG, memRegionPayload(at(32n * MB, 4096n)), [fd])).toBe(1n);
      n.close(fd);
      expect(logs.some((l) => l.includes(`all ${MAX_MEM_SLOTS} memory slots are in use`))).toBe(true);
      expect(openFds()).toBe(before + MAX_MEM_SLOTS - 1); // the table holds one fd per region added
      await sends();
    } finally {
      fe.close();
    }
  });
});

describe('vhost-user back-end as a client', () => {
  it('connects to a front-end that listens, and reconnects when it goes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-vuc-'));
    const socket = join(dir, 'qemu.sock');
    const { tap, peers } = Tap.socketPair({ name: 'vuc0' });
    const logs: string[] = [];
    const backend = new VhostUserBackend({ socketPath: socket, device: vhostUserNetDevice({ tap }), client: true, log: (l) => logs.push(l) });
    try {
      backend.start(); // nothing listens yet: it keeps trying
      for (const round of [1, 2]) {
        const fe = await TestFrontend.listen(socket, 32 << 20);
        const driver = new NetDriver(fe, { memory: fe.mem, queueSize: 64 });
        driver.start();
        await until(() => backend.device.running);
        expect(driver.send(new Uint8Array(60).fill(round))).toBe(true);
        const buf = new Uint8Array(128);
        let got = -11;
        await until(() => (got = peers[0]!.read(buf)) > 0);
        expect(buf[12]).toBe(round);
        fe.close(); // the front-end goes away; the back-end reconnects to the next one
        rmSync(socket, { force: true });
        await until(() => logs.filter((l) => l.startsWith('front-end gone')).length === round);
      }
      expect(logs.filter((l) => l === 'front-end connected').length).toBe(2);
    } finally {
      backend.close();
      tap.close();
      for (const p of peers) p.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describePrivileged('virtio-tap vhost-user (the command)', () => {
  it('serves a front-end on a real TAP until SIGTERM, then exits 0 and removes its socket; --trace and --pcap show it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-vucli-'));
    const socket = join(dir, 'vu.sock');
    const pcap = join(dir, 'vu.pcapng');
    const root = resolve(import.meta.dirname, '..');
    const cli = ['src/cli/main.ts', 'vhost-user', '--socket', socket, '--tap', 'vtvu0', '--trace', '--pcap', pcap];
    // One process (tsx's loader, not its cli, which relays SIGINT and SIGTERM only): SIGUSR1 must reach the command.
    const child = spawn(process.execPath, ['--import', 'tsx', ...cli], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await until(() => out.includes('vhost-user back-end for vtvu0'), 20_000);
      // The back-end created the TAP; the host side gets an address on it.
      sh('ip', 'addr', 'add', '198.18.116.1/24', 'dev', 'vtvu0');
      const fe = await TestFrontend.connect(socket, 32 << 20, true);
      const driver = new NetDriver(fe, { memory: fe.mem, queueSize: 128 });
      fe.onInterrupt = () => driver.interrupt('vring', 0);
      driver.start();
      const mac = driver.mac;
      // ARP for the host through the back-end in the other process.
      driver.send(buildArp({ op: 1, senderMac: mac, senderIp: ip('198.18.116.2'), targetMac: new Uint8Array(6), targetIp: ip('198.18.116.1') }));
      let reply: ReturnType<typeof parseArp> = null;
      driver.onFrame = (f) => {
        const a = parseArp(f.frame);
        if (a !== null && a.op === 2) reply = a;
      };
      await until(() => reply !== null, 3000);
      // SIGUSR1: the device runs the control queue (the driver acked CTRL_VQ) and GUEST_ANNOUNCE, so it asks.
      child.kill('SIGUSR1');
      await until(() => out.includes('SIGUSR1: '), 3000);
      expect(out).toContain('SIGUSR1: asked the guest to announce itself');
      fe.close();
      child.kill('SIGTERM');
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      expect(code).toBe(0);
      expect(existsSync(socket)).toBe(false);
      expect(out).toContain('SIGTERM: stopping');
      // The trace (stderr): readable lines naming the spec.
      expect(out).toMatch(/features accepted: .*\[§2\.2 Feature Bits/);
      expect(out).toMatch(/q1 pop .*head \d+.*\[§2\.[78] /);
      expect(out).toMatch(/q1 TAP write \d+ bytes/);
      // The capture: the ARP request out and the host's reply in.
      const rows = tsharkFields(pcap, ['arp.opcode', 'frame.comment'], 'arp');
      expect(rows.some((r) => r[0] === '1' && r[1]!.includes('from guest'))).toBe(true);
      expect(rows.some((r) => r[0] === '2' && r[1]!.includes('to guest'))).toBe(true);
      expect(out).toMatch(/wrote \d+ frames to /);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 40_000);
});

describe('MemoryTable.mapAdded', () => {
  it('the added region reads what the front-end wrote through its own mapping', () => {
    const table = new MemoryTable();
    const fd = n.memfdCreate('dimm', 1 << 16);
    const ab = n.mmapShared(fd, 1 << 16, 0);
    if (typeof ab === 'number') throw new Error(`mmap: ${ab}`);
    new Uint8Array(ab).set([1, 2, 3, 4], 0x100);
    const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
    const next = table.mapAdded(dv(memRegionPayload(at(0x4000_0000n, 1n << 16n))), [fd])!;
    table.release(table.swap(next), true, next);
    expect(Array.from(table.guest!.view(0x4000_0100, 4))).toEqual([1, 2, 3, 4]);
    expect(table.translate(VA_BASE + 0x4000_0100n, 4)).toBe(0x4000_0100);
    table.unmapAll();
    n.unmap(ab);
  });
});
