// The control queue's filters, receive backpressure, reset under traffic,
// metrics, and rate limits, against the host kernel.
import { expect, it } from 'vitest';

import {
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_RX_ALLMULTI,
  VIRTIO_NET_CTRL_RX_NOBCAST,
  VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_CTRL_VLAN_ADD,
  VIRTIO_NET_ERR,
  VIRTIO_NET_OK,
} from '../src/net/constants.js';
import { RxFilter } from '../src/net/filter.js';
import { parseIpv4 as ip, parseMac } from '../src/util/addr.js';
import { buildArp, buildIcmpEcho, buildUdp, parseArp, parseIcmpEcho, parseUdp } from '../src/util/packet.js';
import { injectFrame, linkCounter, sh, sleep, udpReceiver } from './helpers/host.js';
import { startNet } from './helpers/net-rig.js';
import { describePrivileged } from './helpers/privileged.js';

const u32 = (n: number) => Uint8Array.of(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
const u16 = (n: number) => Uint8Array.of(n & 0xff, n >>> 8);

it("a filter's state builds the same filter elsewhere (a worker's copy); reset empties its tables", () => {
  const f = new RxFilter();
  f.reset(parseMac('02:00:00:00:00:01'));
  f.promisc = false;
  f.nobcast = true;
  f.vlanFiltering = true;
  f.setTables([parseMac('02:aa:bb:cc:dd:ee')], [parseMac('01:00:5e:00:00:fb')]);
  f.setVlan(7, true);
  const copy = RxFilter.fromState(structuredClone(f.state()));
  expect(copy.state()).toEqual(f.state());
  const frame = (dst: string) => Uint8Array.from([...parseMac(dst), 2, 0, 0, 0, 0, 2, 8, 0, 0, 0]);
  for (const dst of ['02:00:00:00:00:01', '02:aa:bb:cc:dd:ee', '02:aa:bb:cc:dd:ef', '01:00:5e:00:00:fb', '01:00:5e:00:00:fc', 'ff:ff:ff:ff:ff:ff']) {
    expect(copy.check(frame(dst), 0, 16)).toBe(f.check(frame(dst), 0, 16));
  }
  f.reset(parseMac('02:00:00:00:00:01'));
  expect(f.state()).toMatchObject({ promisc: true, unicast: [], multicast: [], vlans: [] });
});

for (const inOrder of [true, false]) {
describePrivileged(`net device: control queue filters (IN_ORDER ${inOrder ? 'on: frame by frame' : 'off: batched'})`, () => {
  it('RX modes and the MAC table drop exactly what they should, and count it', async () => {
    const rig = await startNet({ subnet: inOrder ? 90 : 100, features: { IN_ORDER: inOrder } });
    const sock = await udpReceiver(rig.hostIp);
    try {
      const d = rig.driver;
      const other = parseMac('02:aa:bb:cc:dd:ee');
      const mcast = parseMac('01:00:5e:00:00:fb');
      // Frames injected from the host side with chosen destination MACs, through a packet socket.
      const otherIp = `198.18.${inOrder ? 90 : 100}.7`;
      sh('ip', 'neigh', 'replace', otherIp, 'lladdr', '02:aa:bb:cc:dd:ee', 'dev', rig.tap.name);
      const toOther = () => sock.sock.send('to someone else', 9000, otherIp);
      const toGuest = () => sock.sock.send('to the guest', 9001, rig.guestIp);
      sh('ip', 'neigh', 'replace', rig.guestIp, 'lladdr', Array.from(d.mac, (b) => b.toString(16).padStart(2, '0')).join(':'), 'dev', rig.tap.name);
      const seen = (port: number) => rig.waitFor((f) => (parseUdp(f.frame)?.dstPort === port ? true : null), 400);

      // Promiscuous (the state after reset): both arrive.
      toOther();
      toGuest();
      expect(await seen(9000)).toBe(true);
      expect(await seen(9001)).toBe(true);
      // Promiscuous off: only frames for the guest's MAC.
      expect(d.control(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, Uint8Array.of(0))).toBe(VIRTIO_NET_OK);
      toOther();
      toGuest();
      expect(await seen(9001)).toBe(true);
      expect(await seen(9000)).toBeNull();
      expect(rig.dev.metrics.drops.rx_filtered_unicast).toBe(1);
      // The unicast table lets the other MAC in.
      const table = new Uint8Array([...u32(1), ...other, ...u32(1), ...mcast]);
      expect(d.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table)).toBe(VIRTIO_NET_OK);
      toOther();
      expect(await seen(9000)).toBe(true);
      // Broadcast passes until NOBCAST.
      const bcast = () => sock.sock.send('everyone', 9002, `198.18.${inOrder ? 90 : 100}.255`);
      sock.sock.setBroadcast(true);
      bcast();
      expect(await seen(9002)).toBe(true);
      expect(d.control(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_NOBCAST, Uint8Array.of(1))).toBe(VIRTIO_NET_OK);
      bcast();
      expect(await seen(9002)).toBeNull();
      expect(rig.dev.metrics.drops.rx_filtered_broadcast).toBe(1);
      // Invalid commands get VIRTIO_NET_ERR.
      expect(d.control(VIRTIO_NET_CTRL_RX, 99, Uint8Array.of(1))).toBe(VIRTIO_NET_ERR);
      expect(d.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(5))).toBe(VIRTIO_NET_ERR); // truncated table
      expect(d.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, mcast)).toBe(VIRTIO_NET_ERR); // not unicast
      expect(d.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2))).toBe(VIRTIO_NET_ERR); // MQ not offered
      expect(d.control(VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, u16(5000))).toBe(VIRTIO_NET_ERR); // vid out of range
      expect(d.control(77, 0)).toBe(VIRTIO_NET_ERR);
      expect(d.control(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, Uint8Array.of(1))).toBe(VIRTIO_NET_OK);
      // The MAC address set changes config space and the filter.
      expect(d.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, other)).toBe(VIRTIO_NET_OK);
      expect(d.mac).toEqual(other);
    } finally {
      await sock.close();
      rig.close();
    }
  });

  it('VLAN filtering passes only the VLANs added', async () => {
    const rig = await startNet({ subnet: inOrder ? 91 : 101, features: { IN_ORDER: inOrder } });
    try {
      expect(rig.driver.control(VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, u16(10))).toBe(VIRTIO_NET_OK);
      // Tagged frames for the guest, sent into the TAP from the host side.
      const tagged = (vid: number) => {
        const inner = buildUdp({ srcMac: parseMac('02:00:00:00:5b:01'), dstMac: rig.guestMac, src: 1, dst: 2, srcPort: 1, dstPort: 3000 + vid, data: Uint8Array.of(vid) });
        const f = new Uint8Array(inner.length + 4);
        f.set(inner.subarray(0, 12), 0);
        f.set([0x81, 0x00, vid >>> 8, vid & 0xff], 12);
        f.set(inner.subarray(12), 16);
        return f;
      };
      injectFrame(rig.tap.name, tagged(10), 3);
      injectFrame(rig.tap.name, tagged(20), 2);
      injectFrame(rig.tap.name, tagged(10), 1);
      const seen = async () => {
        await sleep(200);
        return rig.frames.filter((f) => f.frame[12] === 0x81 && f.frame[13] === 0x00).map((f) => ((f.frame[14]! << 8) | f.frame[15]!) & 0xfff);
      };
      expect(await seen()).toEqual([10, 10, 10, 10]);
      expect(rig.dev.metrics.drops.rx_filtered_vlan).toBe(2);
    } finally {
      rig.close();
    }
  });
});

}

describePrivileged('net device: backpressure, reset, metrics, rate limits', () => {
  it('a burst with no receive buffers loses nothing beyond what is counted, and traffic resumes', async () => {
    const rig = await startNet({ subnet: 94, driver: { queueSize: 16 } });
    const sock = await udpReceiver(rig.hostIp);
    try {
      await rig.resolveHost();
      // The guest stops reaping: its 16 buffers fill and the device stops reading the TAP.
      rig.driver.onFrame = null;
      const origPoll = rig.driver.poll.bind(rig.driver);
      rig.driver.poll = () => 0;
      const burst = 300;
      for (let i = 0; i < burst; i++) sock.sock.send(Buffer.from(`frame ${i}`), 9100, rig.guestIp);
      await sleep(300);
      expect(rig.dev.metrics.rxNoBuffer).toBeGreaterThan(0);
      const delivered = rig.dev.metrics.rxPackets;
      expect(delivered).toBeLessThanOrEqual(16 + 2);
      // Buffers come back: the device resumes on the RX kick and the rest flows.
      rig.driver.poll = origPoll;
      for (let k = 0; k < 100; k++) {
        rig.driver.poll();
        await sleep(5);
      }
      const got = rig.driver.takeReceived().filter((f) => parseUdp(f.frame)?.dstPort === 9100).length;
      const hostDropped = linkCounter(rig.tap.name, 'tx_dropped');
      // Every frame is delivered, or counted by the kernel's TAP queue (txqueuelen) as dropped.
      expect(got + hostDropped).toBe(burst);
      expect(got).toBeGreaterThan(16);
    } finally {
      await sock.close();
      rig.close();
    }
  });

  it('device reset in the middle of traffic, then traffic again', async () => {
    const rig = await startNet({ subnet: 95 });
    const sock = await udpReceiver(rig.hostIp);
    try {
      const hostMac = await rig.resolveHost();
      const send = (i: number) =>
        rig.driver.send(buildUdp({ srcMac: rig.guestMac, dstMac: hostMac, src: ip(rig.guestIp), dst: ip(rig.hostIp), srcPort: 1, dstPort: sock.port, data: Uint8Array.of(i) }));
      for (let i = 0; i < 50; i++) sock.sock.send('in flight', 9200, rig.guestIp);
      for (let i = 0; i < 20; i++) send(i);
      const txBefore = rig.dev.metrics.txPackets;
      rig.dev.setStatus(0); // reset, with frames both ways in flight
      expect(rig.dev.status).toBe(0);
      rig.driver.start(); // the driver sets the device up again
      send(99);
      const got = await sock.next();
      expect(got).not.toBeNull();
      // And receive works again: the host answers ARP, and a datagram from it arrives.
      await rig.resolveHost();
      sock.sock.send('after reset', 9201, rig.guestIp);
      expect(await rig.waitFor((f) => (parseUdp(f.frame)?.dstPort === 9201 ? true : null))).toBe(true);
      expect(rig.dev.metrics.tapErrors).toBe(0);
      expect(rig.errors).toEqual([]);
      expect(txBefore).toBeGreaterThanOrEqual(20); // traffic was flowing when the reset came
    } finally {
      await sock.close();
      rig.close();
    }
  });

  it('metrics as an object and as Prometheus text', async () => {
    const rig = await startNet({ subnet: 96 });
    try {
      await rig.resolveHost();
      const m = rig.dev.metrics.snapshot();
      expect(m['txPackets']).toBe(1);
      expect(m['rxPackets']).toBeGreaterThanOrEqual(1);
      const text = rig.dev.metrics.toPrometheus(rig.tap.name);
      expect(text).toContain(`virtio_tap_packets_total{interface="${rig.tap.name}",direction="tx"} 1`);
      expect(text).toContain('# TYPE virtio_tap_drops_total counter');
      expect(text).toMatch(/virtio_tap_drops_total\{interface="[^"]+",reason="rx_filtered_vlan"\} 0/);
    } finally {
      rig.close();
    }
  });

  it('a transmit rate limit spaces frames out, and loses none', async () => {
    const rig = await startNet({ subnet: 97, device: { rateLimit: { tx: { ops: { size: 10, refillMs: 100 } } } } });
    const sock = await udpReceiver(rig.hostIp);
    try {
      const hostMac = await rig.resolveHost(); // one op
      const t0 = Date.now();
      for (let i = 0; i < 40; i++) {
        rig.driver.send(buildUdp({ srcMac: rig.guestMac, dstMac: hostMac, src: ip(rig.guestIp), dst: ip(rig.hostIp), srcPort: 1, dstPort: sock.port, data: Uint8Array.of(i) }));
      }
      while (sock.messages.length < 40 && Date.now() - t0 < 3000) await sleep(10);
      const elapsed = Date.now() - t0;
      expect(sock.messages.length).toBe(40);
      // 10 per 100 ms with a burst of 10: about 300 ms for 40 frames.
      expect(elapsed).toBeGreaterThanOrEqual(250);
      expect(rig.dev.metrics.txThrottled).toBeGreaterThan(0);
      expect(rig.dev.metrics.dropped).toBe(0);
    } finally {
      await sock.close();
      rig.close();
    }
  });
});

describePrivileged('net device: receive rate limit', () => {
  it('a receive rate limit spaces frames out, and loses none the TAP queue holds', async () => {
    const rig = await startNet({ subnet: 102, device: { rateLimit: { rx: { ops: { size: 10, refillMs: 100 } } } } });
    const sock = await udpReceiver(rig.hostIp);
    try {
      await rig.resolveHost();
      const t0 = Date.now();
      for (let i = 0; i < 40; i++) sock.sock.send(Buffer.of(i), 9300, rig.guestIp);
      const got = () => rig.frames.filter((f) => parseUdp(f.frame)?.dstPort === 9300).length;
      while (got() < 40 && Date.now() - t0 < 3000) await sleep(10);
      expect(got()).toBe(40);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(250); // 10 per 100 ms after a burst of 10
      expect(rig.dev.metrics.rxThrottled).toBeGreaterThan(0);
      expect(rig.dev.metrics.dropped).toBe(0);
    } finally {
      await sock.close();
      rig.close();
    }
  });
});

describePrivileged('net device: queue pairs and bridges', () => {
  it('two queue pairs each carry traffic', async () => {
    const rig = await startNet({ subnet: 98, queues: 2, driver: { pairs: 2 } });
    const sock = await udpReceiver(rig.hostIp);
    try {
      expect(rig.driver.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2))).toBe(VIRTIO_NET_OK);
      expect(rig.dev.activePairs).toBe(2);
      const hostMac = await rig.resolveHost();
      for (const pair of [0, 1]) {
        for (let i = 0; i < 20; i++) {
          rig.driver.send(buildUdp({ srcMac: rig.guestMac, dstMac: hostMac, src: ip(rig.guestIp), dst: ip(rig.hostIp), srcPort: 100 + pair, dstPort: sock.port, data: Uint8Array.of(i) }), {}, pair);
        }
      }
      const t0 = Date.now();
      while (sock.messages.length < 40 && Date.now() - t0 < 2000) await sleep(10);
      expect(sock.messages.filter((m) => m.port === 100).length).toBe(20);
      expect(sock.messages.filter((m) => m.port === 101).length).toBe(20);
      // Receive: many flows from the host spread over both TAP queues.
      for (let port = 0; port < 64; port++) sock.sock.send('flow', 20000 + port, rig.guestIp);
      const t1 = Date.now();
      while (rig.frames.filter((f) => (parseUdp(f.frame)?.dstPort ?? 0) >= 20000).length < 64 && Date.now() - t1 < 2000) await sleep(10);
      const flows = rig.frames.filter((f) => (parseUdp(f.frame)?.dstPort ?? 0) >= 20000);
      expect(flows.length).toBe(64);
      expect(new Set(flows.map((f) => f.pair))).toEqual(new Set([0, 1]));
    } finally {
      await sock.close();
      rig.close();
    }
  });

  it('two devices on two TAPs in one Linux bridge with the host address reach each other and the host', async () => {
    sh('ip', 'link', 'add', 'vtbrx', 'type', 'bridge');
    sh('ip', 'addr', 'add', '198.18.99.1/24', 'dev', 'vtbrx');
    sh('ip', 'link', 'set', 'vtbrx', 'up');
    const a = await startNet({ subnet: 120, tapName: 'vtbra%d' });
    const b = await startNet({ subnet: 121, tapName: 'vtbrb%d' });
    try {
      for (const r of [a, b]) {
        sh('ip', 'addr', 'flush', 'dev', r.tap.name);
        r.tap.addToBridge('vtbrx');
      }
      const aIp = ip('198.18.99.2');
      const bIp = ip('198.18.99.3');
      // A asks for B by ARP; B answers; then UDP A -> B, and each pings... the host by ARP.
      a.driver.send(buildArp({ op: 1, senderMac: a.guestMac, senderIp: aIp, targetMac: new Uint8Array(6), targetIp: bIp }));
      const req = await b.waitFor((f) => {
        const p = f.frame[12] === 0x08 && f.frame[13] === 0x06 ? f.frame : null;
        return p;
      });
      expect(req).not.toBeNull();
      b.driver.send(buildArp({ op: 2, senderMac: b.guestMac, senderIp: bIp, targetMac: a.guestMac, targetIp: aIp }));
      const rep = await a.waitFor((f) => (f.frame[12] === 0x08 && f.frame[13] === 0x06 && f.frame[21] === 2 ? true : null));
      expect(rep).toBe(true);
      a.driver.send(buildUdp({ srcMac: a.guestMac, dstMac: b.guestMac, src: aIp, dst: bIp, srcPort: 1, dstPort: 2, data: new TextEncoder().encode('a to b') }));
      const udp = await b.waitFor((f) => {
        const u = parseUdp(f.frame);
        return u !== null && u.dstPort === 2 ? new TextDecoder().decode(u.data) : null;
      });
      expect(udp).toBe('a to b');
      // Both reach the host's address on the bridge: ARP, ICMP echo, UDP.
      const host = await udpReceiver('198.18.99.1');
      try {
        for (const [r, me, port] of [[a, aIp, 11], [b, bIp, 12]] as const) {
          r.driver.send(buildArp({ op: 1, senderMac: r.guestMac, senderIp: me, targetMac: new Uint8Array(6), targetIp: ip('198.18.99.1') }));
          const hostMac = await r.waitFor((f) => {
            const p = parseArp(f.frame);
            return p !== null && p.op === 2 && p.senderIp === ip('198.18.99.1') ? p.senderMac : null;
          });
          expect(hostMac).not.toBeNull();
          r.driver.send(buildIcmpEcho({ srcMac: r.guestMac, dstMac: hostMac!, src: me, dst: ip('198.18.99.1'), type: 8, ident: port, seq: 1, data: Uint8Array.of(1, 2, 3) }));
          const echo = await r.waitFor((f) => {
            const e = parseIcmpEcho(f.frame);
            return e !== null && e.type === 0 && e.ident === port ? e : null;
          });
          expect(echo?.checksumOk).toBe(true);
          r.driver.send(buildUdp({ srcMac: r.guestMac, dstMac: hostMac!, src: me, dst: ip('198.18.99.1'), srcPort: port, dstPort: host.port, data: Uint8Array.of(port) }));
          const got = await host.next();
          expect(got?.port).toBe(port);
        }
      } finally {
        await host.close();
      }
    } finally {
      a.close();
      b.close();
      sh('ip', 'link', 'del', 'vtbrx');
    }
  });
});
