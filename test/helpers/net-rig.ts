// A device with the in-process driver on a real TAP whose host side has an
// address: the set-up of the net device tests.
import { NetDriver, type NetDriverOptions, type ReceivedFrame } from '../../src/driver/net-driver.js';
import { NetDevice, type NetDeviceOptions } from '../../src/net/device.js';
import type { NetFeatureSwitches } from '../../src/net/features.js';
import { Tap } from '../../src/tap/tap.js';
import { parseIpv4 } from '../../src/util/addr.js';
import { buildArp, completeChecksum, parseArp } from '../../src/util/packet.js';

export interface NetRigOptions {
  subnet: number; // 198.18.<subnet>.0/24
  features?: NetFeatureSwitches;
  mtu?: number;
  queues?: number;
  driver?: NetDriverOptions;
  device?: Partial<NetDeviceOptions>;
  tapName?: string;
}

export const OFFLOADS_OFF: NetFeatureSwitches = {
  CSUM: false,
  GUEST_CSUM: false,
  GUEST_TSO4: false,
  GUEST_TSO6: false,
  GUEST_ECN: false,
  GUEST_UFO: false,
  GUEST_USO4: false,
  GUEST_USO6: false,
  HOST_TSO4: false,
  HOST_TSO6: false,
  HOST_ECN: false,
  HOST_UFO: false,
  HOST_USO: false,
  CTRL_GUEST_OFFLOADS: false,
};

export async function startNet(o: NetRigOptions) {
  const tap = Tap.open({ name: o.tapName ?? 'vtnet%d', vnetHdr: true, queues: o.queues ?? 1 });
  if (o.mtu !== undefined) tap.setMtu(o.mtu);
  tap.setUp();
  const hostIp = `198.18.${o.subnet}.1`;
  const guestIp = `198.18.${o.subnet}.2`;
  tap.setIpv4(hostIp, 24);
  let driver!: NetDriver;
  const dev = new NetDevice({ tap, interrupt: (k, q) => driver.interrupt(k, q), features: o.features ?? {}, ...(o.device ?? {}) });
  const errors: Error[] = [];
  dev.on('error', (e: Error) => errors.push(e));
  driver = new NetDriver(dev, { queueSize: 128, ...(o.driver ?? {}) });
  driver.start();
  const frames: ReceivedFrame[] = [];
  const waiters: (() => void)[] = [];
  driver.onFrame = (f) => {
    // Complete partial checksums as a guest stack would trust them.
    if ((f.header.flags & 1) !== 0) completeChecksum(f.frame, f.header.csumStart, f.header.csumOffset);
    frames.push(f);
    for (const w of waiters.splice(0)) w();
  };
  const rig = {
    tap,
    dev,
    driver,
    errors,
    frames,
    hostIp,
    guestIp,
    guestMac: driver.mac,
    hostMac: new Uint8Array(6) as Uint8Array,
    /** The first received frame (consumed) for which match returns non-null. */
    async waitFor<T>(match: (f: ReceivedFrame) => T | null, ms = 3000): Promise<T | null> {
      const deadline = Date.now() + ms;
      for (;;) {
        for (let i = 0; i < frames.length; i++) {
          const hit = match(frames[i]!);
          if (hit !== null) {
            frames.splice(i, 1);
            return hit;
          }
        }
        const left = deadline - Date.now();
        if (left <= 0) return null;
        await new Promise<void>((res) => {
          const t = setTimeout(res, left);
          waiters.push(() => {
            clearTimeout(t);
            res();
          });
        });
      }
    },
    /** ARP for the host; fills hostMac. */
    async resolveHost(): Promise<Uint8Array> {
      driver.send(buildArp({ op: 1, senderMac: driver.mac, senderIp: parseIpv4(guestIp), targetMac: new Uint8Array(6), targetIp: parseIpv4(hostIp) }));
      const a = await rig.waitFor((f) => {
        const p = parseArp(f.frame);
        return p !== null && p.op === 2 && p.senderIp === parseIpv4(hostIp) ? p : null;
      });
      if (a === null) throw new Error('no ARP reply from the host');
      rig.hostMac = a.senderMac;
      return a.senderMac;
    },
    close() {
      dev.close();
      tap.close();
    },
  };
  return rig;
}

export type NetRig = Awaited<ReturnType<typeof startNet>>;
