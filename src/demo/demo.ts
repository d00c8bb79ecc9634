// The demo: open a TAP, give the host side an address, and exchange ARP, an
// ICMP echo and UDP with the host kernel, printing each step.
import { createSocket } from 'node:dgram';

import { NetDriver, type ReceivedFrame } from '../driver/net-driver.js';
import { NetDevice } from '../net/device.js';
import { featureNames } from '../net/features.js';
import { TapError } from '../tap/errors.js';
import { Link } from '../tap/link.js';
import { Tap, offloadNames } from '../tap/tap.js';
import { formatIpv4, formatMac, parseCidr } from '../util/addr.js';
import { buildArp, buildIcmpEcho, buildUdp, completeChecksum, describeFrame, parseArp, parseIcmpEcho, parseUdp } from '../util/packet.js';
import { tunFeatureNames } from './features.js';
import { CaptureError, PcapWriter } from '../net/pcap.js';
import type { Tracer } from '../trace/trace.js';

export interface DemoOptions {
  /** Attach to this existing TAP (for example a user-owned one) instead of creating one. */
  tap?: string;
  /** Host side address with prefix. */
  hostCidr: string;
  /** The guest's address. */
  guestIp: string;
  /** Add the TAP to this Linux bridge (created if missing) and put the host address there. */
  bridge?: string;
  timeoutMs: number;
  /** Ring layout the driver asks for. */
  layout?: 'split' | 'packed';
  /** Trace every device step here. */
  tracer?: Tracer;
  /** Write every frame crossing the device to this pcapng file. */
  pcap?: string;
}

export interface DemoLog {
  step(title: string): void;
  info(text: string): void;
  ok(text: string): void;
  fail(text: string): void;
}


class DemoFailure extends Error {}

export async function runDemo(o: DemoOptions, log: DemoLog): Promise<number> {
  const host = parseCidr(o.hostCidr);
  const guestIp = parseCidr(o.guestIp).address;
  let tap: Tap;
  log.step(o.tap === undefined ? 'Create a TAP' : `Attach to the TAP "${o.tap}"`);
  try {
    tap = o.tap === undefined ? Tap.open({ name: 'vtdemo%d', vnetHdr: true }) : Tap.attach(o.tap, { vnetHdr: true });
  } catch (err) {
    if (err instanceof TapError) {
      log.fail(err.message);
      if (o.tap === undefined && (err.code === 'EACCES' || err.code === 'EPERM')) {
        log.info('then give it the host address once (`sudo ip addr add 198.18.0.1/24 dev vtdemo0 && sudo ip link set vtdemo0 up`)');
        log.info('and run `npx virtio-tap demo --tap vtdemo0`');
      }
      return 1;
    }
    throw err;
  }
  let capture: PcapWriter | undefined;
  if (o.pcap !== undefined) {
    try {
      capture = new PcapWriter(o.pcap);
    } catch (err) {
      tap.close();
      if (err instanceof CaptureError) {
        log.fail(err.message);
        return 1;
      }
      throw err;
    }
  }
  // The guest: a TypeScript virtio-net driver talking to the device in this process.
  let driver!: NetDriver;
  const device = new NetDevice({
    tap,
    interrupt: (kind, queue) => driver.interrupt(kind, queue),
    features: { RING_PACKED: o.layout !== 'split' },
    ...(o.tracer !== undefined ? { trace: o.tracer } : {}),
    ...(capture !== undefined ? { capture } : {}),
  });
  device.on('error', (e: Error) => log.fail(`device: ${e.message}`));
  driver = new NetDriver(device, { queueSize: 256 });
  const inbox: ReceivedFrame[] = [];
  let wake: (() => void) | null = null;
  driver.onFrame = (f) => {
    inbox.push(f);
    wake?.();
  };
  const send = (frame: Uint8Array, why: string) => {
    if (!driver.send(frame)) throw new DemoFailure(`the transmit queue is full sending ${why}`);
    log.info(`guest → host  ${describeFrame(frame)}`);
  };
  const receive = async <T>(what: string, match: (f: Uint8Array) => T | null): Promise<T> => {
    const deadline = Date.now() + o.timeoutMs;
    for (;;) {
      while (inbox.length > 0) {
        const { frame, header } = inbox.shift()!;
        // A partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM, §5.1.6.4.1): complete it as a guest stack would.
        const partial = (header.flags & 1) !== 0;
        if (partial) completeChecksum(frame, header.csumStart, header.csumOffset);
        const hit = match(frame);
        if (hit !== null) {
          log.info(`host → guest  ${describeFrame(frame)}${partial ? ' (checksum completed from NEEDS_CSUM)' : ''}`);
          return hit;
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new DemoFailure(`no ${what} within ${o.timeoutMs} ms`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        wake = () => {
          clearTimeout(t);
          wake = null;
          res();
        };
      });
    }
  };

  const sock = createSocket('udp4');
  let hostSide: HostSide | null = null;
  try {
    log.ok(`TAP ${tap.name}: MAC ${tap.mac}, MTU ${tap.mtu}, ${tap.queues.length} queue(s), vnet header ${tap.vnetHdrSize} bytes`);
    log.info(`kernel tun features (TUNGETFEATURES 0x${tap.kernelFeatures.toString(16)}): ${tunFeatureNames(tap.kernelFeatures).join(' ')}`);

    log.step('Start the device and the guest driver (VIRTIO 1.2 §3.1.1)');
    driver.start();
    log.ok(`status ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK = 0x${device.status.toString(16)}`);
    log.info(`features negotiated: ${featureNames(driver.features).join(' ')}`);
    log.info(`guest MAC ${formatMac(driver.mac)} (config space), ${driver.mergeable ? 'mergeable receive buffers' : 'one buffer per frame'}, ${device.queues.length} virtqueues`);
    log.info(`TAP offloads from the guest's features (TUNSETOFFLOAD): ${offloadNames(tap.offloads).join(' ') || 'none'}`);

    log.step('Configure the host side');
    hostSide = configureHost(tap, o, host, log);
    const hostIfName = hostSide.ifname;
    const hostIp = host.address;
    const guestMac = driver.mac;
    log.info(`guest: ${formatIpv4(guestIp)} at ${formatMac(guestMac)}; host: ${formatIpv4(hostIp)} on ${hostIfName}`);

    log.step('ARP: the guest asks who has the host address');
    send(buildArp({ op: 1, senderMac: guestMac, senderIp: guestIp, targetMac: new Uint8Array(6), targetIp: hostIp }), 'an ARP request');
    const arp = await receive('ARP reply', (f) => {
      const a = parseArp(f);
      return a !== null && a.op === 2 && a.senderIp === hostIp && a.targetIp === guestIp ? a : null;
    });
    const hostMac = arp.senderMac;
    log.ok(`the host answered: ${formatIpv4(hostIp)} is at ${formatMac(hostMac)}`);

    log.step('ICMP: the guest pings the host');
    const ident = process.pid & 0xffff;
    for (let seq = 1; seq <= 3; seq++) {
      const data = new TextEncoder().encode(`virtio-tap ping ${seq}`);
      const t0 = process.hrtime.bigint();
      send(buildIcmpEcho({ srcMac: guestMac, dstMac: hostMac, src: guestIp, dst: hostIp, type: 8, ident, seq, data }), 'an echo request');
      const reply = await receive('echo reply', (f) => {
        const e = parseIcmpEcho(f);
        return e !== null && e.type === 0 && e.ident === ident && e.seq === seq ? e : null;
      });
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (!reply.checksumOk || !reply.headerChecksumOk) throw new DemoFailure('the echo reply has a bad checksum');
      if (Buffer.compare(Buffer.from(reply.data), Buffer.from(data)) !== 0) throw new DemoFailure('the echo reply data differs');
      log.ok(`echo reply seq ${seq} from ${formatIpv4(reply.src)}: checksums good, data matches, ${us.toFixed(0)} µs`);
    }

    log.step('UDP: the guest sends to a host socket, and the host answers');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(0, formatIpv4(hostIp), () => resolve());
    });
    const port = sock.address().port;
    const fromHost = new Promise<{ msg: Buffer; port: number }>((resolve) =>
      sock.once('message', (msg, rinfo) => resolve({ msg, port: rinfo.port })),
    );
    send(
      buildUdp({ srcMac: guestMac, dstMac: hostMac, src: guestIp, dst: hostIp, srcPort: 40000, dstPort: port, data: new TextEncoder().encode('hello, host') }),
      'a UDP datagram',
    );
    const got = await Promise.race([fromHost, new Promise<null>((r) => setTimeout(() => r(null), o.timeoutMs))]);
    if (got === null) throw new DemoFailure('the host socket received nothing');
    log.ok(`host socket ${formatIpv4(hostIp)}:${port} received "${got.msg.toString()}"`);
    sock.send('hello, guest', 40000, formatIpv4(guestIp));
    const answer = await receive('UDP answer', (f) => {
      const u = parseUdp(f);
      return u !== null && u.dstPort === 40000 && u.srcPort === port ? u : null;
    });
    if (!answer.checksumOk) throw new DemoFailure('the UDP answer has a bad checksum');
    log.ok(`guest received "${new TextDecoder().decode(answer.data)}" from the host, checksum good`);

    log.step('Device metrics');
    const m = device.metrics;
    log.info(`transmit: ${m.txPackets} frames, ${m.txBytes} bytes; receive: ${m.rxPackets} frames, ${m.rxBytes} bytes (headers included)`);
    log.info(`interrupts ${m.interrupts}, kicks ${m.kicks}, dropped ${m.dropped}, no-buffer events ${m.rxNoBuffer}, TAP errors ${m.tapErrors}`);
    log.info(`guest driver: ${driver.stats.txFrames} sent, ${driver.stats.rxFrames} received (IPv6 neighbour discovery included)`);
    if (m.dropped !== 0) throw new DemoFailure(`the device dropped ${m.dropped} frames: ${JSON.stringify(m.drops)}`);
    return 0;
  } catch (err) {
    if (err instanceof DemoFailure || err instanceof TapError) {
      log.fail(err.message);
      return 1;
    }
    throw err;
  } finally {
    sock.close();
    log.step('Clean up');
    device.close();
    tap.close();
    if (capture !== undefined) {
      try {
        await capture.close();
        log.ok(`wrote ${capture.frames} frames to ${capture.path} (pcapng; each frame's virtio_net_hdr in its comment)`);
      } catch (err) {
        log.fail((err as Error).message);
      }
    }
    const br = hostSide?.createdBridge ?? null;
    if (br !== null) {
      br.setUp(false);
      Link.deleteBridge(br.name);
      log.ok(`deleted bridge ${br.name}`);
    }
    log.ok(o.tap === undefined ? `closed ${tap.name}; it is gone` : `detached from ${tap.name}; it stays`);
  }
}

interface HostSide {
  /** The interface that holds the host address (the TAP, or the bridge). */
  ifname: string;
  /** A bridge this demo created, to delete at the end. */
  createdBridge: Link | null;
}

function configureHost(tap: Tap, o: DemoOptions, host: { address: number; prefixLength: number }, log: DemoLog): HostSide {
  try {
    tap.setUp();
  } catch (err) {
    if (o.tap === undefined) throw err;
    if (!tap.isUp) {
      throw new DemoFailure(`${tap.name} is down and this user cannot bring it up: run \`sudo ip link set ${tap.name} up\``);
    }
  }
  if (o.bridge !== undefined) return configureBridge(tap, o.bridge, host, log);
  try {
    tap.setIpv4(host.address, host.prefixLength);
    log.ok(`${tap.name} is up with ${formatIpv4(host.address)}/${host.prefixLength}`);
  } catch (err) {
    if (o.tap === undefined) throw err;
    log.info(`cannot set the address without CAP_NET_ADMIN; assuming ${tap.name} already has ${formatIpv4(host.address)}`);
  }
  return { ifname: tap.name, createdBridge: null };
}

// The set-up most VM hosts use: the TAP joins a Linux bridge that holds the host's address.
function configureBridge(tap: Tap, bridge: string, host: { address: number; prefixLength: number }, log: DemoLog): HostSide {
  const existed = Link.exists(bridge);
  const br = existed ? new Link(bridge) : Link.createBridge(bridge);
  br.setUp();
  if (!existed) br.setIpv4(host.address, host.prefixLength);
  tap.addToBridge(bridge);
  log.ok(`${tap.name} joined bridge ${bridge}${existed ? '' : ` (created, ${formatIpv4(host.address)}/${host.prefixLength})`}`);
  return { ifname: bridge, createdBridge: existed ? null : br };
}
