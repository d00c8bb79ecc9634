// The Tap against the host kernel, in the run's own network namespace.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { IoPlan, registerIoRegion, unregisterIoRegion } from '../src/host/io-plan.js';
import { Link } from '../src/tap/link.js';
import { Tap, TunOffload } from '../src/tap/tap.js';
import { parseIpv4 as ip, parseMac } from '../src/util/addr.js';
import { buildArp, buildUdp, completeChecksum, parseArp, parseUdp, pseudoHeaderSum } from '../src/util/packet.js';
import { linkCounter, readMatching, sh, udpReceiver } from './helpers/host.js';
import { describePrivileged } from './helpers/privileged.js';

const HOST = '198.18.1.1';
const PEER = '198.18.1.2';
const PEER_MAC = parseMac('02:00:00:00:01:02');
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;

describePrivileged('Tap with the host kernel as the peer', () => {
  let tap: Tap;

  beforeEach(() => {
    tap = Tap.open({ name: 'vtt%d' });
    tap.setUp();
    tap.setIpv4(HOST, 24);
  });
  afterEach(() => {
    tap.close();
  });

  it('a frame written to the TAP arrives at a host UDP socket', async () => {
    const rx = await udpReceiver(HOST);
    try {
      const frame = buildUdp({
        srcMac: PEER_MAC,
        dstMac: parseMac(tap.mac),
        src: ip(PEER),
        dst: ip(HOST),
        srcPort: 4000,
        dstPort: rx.port,
        data: new TextEncoder().encode('hello from behind the tap'),
      });
      // Through the batched path: the frame lives in a registered region.
      const mem = new Uint8Array(4096);
      mem.set(frame, 100);
      const region = registerIoRegion(mem);
      const plan = new IoPlan(4);
      plan.beginFrame();
      plan.addSegment(region, 100, 20); // split in two segments on purpose
      plan.addSegment(region, 120, frame.length - 20);
      expect(tap.queue.writeBatch(plan)).toBe(1);
      expect(plan.results[0]).toBe(frame.length);
      unregisterIoRegion(region);
      const msg = await rx.next();
      expect(msg?.data.toString()).toBe('hello from behind the tap');
      expect(msg?.from).toBe(PEER);
      expect(msg?.port).toBe(4000);
    } finally {
      await rx.close();
    }
  });

  it('a frame the host sends to a neighbour behind the TAP is read from it, after ARP', async () => {
    const tx = await udpReceiver(HOST);
    try {
      tx.sock.send('to the neighbour', 5555, PEER);
      // The kernel first asks who has PEER; answer as the neighbour would.
      const who = await readMatching(tap.queue, (f) => {
        const a = parseArp(f);
        return a !== null && a.op === 1 && a.targetIp === ip(PEER) ? a : null;
      });
      expect(who).not.toBeNull();
      const reply = buildArp({ op: 2, senderMac: PEER_MAC, senderIp: ip(PEER), targetMac: who!.senderMac, targetIp: who!.senderIp });
      expect(tap.queue.write(reply)).toBe(reply.length);
      const udp = await readMatching(tap.queue, (f) => {
        const u = parseUdp(f);
        return u !== null && u.dstPort === 5555 ? u : null;
      });
      expect(udp).not.toBeNull();
      expect(new TextDecoder().decode(udp!.data)).toBe('to the neighbour');
      expect(udp!.dstMac).toEqual(PEER_MAC);
      expect(udp!.checksumOk).toBe(true);
    } finally {
      await tx.close();
    }
  });

  it('readable and writable events fire from the loop', async () => {
    const writable = new Promise<void>((r) => tap.queue.once('writable', r));
    tap.queue.watch({ writable: true });
    await writable;
    tap.queue.watch({});
    const readable = new Promise<void>((r) => tap.queue.once('readable', r));
    tap.queue.watch({ readable: true });
    const s = await udpReceiver(HOST);
    s.sock.send('x', 9, PEER); // makes the kernel send an ARP request into the TAP
    await readable;
    tap.queue.watch({});
    await s.close();
  });

  it('link settings: MTU, MAC, up/down, address, bridge', () => {
    tap.setMtu(9000);
    expect(tap.mtu).toBe(9000);
    tap.setMac('02:11:22:33:44:55');
    expect(tap.mac).toBe('02:11:22:33:44:55');
    expect(tap.isUp).toBe(true);
    tap.setUp(false);
    expect(tap.isUp).toBe(false);
    tap.setUp(true);
    expect(sh('ip', '-4', '-o', 'addr', 'show', 'dev', tap.name)).toContain(`${HOST}/24`);
    const br = Link.createBridge('vttbr0');
    try {
      tap.addToBridge('vttbr0');
      expect(sh('ip', '-o', 'link', 'show', 'dev', tap.name)).toContain('master vttbr0');
      tap.link.removeFromBridge('vttbr0');
      expect(sh('ip', '-o', 'link', 'show', 'dev', tap.name)).not.toContain('master vttbr0');
    } finally {
      Link.deleteBridge(br.name);
    }
    expect(Link.exists('vttbr0')).toBe(false);
  });
});

describePrivileged('Tap with a virtio-net header', () => {
  let tap: Tap;
  beforeEach(() => {
    tap = Tap.open({ name: 'vth%d', vnetHdr: true });
    tap.setUp();
    tap.setIpv4('198.18.2.1', 24);
  });
  afterEach(() => tap.close());

  it('reports the header size and kernel features', () => {
    expect(tap.vnetHdrSize).toBe(12);
    expect(tap.kernelFeatures & 0x4000).toBe(0x4000); // IFF_VNET_HDR supported
  });

  it('round trip with a checksum-offloaded frame: the kernel completes NEEDS_CSUM on write', async () => {
    const rx = await udpReceiver('198.18.2.1');
    try {
      const base = {
        srcMac: PEER_MAC,
        dstMac: parseMac(tap.mac),
        src: ip('198.18.2.2'),
        dst: ip('198.18.2.1'),
        srcPort: 4001,
        dstPort: rx.port,
      };
      // Without NEEDS_CSUM a frame carrying only the pseudo-header sum has a
      // wrong checksum, and the host stack drops it: the test can fail.
      const hdrPlain = new Uint8Array(12);
      const bad = buildUdp({ ...base, data: new TextEncoder().encode('bad'), checksum: 'partial' });
      expect(tap.queue.write(concat(hdrPlain, bad))).toBe(12 + bad.length);
      // With NEEDS_CSUM, csum_start at the UDP header and csum_offset 6, it is whole.
      const good = buildUdp({ ...base, data: new TextEncoder().encode('offloaded'), checksum: 'partial' });
      const hdr = vnetHdr({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 34, csumOffset: 6 });
      expect(tap.queue.write(concat(hdr, good))).toBe(12 + good.length);
      const msg = await rx.next();
      expect(msg?.data.toString()).toBe('offloaded');
      expect(await rx.next(300)).toBeNull();
    } finally {
      await rx.close();
    }
  });

  it('round trip with a checksum-offloaded frame: the host hands over NEEDS_CSUM on read', async () => {
    expect(tap.setOffloads(TunOffload.CSUM)).toEqual({ accepted: TunOffload.CSUM, refused: 0 });
    sh('ip', 'neigh', 'replace', '198.18.2.2', 'lladdr', '02:00:00:00:01:02', 'dev', tap.name);
    const tx = await udpReceiver('198.18.2.1');
    try {
      tx.sock.send('partial please', 6000, '198.18.2.2');
      const got = await readMatching(tap.queue, (f) => {
        const u = parseUdp(f.subarray(12));
        return u !== null && u.dstPort === 6000 ? { hdr: f.subarray(0, 12), frame: f.slice(12) } : null;
      });
      expect(got).not.toBeNull();
      const dv = new DataView(got!.hdr.buffer, got!.hdr.byteOffset, 12);
      expect(dv.getUint8(0) & VIRTIO_NET_HDR_F_NEEDS_CSUM).toBe(VIRTIO_NET_HDR_F_NEEDS_CSUM);
      const start = dv.getUint16(6, true);
      const offset = dv.getUint16(8, true);
      expect(start).toBe(34);
      expect(offset).toBe(6);
      // Complete the checksum as a NIC would, then check it verifies.
      const f = got!.frame;
      expect(completeChecksum(f, start, offset)).toBe(true);
      const u = parseUdp(f)!;
      expect(u.checksumOk).toBe(true);
      expect(u.checksum).not.toBe(pseudoHeaderSum(u.src, u.dst, 17, 8 + u.data.length));
    } finally {
      await tx.close();
    }
  });

  it('offload bits the kernel refuses are reported, not fatal', () => {
    // TSO without CSUM is refused by tun; an unknown bit is refused too.
    expect(tap.setOffloads(TunOffload.TSO4)).toEqual({ accepted: 0, refused: TunOffload.TSO4 });
    expect(tap.setOffloads(TunOffload.CSUM | 0x8000)).toEqual({ accepted: TunOffload.CSUM, refused: 0x8000 });
    expect(tap.offloads).toBe(TunOffload.CSUM);
    const all = TunOffload.CSUM | TunOffload.TSO4 | TunOffload.TSO6 | TunOffload.TSO_ECN | TunOffload.UFO;
    expect(tap.setOffloads(all).accepted & all).toBe(all);
  });
});

describePrivileged('Tap errors a person can act on', () => {
  it('a name too long', () => {
    expect(() => Tap.open({ name: 'a-very-long-interface-name' })).toThrow(
      expect.objectContaining({ code: 'ERR_TAP_NAME_TOO_LONG', message: expect.stringContaining('at most 15') }),
    );
  });

  it('a name in use by another TAP, and by a link that is not a TAP', () => {
    const a = Tap.open({ name: 'vtbusy0' });
    try {
      expect(() => Tap.open({ name: 'vtbusy0' })).toThrow(
        expect.objectContaining({ code: 'EBUSY', syscall: 'TUNSETIFF', ifname: 'vtbusy0', message: expect.stringContaining('in use') }),
      );
    } finally {
      a.close();
    }
    expect(() => Tap.open({ name: 'lo' })).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('not a TAP') }));
  });

  it('use after close', () => {
    const t = Tap.open({ name: 'vtclosed0' });
    const q = t.queue;
    t.close();
    expect(() => t.mtu).toThrow(expect.objectContaining({ code: 'ERR_TAP_CLOSED' }));
    expect(() => t.setOffloads(1)).toThrow(expect.objectContaining({ code: 'ERR_TAP_CLOSED' }));
    expect(() => q.watch({ readable: true })).toThrow(expect.objectContaining({ code: 'ERR_TAP_CLOSED' }));
    expect(q.write(new Uint8Array(60))).toBe(-9); // -EBADF, a number on the hot path
    t.close(); // twice is fine
  });

  it('attaching to a TAP that does not exist says how to create it', () => {
    expect(() => Tap.attach('vtnothere0')).toThrow(
      expect.objectContaining({ code: 'ERR_TAP_NOT_FOUND', message: expect.stringContaining('ip tuntap add dev vtnothere0') }),
    );
  });
});

describePrivileged('Tap I/O plans', () => {
  it('a plan that points outside its region is refused and nothing is written', () => {
    const tap = Tap.open({ name: 'vtplan%d' });
    try {
      tap.setUp();
      const mem = new Uint8Array(256);
      const region = registerIoRegion(mem);
      const before = linkCounter(tap.name, 'rx_packets');
      const plan = new IoPlan(8);
      plan.beginFrame();
      plan.addSegment(region, 200, 100); // ends past the region
      plan.beginFrame();
      plan.addSegment(region + 7, 0, 60); // no such region
      plan.beginFrame();
      plan.addSegment(region, -1, 60);
      plan.beginFrame();
      plan.addSegment(region, 0, 60); // a good frame still goes
      expect(tap.queue.writeBatch(plan)).toBe(4);
      expect(Array.from(plan.results.subarray(0, 4))).toEqual([-14, -14, -14, 60]);
      expect(linkCounter(tap.name, 'rx_packets')).toBe(before + 1);
      unregisterIoRegion(region);
      // After unregistering, the same plan is refused whole.
      expect(tap.queue.writeBatch(plan)).toBe(4);
      expect(Array.from(plan.results.subarray(0, 4))).toEqual([-14, -14, -14, -14]);
      expect(linkCounter(tap.name, 'rx_packets')).toBe(before + 1);
    } finally {
      tap.close();
    }
  });

  it('reads into planned buffers and stops at EAGAIN', async () => {
    const tap = Tap.open({ name: 'vtread%d' });
    try {
      tap.setUp();
      tap.setIpv4('198.18.3.1', 24);
      sh('ip', 'neigh', 'replace', '198.18.3.2', 'lladdr', '02:00:00:00:03:02', 'dev', tap.name);
      const tx = await udpReceiver('198.18.3.1');
      for (let i = 0; i < 3; i++) tx.sock.send(`frame ${i}`, 7000, '198.18.3.2');
      await new Promise((r) => setTimeout(r, 200));
      const mem = new Uint8Array(8 * 2048);
      const region = registerIoRegion(mem);
      const plan = new IoPlan(8);
      for (let i = 0; i < 8; i++) {
        plan.beginFrame();
        plan.addSegment(region, i * 2048, 14); // Ethernet header in one segment...
        plan.addSegment(region, i * 2048 + 14, 2048 - 14); // ...the rest in another
      }
      const n = tap.queue.readBatch(plan);
      const got: string[] = [];
      for (let i = 0; i < n; i++) {
        const r = plan.results[i]!;
        if (r < 0) {
          expect(r).toBe(-11); // EAGAIN ends the batch
          expect(i).toBe(n - 1);
          break;
        }
        const u = parseUdp(mem.subarray(i * 2048, i * 2048 + r));
        if (u !== null) got.push(new TextDecoder().decode(u.data));
      }
      expect(got).toEqual(['frame 0', 'frame 1', 'frame 2']);
      expect(plan.results[n - 1]).toBe(-11);
      unregisterIoRegion(region);
      await tx.close();
    } finally {
      tap.close();
    }
  });
});

describePrivileged('Tap queues and persistence', () => {
  it('a multi-queue TAP has one fd per queue, each carrying frames', async () => {
    const tap = Tap.open({ name: 'vtmq%d', queues: 2 });
    try {
      expect(tap.queues.length).toBe(2);
      expect(tap.queues[0]!.fd).not.toBe(tap.queues[1]!.fd);
      tap.setUp();
      const before = linkCounter(tap.name, 'rx_packets');
      const f = buildArp({ op: 1, senderMac: PEER_MAC, senderIp: ip('198.18.4.2'), targetMac: new Uint8Array(6), targetIp: ip('198.18.4.1') });
      expect(tap.queues[0]!.write(f)).toBe(f.length);
      expect(tap.queues[1]!.write(f)).toBe(f.length);
      expect(linkCounter(tap.name, 'rx_packets')).toBe(before + 2);
    } finally {
      tap.close();
    }
    expect(Link.exists('vtmq0')).toBe(false);
  });

  it('a persistent TAP outlives its fds and can be attached to by name', () => {
    const t = Tap.open({ name: 'vtpersist0', persist: true });
    t.close();
    expect(Link.exists('vtpersist0')).toBe(true);
    const again = Tap.attach('vtpersist0');
    expect(again.name).toBe('vtpersist0');
    again.setPersistent(false);
    again.close();
    expect(Link.exists('vtpersist0')).toBe(false);
  });
});

describePrivileged('Tap without privileges', () => {
  const NOBODY = 65534;
  const root = resolve(import.meta.dirname, '..');
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'vt-unpriv-'));
    sh('chown', `${NOBODY}:${NOBODY}`, dir);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  // Runs a script as uid 65534 with /dev/net/tun usable by everyone, in a mount
  // namespace of its own (here /dev/net/tun is 0600, as on many hosts).
  function runAsNobody(script: string): { status: number | null; stdout: string; stderr: string } {
    const file = join(dir, 'child.ts');
    writeFileSync(file, script, { mode: 0o644 });
    const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
    const inner =
      'mount -t tmpfs -o mode=755 none /dev/net && mknod -m 666 /dev/net/tun c 10 200 && ' +
      `exec setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups --inh-caps=-all ` +
      `env HOME=${dir} TMPDIR=${dir} "${process.execPath}" "${tsx}" "${file}"`;
    const r = spawnSync('unshare', ['--mount', '--', 'sh', '-c', inner], { encoding: 'utf8', cwd: root, timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  it('attaches to a TAP the user owns, and gets a fix-it message for one it does not', () => {
    const owned = Tap.open({ name: 'vtowned0', persist: true, owner: NOBODY });
    owned.setUp(); // tun refuses writes (EIO) while the link is down
    owned.close();
    const other = Tap.open({ name: 'vtroot0', persist: true, owner: 0 });
    other.close();
    try {
      const before = linkCounter('vtowned0', 'rx_packets');
      const tapModule = join(root, 'src', 'tap', 'tap.ts');
      const r = runAsNobody(`
        import { Tap } from ${JSON.stringify(tapModule)};
        const out: Record<string, unknown> = { uid: process.getuid!() };
        const t = Tap.attach('vtowned0');
        out.name = t.name;
        out.wrote = t.queue.write(new Uint8Array(60).fill(0xff));
        t.close();
        try { Tap.attach('vtroot0'); out.other = 'attached?'; }
        catch (e) { out.other = { code: (e as any).code, message: (e as Error).message }; }
        console.log(JSON.stringify(out));
      `);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
      expect(out.uid).toBe(NOBODY);
      expect(out.name).toBe('vtowned0');
      expect(out.wrote).toBe(60);
      expect(out.other.code).toBe('EPERM');
      expect(out.other.message).toContain('ip tuntap add dev vtroot0 mode tap user');
      expect(linkCounter('vtowned0', 'rx_packets')).toBe(before + 1);
    } finally {
      for (const name of ['vtowned0', 'vtroot0']) {
        const t = Tap.attach(name);
        t.setPersistent(false);
        t.close();
      }
    }
  });
});

function vnetHdr(h: { flags: number; csumStart: number; csumOffset: number }): Uint8Array {
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  dv.setUint8(0, h.flags);
  dv.setUint16(6, h.csumStart, true);
  dv.setUint16(8, h.csumOffset, true);
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

describe('helpers', () => {
  it('concat keeps both parts in order', () => {
    expect(Array.from(concat(Uint8Array.of(1), Uint8Array.of(2, 3)))).toEqual([1, 2, 3]);
  });
});
