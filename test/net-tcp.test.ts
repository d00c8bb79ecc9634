// TCP through the device with segmentation and checksum offloads: the host
// stack checks every checksum and reassembles every segment.
import { connect, type Socket } from 'node:net';

import { afterEach, beforeEach, expect, it } from 'vitest';

import { VIRTIO_NET_HDR_GSO_TCPV4 } from '../src/net/constants.js';
import { parseIpv4 as ip } from '../src/util/addr.js';
import { startNet, type NetRig } from './helpers/net-rig.js';
import { describePrivileged } from './helpers/privileged.js';
import { TcpPeer } from './helpers/tcp-peer.js';

let subnet = 80;
for (const layout of ['split', 'packed'] as const) {
  for (const mrg of [true, false]) {
    describePrivileged(`TCP with offloads: ${layout} ring, MRG_RXBUF ${mrg ? 'on' : 'off'}`, () => {
      const net = subnet++;
      let rig: NetRig;
      let peer: TcpPeer;
      let sock: Socket;
      beforeEach(async () => {
        rig = await startNet({ subnet: net, features: { RING_PACKED: layout === 'packed', MRG_RXBUF: mrg } });
        const hostMac = await rig.resolveHost();
        peer = new TcpPeer(rig.driver, { mac: rig.guestMac, ip: ip(rig.guestIp), port: 7777 }, { mac: hostMac, ip: ip(rig.hostIp) });
        rig.driver.onFrame = (f) => void peer.input(f.frame, f.header);
        sock = connect({ host: rig.guestIp, port: 7777, localAddress: rig.hostIp });
        await new Promise<void>((res, rej) => {
          sock.once('connect', res);
          sock.once('error', rej);
        });
      });
      afterEach(() => {
        sock.destroy();
        rig.close();
      });

      it('a large host write reaches the driver as GSO super-frames (GUEST_TSO4)', async () => {
        const total = 1 << 20;
        const data = Buffer.alloc(total);
        for (let i = 0; i < total; i++) data[i] = (i * 31) & 0xff;
        sock.write(data);
        const deadline = Date.now() + 10_000;
        while (peer.bytes < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        expect(peer.bytes).toBe(total);
        expect(Buffer.concat(peer.received).equals(data)).toBe(true);
        const gso = peer.frames.filter((f) => f.gsoType === VIRTIO_NET_HDR_GSO_TCPV4);
        expect(gso.length).toBeGreaterThan(0);
        expect(Math.max(...gso.map((f) => f.length))).toBeGreaterThan(1514 * 4);
        expect(rig.dev.metrics.dropped).toBe(0);
      });

      it('a 64 KB TSO frame from the driver reaches the host socket whole', async () => {
        const payload = Buffer.alloc(60_000);
        for (let i = 0; i < payload.length; i++) payload[i] = (i * 13 + 5) & 0xff;
        const got: Buffer[] = [];
        sock.on('data', (d: Buffer) => got.push(d));
        expect(peer.sendSuperFrame(payload)).toBe(true);
        const deadline = Date.now() + 5000;
        while (Buffer.concat(got).length < payload.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        expect(Buffer.concat(got).equals(payload)).toBe(true);
        expect(rig.dev.metrics.txBytes).toBeGreaterThan(60_000);
        expect(rig.dev.metrics.dropped).toBe(0);
      });
    });
  }
}
