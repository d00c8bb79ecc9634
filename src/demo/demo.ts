// The demo: open a TAP, give the host side an address, and exchange ARP, an
// ICMP echo and UDP with the host kernel, printing each step.
import { createSocket, type Socket } from 'node:dgram';

import { featureNames } from '../net/features.js';
import { CaptureError, PcapWriter } from '../net/pcap.js';
import { TapError } from '../tap/errors.js';
import { Tap, offloadNames } from '../tap/tap.js';
import type { Tracer } from '../trace/trace.js';
import { formatIpv4, formatMac, parseCidr } from '../util/addr.js';
import { ping, resolveHost, udpBothWays } from './exchanges.js';
import { tunFeatureNames } from './features.js';
import { DemoGuest } from './guest.js';
import { configureHost, removeHostSide, type HostSide } from './host-side.js';
import { DemoFailure, type DemoLog } from './log.js';

export type { DemoLog } from './log.js';

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

/** What a run holds, for its steps and for the clean-up after them. */
interface DemoRun {
  o: DemoOptions;
  log: DemoLog;
  /** The host side's address and prefix, and the guest's address. */
  host: { address: number; prefixLength: number };
  guestIp: number;
  tap: Tap;
  guest: DemoGuest;
  capture: PcapWriter | undefined;
  sock: Socket;
  /** Set once the host side is configured. */
  hostSide: HostSide | null;
}

export async function runDemo(o: DemoOptions, log: DemoLog): Promise<number> {
  const host = parseCidr(o.hostCidr);
  const guestIp = parseCidr(o.guestIp).address;
  const tap = openDemoTap(o, log);
  if (tap === null) return 1;
  const opened = openCapture(o, tap, log);
  if (opened === null) return 1;
  const { capture } = opened;
  const guest = new DemoGuest(tap, { timeoutMs: o.timeoutMs, layout: o.layout, tracer: o.tracer, capture }, log);
  const run: DemoRun = { o, log, host, guestIp, tap, guest, capture, sock: createSocket('udp4'), hostSide: null };
  try {
    return await exchange(run);
  } catch (err) {
    if (err instanceof DemoFailure || err instanceof TapError) {
      log.fail(err.message);
      return 1;
    }
    throw err;
  } finally {
    await cleanUp(run);
  }
}

// The TAP to run on, created or attached; null (after saying why) when it cannot be had.
function openDemoTap(o: DemoOptions, log: DemoLog): Tap | null {
  log.step(o.tap === undefined ? 'Create a TAP' : `Attach to the TAP "${o.tap}"`);
  try {
    return o.tap === undefined ? Tap.open({ name: 'vtdemo%d', vnetHdr: true }) : Tap.attach(o.tap, { vnetHdr: true });
  } catch (err) {
    if (!(err instanceof TapError)) throw err;
    log.fail(err.message);
    if (o.tap === undefined && (err.code === 'EACCES' || err.code === 'EPERM')) {
      log.info('then give it the host address once (`sudo ip addr add 198.18.0.1/24 dev vtdemo0 && sudo ip link set vtdemo0 up`)');
      log.info('and run `virtio-tap demo --tap vtdemo0` (in a checkout: `npm run demo -- --tap vtdemo0`)');
    }
    return null;
  }
}

// The capture asked for (or none); null, with the TAP closed, when the file cannot be written.
function openCapture(o: DemoOptions, tap: Tap, log: DemoLog): { capture: PcapWriter | undefined } | null {
  if (o.pcap === undefined) return { capture: undefined };
  try {
    return { capture: new PcapWriter(o.pcap) };
  } catch (err) {
    tap.close();
    if (!(err instanceof CaptureError)) throw err;
    log.fail(err.message);
    return null;
  }
}

// Every step after the TAP is open: 0 when all went as it should.
async function exchange(run: DemoRun): Promise<number> {
  const { o, log, host, guestIp, tap, guest } = run;
  log.ok(`TAP ${tap.name}: MAC ${tap.mac}, MTU ${tap.mtu}, ${tap.queues.length} queue(s), vnet header ${tap.vnetHdrSize} bytes`);
  log.info(`kernel tun features (TUNGETFEATURES 0x${tap.kernelFeatures.toString(16)}): ${tunFeatureNames(tap.kernelFeatures).join(' ')}`);
  startGuest(run);

  log.step('Configure the host side');
  run.hostSide = configureHost(tap, o, host, log);
  const peers = { guestMac: guest.driver.mac, guestIp, hostIp: host.address };
  log.info(`guest: ${formatIpv4(guestIp)} at ${formatMac(peers.guestMac)}; host: ${formatIpv4(host.address)} on ${run.hostSide.ifname}`);

  const hostMac = await resolveHost(guest, peers, log);
  await ping(guest, peers, hostMac, log);
  await udpBothWays(guest, peers, hostMac, run.sock, o.timeoutMs, log);
  reportMetrics(run);
  return 0;
}

// §3.1.1 initialisation by the guest driver, and what it negotiated.
function startGuest({ log, tap, guest }: DemoRun): void {
  const { driver, device } = guest;
  log.step('Start the device and the guest driver (VIRTIO 1.2 §3.1.1)');
  driver.start();
  log.ok(`status ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK = 0x${device.status.toString(16)}`);
  log.info(`features negotiated: ${featureNames(driver.features).join(' ')}`);
  log.info(`guest MAC ${formatMac(driver.mac)} (config space), ${driver.mergeable ? 'mergeable receive buffers' : 'one buffer per frame'}, ${device.queues.length} virtqueues`);
  log.info(`TAP offloads from the guest's features (TUNSETOFFLOAD): ${offloadNames(tap.offloads).join(' ') || 'none'}`);
}

function reportMetrics({ log, guest }: DemoRun): void {
  log.step('Device metrics');
  const m = guest.device.metrics;
  log.info(`transmit: ${m.txPackets} frames, ${m.txBytes} bytes; receive: ${m.rxPackets} frames, ${m.rxBytes} bytes (headers included)`);
  log.info(`interrupts ${m.interrupts}, kicks ${m.kicks}, dropped ${m.dropped}, no-buffer events ${m.rxNoBuffer}, TAP errors ${m.tapErrors}`);
  log.info(`guest driver: ${guest.driver.stats.txFrames} sent, ${guest.driver.stats.rxFrames} received (IPv6 neighbour discovery included)`);
  if (m.dropped !== 0) throw new DemoFailure(`the device dropped ${m.dropped} frames: ${JSON.stringify(m.drops)}`);
}

async function cleanUp({ o, log, tap, guest, capture, sock, hostSide }: DemoRun): Promise<void> {
  sock.close();
  log.step('Clean up');
  guest.device.close();
  tap.close();
  if (capture !== undefined) {
    try {
      await capture.close();
      log.ok(`wrote ${capture.frames} frames to ${capture.path} (pcapng; each frame's virtio_net_hdr in its comment)`);
    } catch (err) {
      log.fail((err as Error).message);
    }
  }
  removeHostSide(hostSide, log);
  log.ok(o.tap === undefined ? `closed ${tap.name}; it is gone` : `detached from ${tap.name}; it stays`);
}
