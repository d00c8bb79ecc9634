// The demo's exchanges with the host kernel through the TAP: ARP for the
// host's MAC, ICMP echo, and UDP both ways with a host socket.
import type { Socket } from 'node:dgram';

import { formatIpv4, formatMac } from '../util/addr.js';
import { buildArp, buildIcmpEcho, buildUdp, parseArp, parseIcmpEcho, parseUdp } from '../util/packet.js';
import type { DemoGuest } from './guest.js';
import { DemoFailure, type DemoLog } from './log.js';

/** Who talks: the guest behind the device, the host on the other side of the TAP. */
export interface Peers {
  guestMac: Uint8Array;
  guestIp: number;
  hostIp: number;
}

/** ARP (RFC 826): the guest asks who has the host address; the host's MAC. */
export async function resolveHost(guest: DemoGuest, p: Peers, log: DemoLog): Promise<Uint8Array> {
  log.step('ARP: the guest asks who has the host address');
  const { guestMac, guestIp, hostIp } = p;
  guest.send(buildArp({ op: 1, senderMac: guestMac, senderIp: guestIp, targetMac: new Uint8Array(6), targetIp: hostIp }), 'an ARP request');
  const arp = await guest.receive('ARP reply', (f) => {
    const a = parseArp(f);
    return a !== null && a.op === 2 && a.senderIp === hostIp && a.targetIp === guestIp ? a : null;
  });
  log.ok(`the host answered: ${formatIpv4(hostIp)} is at ${formatMac(arp.senderMac)}`);
  return arp.senderMac;
}

/** Three echo requests, each answered with the same data and good checksums. */
export async function ping(guest: DemoGuest, p: Peers, hostMac: Uint8Array, log: DemoLog): Promise<void> {
  log.step('ICMP: the guest pings the host');
  const ident = process.pid & 0xffff;
  for (let seq = 1; seq <= 3; seq++) {
    const data = new TextEncoder().encode(`virtio-tap ping ${seq}`);
    const t0 = process.hrtime.bigint();
    guest.send(buildIcmpEcho({ srcMac: p.guestMac, dstMac: hostMac, src: p.guestIp, dst: p.hostIp, type: 8, ident, seq, data }), 'an echo request');
    const reply = await guest.receive('echo reply', (f) => {
      const e = parseIcmpEcho(f);
      return e !== null && e.type === 0 && e.ident === ident && e.seq === seq ? e : null;
    });
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    if (!reply.checksumOk || !reply.headerChecksumOk) throw new DemoFailure('the echo reply has a bad checksum');
    if (Buffer.compare(Buffer.from(reply.data), Buffer.from(data)) !== 0) throw new DemoFailure('the echo reply data differs');
    log.ok(`echo reply seq ${seq} from ${formatIpv4(reply.src)}: checksums good, data matches, ${us.toFixed(0)} µs`);
  }
}

/** A datagram to a host socket bound on the host address, and its answer back to the guest. */
export async function udpBothWays(guest: DemoGuest, p: Peers, hostMac: Uint8Array, sock: Socket, timeoutMs: number, log: DemoLog): Promise<void> {
  log.step('UDP: the guest sends to a host socket, and the host answers');
  const { guestMac, guestIp, hostIp } = p;
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, formatIpv4(hostIp), () => resolve());
  });
  const port = sock.address().port;
  const fromHost = new Promise<{ msg: Buffer; port: number }>((resolve) =>
    sock.once('message', (msg, rinfo) => resolve({ msg, port: rinfo.port })),
  );
  guest.send(
    buildUdp({ srcMac: guestMac, dstMac: hostMac, src: guestIp, dst: hostIp, srcPort: 40000, dstPort: port, data: new TextEncoder().encode('hello, host') }),
    'a UDP datagram',
  );
  const got = await Promise.race([fromHost, new Promise<null>((r) => setTimeout(() => r(null), timeoutMs))]);
  if (got === null) throw new DemoFailure('the host socket received nothing');
  log.ok(`host socket ${formatIpv4(hostIp)}:${port} received "${got.msg.toString()}"`);
  sock.send('hello, guest', 40000, formatIpv4(guestIp));
  const answer = await guest.receive('UDP answer', (f) => {
    const u = parseUdp(f);
    return u !== null && u.dstPort === 40000 && u.srcPort === port ? u : null;
  });
  if (!answer.checksumOk) throw new DemoFailure('the UDP answer has a bad checksum');
  log.ok(`guest received "${new TextDecoder().decode(answer.data)}" from the host, checksum good`);
}
