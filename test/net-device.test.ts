// The virtio-net device between the in-process driver and the host kernel,
// through a real TAP, for each ring layout, with MRG_RXBUF on and off and
// offloads on and off: one shared body per variant.
import { execFileSync } from 'node:child_process';

import { afterEach, beforeEach, expect, it } from 'vitest';

import { parseIpv4 as ip } from '../src/util/addr.js';
import { buildArp, buildIcmpEcho, buildUdp, parseArp, parseIcmpEcho, parseUdp } from '../src/util/packet.js';
import { udpReceiver } from './helpers/host.js';
import { OFFLOADS_OFF, startNet, type NetRig } from './helpers/net-rig.js';
import { describePrivileged } from './helpers/privileged.js';

const VARIANTS = [];
let subnet = 50;
for (const layout of ['split', 'packed'] as const) {
  for (const mrg of [true, false]) {
    for (const offloads of [true, false]) VARIANTS.push({ layout, mrg, offloads, subnet: subnet++ });
  }
}

for (const v of VARIANTS) {
  describePrivileged(`net device: ${v.layout} ring, MRG_RXBUF ${v.mrg ? 'on' : 'off'}, offloads ${v.offloads ? 'on' : 'off'}`, () => {
    let rig: NetRig;
    beforeEach(async () => {
      rig = await startNet({
        subnet: v.subnet,
        features: { RING_PACKED: v.layout === 'packed', MRG_RXBUF: v.mrg, ...(v.offloads ? {} : OFFLOADS_OFF) },
      });
    });
    afterEach(() => rig.close());

    it('ARP and ICMP echo with the host', async () => {
      const hostMac = await rig.resolveHost();
      expect(hostMac).toEqual(new Uint8Array(rig.tap.mac.split(':').map((h) => parseInt(h, 16))));
      for (let seq = 1; seq <= 3; seq++) {
        const data = new TextEncoder().encode(`ping ${seq}`.repeat(seq * 10));
        rig.driver.send(buildIcmpEcho({ srcMac: rig.guestMac, dstMac: hostMac, src: ip(rig.guestIp), dst: ip(rig.hostIp), type: 8, ident: 7, seq, data }));
        const reply = await rig.waitFor((f) => {
          const e = parseIcmpEcho(f.frame);
          return e !== null && e.type === 0 && e.seq === seq ? e : null;
        });
        expect(reply).not.toBeNull();
        expect(reply!.checksumOk).toBe(true);
        expect(Buffer.from(reply!.data)).toEqual(Buffer.from(data));
      }
      expect(rig.dev.metrics.dropped).toBe(0);
      expect(rig.errors).toEqual([]);
    });

    it('UDP both ways over many sizes up to the MTU', async () => {
      const hostMac = await rig.resolveHost();
      const sock = await udpReceiver(rig.hostIp);
      try {
        const sizes = [1, 18, 100, 512, 1000, 1400, 1472];
        for (const size of sizes) {
          const data = new Uint8Array(size).map((_, i) => (i * 7 + size) & 0xff);
          const base = { srcMac: rig.guestMac, dstMac: hostMac, src: ip(rig.guestIp), dst: ip(rig.hostIp), srcPort: 5000, dstPort: sock.port, data };
          // With CSUM the driver hands over a partial checksum for the host to finish.
          const frame = buildUdp({ ...base, checksum: v.offloads ? 'partial' : 'full' });
          const hdr = v.offloads ? { flags: 1, csumStart: 34, csumOffset: 6 } : {};
          expect(rig.driver.send(frame, hdr)).toBe(true);
          const got = await sock.next();
          expect(got?.data.length).toBe(size);
          expect(Buffer.compare(got!.data, Buffer.from(data))).toBe(0);
        }
        for (const size of sizes) {
          const payload = Buffer.alloc(size, size & 0xff);
          sock.sock.send(payload, 6000, rig.guestIp);
          const u = await rig.waitFor((f) => {
            const p = parseUdp(f.frame);
            return p !== null && p.dstPort === 6000 && p.data.length === size ? p : null;
          });
          expect(u).not.toBeNull();
          expect(u!.checksumOk).toBe(true);
          expect(Buffer.from(u!.data).equals(payload)).toBe(true);
        }
        expect(rig.dev.metrics.dropped).toBe(0);
      } finally {
        await sock.close();
      }
    });
  });
}

describePrivileged('net device: jumbo frames', () => {
  for (const mrg of [true, false]) {
    it(`UDP both ways with MTU 9000, MRG_RXBUF ${mrg ? 'on' : 'off'}`, async () => {
      const rig = await startNet({ subnet: mrg ? 70 : 71, mtu: 9000, features: { MRG_RXBUF: mrg } });
      const sock = await udpReceiver(rig.hostIp);
      try {
        expect(rig.dev.readConfig(10, 2)).toBe(9000);
        const hostMac = await rig.resolveHost();
        const data = new Uint8Array(8972).map((_, i) => i & 0xff);
        rig.driver.send(buildUdp({ srcMac: rig.guestMac, dstMac: hostMac, src: ip(rig.guestIp), dst: ip(rig.hostIp), srcPort: 1, dstPort: sock.port, data }));
        const got = await sock.next();
        expect(got?.data.length).toBe(8972);
        sock.sock.send(Buffer.from(data), 7000, rig.guestIp);
        const u = await rig.waitFor((f) => {
          const p = parseUdp(f.frame);
          return p !== null && p.dstPort === 7000 ? p : null;
        });
        expect(u?.data.length).toBe(8972);
        expect(u!.checksumOk).toBe(true);
        if (mrg) expect(rig.dev.metrics.rxPackets).toBeGreaterThan(0);
      } finally {
        await sock.close();
        rig.close();
      }
    });
  }
});

describePrivileged('net device: the frames it refuses are counted', () => {
  // IN_ORDER on: frames are read one at a time; off: in batches, as Linux guests negotiate.
  for (const inOrder of [true, false]) {
    it(`a frame larger than the device offers room for is counted, and the next one still comes (MRG_RXBUF, IN_ORDER ${inOrder ? 'on' : 'off'})`, async () => {
      // No guest GSO: the device offers room for an MTU-sized frame (at most a
      // 4 KiB buffer). The host's side of the TAP takes larger ones.
      const rig = await startNet({ subnet: inOrder ? 73 : 74, features: { MRG_RXBUF: true, IN_ORDER: inOrder, ...OFFLOADS_OFF } });
      const sock = await udpReceiver(rig.hostIp);
      try {
        execFileSync('ip', ['link', 'set', rig.tap.name, 'mtu', '9000']);
        await rig.resolveHost();
        sock.sock.send(Buffer.alloc(6000, 1), 7100, rig.guestIp); // a 6042-byte frame
        sock.sock.send(Buffer.alloc(100, 2), 7101, rig.guestIp);
        const u = await rig.waitFor((f) => {
          const p = parseUdp(f.frame);
          return p !== null && p.dstPort === 7101 ? p : null;
        });
        expect(u?.data.length).toBe(100);
        expect(rig.dev.metrics.drops.rx_frame_truncated).toBe(1);
      } finally {
        await sock.close();
        rig.close();
      }
    });
  }

  it('a frame shorter than an Ethernet header, and a header using an offload not negotiated', async () => {
    const rig = await startNet({ subnet: 72, features: OFFLOADS_OFF });
    try {
      rig.driver.send(new Uint8Array(6));
      rig.driver.send(buildArp({ op: 1, senderMac: rig.guestMac, senderIp: 1, targetMac: new Uint8Array(6), targetIp: 2 }), { flags: 1, csumStart: 14, csumOffset: 6 });
      await new Promise((r) => setTimeout(r, 50));
      rig.driver.poll();
      expect(rig.dev.metrics.drops.tx_too_short).toBe(1);
      expect(rig.dev.metrics.drops.tx_bad_header).toBe(1);
      expect(rig.dev.metrics.txPackets).toBe(0);
      // And the queue goes on: a good frame still goes out.
      await rig.resolveHost();
      expect(parseArp(buildArp({ op: 1, senderMac: rig.guestMac, senderIp: 1, targetMac: new Uint8Array(6), targetIp: 2 }))).not.toBeNull();
      expect(rig.dev.metrics.txPackets).toBe(1);
    } finally {
      rig.close();
    }
  });
});
