// The whole device under Linux's own virtio_net driver: a User-Mode Linux
// guest (test/guest/build-uml.sh) whose virtio_uml transport hands the
// back-end every virtqueue, the control queue included, reads the config
// space with GET_CONFIG and takes config changes on the back-end request
// channel. Each ring layout boots twice: once against the `virtio-tap
// vhost-user` command (its --mac, --mtu and --features, traffic, the TAP's
// link, an announce by signal), once against a back-end in this process whose
// device the test reads and drives (link by API, the guest's own control
// queue commands, announce by API, two queue pairs).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, expect, it } from 'vitest';

import { vhostUserNetDevice } from '../src/cli/vhost-user-device.js';
import { VIRTIO_NET_S_ANNOUNCE } from '../src/net/constants.js';
import type { NetDevice } from '../src/net/device.js';
import { Tap } from '../src/tap/tap.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { formatMac, parseMac } from '../src/util/addr.js';
import { iperfMbits, iperfServer } from './helpers/guest.js';
import { ethFrame, rawCapture, sendFrames, type CapturedFrame } from './helpers/raw-socket.js';
import { buildUml, CliBackend, describeUml, sleep, UmlGuest, until } from './helpers/uml.js';

const sh = (...args: string[]) => execFileSync(args[0]!, args.slice(1), { encoding: 'utf8' });

/** A failure with the guest's console and the back-end's log appended. */
function withConsoles(e: unknown, guest: string, backend: string): unknown {
  if (e instanceof Error) e.message += `\n--- guest console ---\n${guest}\n--- back-end ---\n${backend}`;
  return e;
}

/** The host stays quiet on the TAP (no IPv6 chatter), so every frame the host sends is one the test sent. */
function hostQuiet(tap: string): void {
  writeFileSync(`/proc/sys/net/ipv6/conf/${tap}/disable_ipv6`, '1');
}

/** `ethtool -k` of a host interface: feature name to on/off. */
function hostOffloads(ifname: string): Record<string, boolean> {
  const out: Record<string, boolean> = {};
  for (const m of sh('ethtool', '-k', ifname).matchAll(/^\s*([\w-]+): (on|off)/gm)) out[m[1]!] = m[2] === 'on';
  return out;
}

/** An ARP frame from the guest (sender `ip`), with its VLAN ID when tagged. */
function arpFrom(f: CapturedFrame, ip: string): { vid: number | null; gratuitous: boolean; sender: string } | null {
  if (f.toGuest) return null;
  const b = f.frame;
  const tagged = b[12] === 0x81 && b[13] === 0x00;
  const at = tagged ? 18 : 14;
  if (b[at - 2] !== 0x08 || b[at - 1] !== 0x06 || b.length < at + 28) return null;
  const spa = Array.from(b.subarray(at + 14, at + 18)).join('.');
  const tpa = Array.from(b.subarray(at + 24, at + 28)).join('.');
  if (spa !== ip) return null;
  return { vid: tagged ? ((b[14]! << 8) | b[15]!) & 0xfff : null, gratuitous: spa === tpa, sender: formatMac(b.subarray(at + 8, at + 14)) };
}

/** An ARP reply from (`mac`, `ip`) to (`toMac`, `toIp`), for the body of an Ethernet frame. */
function arpReply(mac: Uint8Array, ip: string, toMac: Uint8Array, toIp: string): Uint8Array {
  const a = new Uint8Array(28);
  a.set([0, 1, 8, 0, 6, 4, 0, 2]);
  a.set(mac, 8);
  a.set(ip.split('.').map(Number), 14);
  a.set(toMac, 18);
  a.set(toIp.split('.').map(Number), 24);
  return a;
}

// Guest side shared by both boots: eth0 up with its address, then the host pinged.
const UP = (g: string) => `
echo "VT-INFO $(cat /sys/class/net/eth0/address) $(cat /sys/class/net/eth0/mtu) $(cat /sys/class/net/eth0/ifindex)"
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
ip link set eth0 up
ip addr add ${g}/24 dev eth0
carrier_is eth0 1
`;
const PING = (name: string, host: string, count = 3) =>
  `if ping -c ${count} -W ${count === 1 ? 1 : 2} ${host} > /dev/null 2>&1; then echo "VT-PING ${name} ok"; else echo "VT-PING ${name} failed"; fi`;

for (const layout of ['split', 'packed'] as const) {
  const n = layout === 'split' ? 0 : 2;
  const features = layout === 'split' ? ['--features', '-RING_PACKED'] : [];

  describeUml(`Linux's virtio_net in User-Mode Linux through the vhost-user back-end (${layout} ring)`, () => {
    let uml: string;
    let dir: string;
    beforeAll(() => {
      uml = buildUml();
      dir = mkdtempSync(join(tmpdir(), 'vt-umlt-'));
    }, 600_000);
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('the command: eth0 has its --mac and --mtu, is up, pings the host, runs iperf3 both ways; the TAP going down and up takes the carrier with it; SIGUSR1 makes the guest announce itself', async () => {
      const subnet = 180 + n;
      const [host, guestIp] = [`198.18.${subnet}.1`, `198.18.${subnet}.2`];
      const tapName = `vtumlc${n}`;
      const mac = `02:5a:00:00:${subnet.toString(16)}:02`;
      const socket = join(dir, `cli-${layout}.sock`);
      const cli = await CliBackend.start(['--socket', socket, '--tap', tapName, '--mac', mac, '--mtu', '1400', ...features]);
      sh('ip', 'addr', 'add', `${host}/24`, 'dev', tapName);
      sh('ip', 'link', 'set', tapName, 'up');
      hostQuiet(tapName);
      const server = iperfServer(host, 5301 + n);
      const g = new UmlGuest(
        uml,
        socket,
        `${UP(guestIp)}
${PING('first', host)}
iperf3 -c ${host} -p ${5301 + n} -t 2 -f m > /tmp/i1 2>&1; echo "VT-TCP-TX $(grep receiver /tmp/i1 | tail -1)"
iperf3 -c ${host} -p ${5301 + n} -t 2 -f m -R > /tmp/i2 2>&1; echo "VT-TCP-RX $(grep receiver /tmp/i2 | tail -1)"
at tap-down
carrier_is eth0 0
at tap-up
carrier_is eth0 1
${PING('after-tap-up', host)}
echo "VT-IFINDEX $(cat /sys/class/net/eth0/ifindex)"
at announce
sleep 1`,
      );
      try {
        const [gmac, mtu, ifindex] = (await g.line('VT-INFO')).split(' ');
        expect(gmac).toBe(mac);
        expect(mtu).toBe('1400');
        expect(await g.line('VT-CARRIER eth0')).toBe('1 up');
        expect(await g.line('VT-PING first')).toBe('ok');
        await g.at('tap-down');
        for (const marker of ['VT-TCP-TX', 'VT-TCP-RX']) expect(iperfMbits(g.output, marker), g.output).toBeGreaterThan(0);
        sh('ip', 'link', 'set', tapName, 'down');
        g.go('tap-down');
        await g.at('tap-up');
        expect(g.lines('VT-CARRIER eth0')[1]).toBe('0 down');
        sh('ip', 'link', 'set', tapName, 'up');
        g.go('tap-up');
        expect(await g.line('VT-PING after-tap-up')).toBe('ok');
        expect(g.lines('VT-CARRIER eth0')[2]).toBe('1 up');
        expect(await g.line('VT-IFINDEX')).toBe(ifindex); // the same device: the driver was not reloaded

        await g.at('announce');
        const cap = await rawCapture(tapName);
        cli.signal('SIGUSR1');
        g.go('announce');
        await until(() => cap.frames.some((f) => arpFrom(f, guestIp)?.gratuitous === true), 5000, 'a gratuitous ARP from the guest');
        const garp = (await cap.stop()).map((f) => arpFrom(f, guestIp)).find((a) => a?.gratuitous === true);
        expect(garp?.sender).toBe(mac);
        const run = await g.done;
        expect(run.status, run.output).toBe(0);
        expect(await cli.stop()).toBe(0);
        expect(cli.output.match(/device started/g)?.length, cli.output).toBe(1); // never reset: the driver was not reloaded
        expect(cli.output).toMatch(new RegExp(`device started: \\d+ rings, ${layout}`));
      } catch (e) {
        throw withConsoles(e, g.output, cli.output);
      } finally {
        server.stop();
        await g.close();
        await cli.stop();
      }
    }, 90_000);

    it('in process: link down and up by the TAP and by the API, control queue commands from ip and ethtool, an announce, two queue pairs', async () => {
      const subnet = 181 + n;
      const [host, guestIp] = [`198.18.${subnet}.1`, `198.18.${subnet}.2`];
      const mac = `02:5a:00:00:${subnet.toString(16)}:02`;
      const newMac = `02:5a:00:01:${subnet.toString(16)}:02`;
      const tap = Tap.open({ name: 'vtumld%d', vnetHdr: true, queues: 2, multiQueue: true });
      tap.setUp();
      tap.setIpv4(host, 24);
      hostQuiet(tap.name);
      const logs: string[] = [];
      const errors: Error[] = [];
      const device: NetDevice = vhostUserNetDevice({ tap, mac, mtu: 1400, ...(layout === 'split' ? { features: { RING_PACKED: false } } : {}) });
      const backend = new VhostUserBackend({ socketPath: join(dir, `dev-${layout}.sock`), device, log: (l) => logs.push(l) });
      backend.on('error', (e: Error) => errors.push(e));
      backend.start();
      const server = iperfServer(host, 5311 + n);
      const m = () => device.totalMetrics();
      const hostMac = parseMac(tap.mac);
      const g = new UmlGuest(
        uml,
        join(dir, `dev-${layout}.sock`),
        `${UP(guestIp)}
${PING('first', host)}
probe() { a=$(rx $2); at $1; sleep 0.2; echo "VT-RX $1 $(($(rx $2) - a))"; }
down_phase() {
  at $1-down
  carrier_is eth0 0
  t=$(tx eth0); ${PING('$1-down', host, 1)}; echo "VT-TX-WHILE-DOWN $1 $(($(tx eth0) - t))"
  at $1-up
  carrier_is eth0 1
  ${PING('$1-up', host)}
}
down_phase tap
down_phase api
echo "VT-IFINDEX $(cat /sys/class/net/eth0/ifindex)"
ip link set eth0 address ${newMac}
ip neigh flush dev eth0
${PING('new-mac', host)}
at new-mac
probe unicast-promisc-off eth0
ip link set eth0 promisc on
probe unicast-promisc-on eth0
ip link set eth0 promisc off
probe multicast-before eth0
ip link set eth0 allmulticast on
probe multicast-allmulti eth0
ip link set eth0 allmulticast off
ip maddr add 01:00:5e:01:02:03 dev eth0
probe multicast-joined eth0
ip link add link eth0 name eth0.5 type vlan id 5
ip link set eth0.5 up
ip addr add 10.5.0.2/24 dev eth0.5
probe vlan eth0.5
at vlan-arp
ping -c 3 -W 3 10.5.0.1 > /dev/null 2>&1
echo "VT-VLAN-NEIGH $(ip neigh show 10.5.0.1 dev eth0.5)"
at offloads-on
ethtool -K eth0 rx-gro-hw off; echo "VT-ETHTOOL-K $?"
at offloads-off
ethtool -K eth0 rx-gro-hw on
at offloads-on-again
at announce
ethtool -L eth0 combined 2; echo "VT-ETHTOOL-L $?"
echo "VT-CHANNELS $(ethtool -l eth0 | grep Combined | tail -1)"
at pairs
iperf3 -c ${host} -p ${5311 + n} -t 2 -P 8 -f m > /tmp/i1 2>&1; echo "VT-MQ-TX $(grep 'SUM.*receiver' /tmp/i1)"
iperf3 -c ${host} -p ${5311 + n} -t 2 -P 8 -f m -R > /tmp/i2 2>&1; echo "VT-MQ-RX $(grep 'SUM.*receiver' /tmp/i2)"
`,
      );
      // The host sends `frames`; resolves with what the guest counted on the interface and what the device refused, by reason.
      const probe = async (name: string, frames: Uint8Array[]) => {
        await g.at(name);
        const before = m();
        const seen = () => m().rxPackets - before.rxPackets + m().dropped - before.dropped;
        sendFrames(tap.name, frames);
        await until(() => seen() >= frames.length, 3000, `the device to take the ${name} frames`).catch(() => {});
        const after = m();
        g.go(name);
        const rx = Number(await g.line(`VT-RX ${name}`));
        const drops: Record<string, number> = {};
        for (const [r, v] of Object.entries(after.drops)) if (v !== before.drops[r as keyof typeof before.drops]) drops[r] = v - before.drops[r as keyof typeof before.drops];
        return { guest: rx, drops };
      };
      const raw = (dst: string, vid?: number) => Array.from({ length: 5 }, () => ethFrame(parseMac(dst), hostMac, 0x88b5, new Uint8Array(46).fill(0x5a), vid));
      // A link phase: the host takes the link down (`down`), the guest tries to send, the host brings it back.
      const linkPhase = async (name: string, down: () => void, up: () => void) => {
        await g.at(`${name}-down`);
        const before = m();
        down();
        g.go(`${name}-down`);
        await g.at(`${name}-up`);
        const during = m();
        const guestSent = Number(await g.line(`VT-TX-WHILE-DOWN ${name}`));
        up();
        g.go(`${name}-up`);
        expect(await g.line(`VT-PING ${name}-down`)).toBe('failed');
        expect(await g.line(`VT-PING ${name}-up`)).toBe('ok');
        return { guestSent, txGrew: during.txPackets - before.txPackets, linkDownDrops: during.drops.tx_link_down - before.drops.tx_link_down };
      };
      try {
        const [gmac, mtu, ifindex] = (await g.line('VT-INFO')).split(' ');
        expect(gmac).toBe(mac);
        expect(mtu).toBe('1400');
        expect(await g.line('VT-PING first')).toBe('ok');

        // Link: by the TAP's host side, then by the API; each time the carrier follows, and nothing goes out while down.
        const viaTap = await linkPhase('tap', () => sh('ip', 'link', 'set', tap.name, 'down'), () => sh('ip', 'link', 'set', tap.name, 'up'));
        const viaApi = await linkPhase('api', () => device.setLinkUp(false), () => device.setLinkUp(true));
        expect(g.lines('VT-CARRIER eth0')).toEqual(['1 up', '0 down', '1 up', '0 down', '1 up']);
        for (const phase of [viaTap, viaApi]) {
          expect(phase.txGrew).toBe(0);
          expect(phase.linkDownDrops).toBe(phase.guestSent);
        }
        expect(await g.line('VT-IFINDEX')).toBe(ifindex);

        // A new MAC (CTRL_MAC_ADDR_SET): the host's neighbour entry for the guest follows it.
        expect(await g.line('VT-PING new-mac')).toBe('ok');
        await g.at('new-mac');
        expect(formatMac(device.mac)).toBe(newMac);
        expect(sh('ip', 'neigh', 'show', guestIp, 'dev', tap.name)).toContain(newMac);
        g.go('new-mac');

        // Unicast to a foreign MAC: refused and counted without promisc, delivered with it.
        await until(() => !device.filter.promisc, 5000, 'the guest to turn promisc off');
        const uniOff = await probe('unicast-promisc-off', raw('02:5a:77:77:77:77'));
        expect(uniOff.drops).toEqual({ rx_filtered_unicast: 5 });
        expect(uniOff.guest).toBeLessThan(5); // the host's own frames (a neighbour probe) may reach it, not the five
        await until(() => device.filter.promisc, 5000, 'the guest to turn promisc on');
        const uniOn = await probe('unicast-promisc-on', raw('02:5a:77:77:77:77'));
        expect(uniOn.drops).toEqual({});
        expect(uniOn.guest).toBeGreaterThanOrEqual(5);

        // Multicast: refused until allmulticast, and a group the guest joined passes.
        await until(() => !device.filter.promisc, 5000, 'the guest to turn promisc off');
        const before = await probe('multicast-before', raw('01:00:5e:01:02:03'));
        expect(before.drops).toEqual({ rx_filtered_multicast: 5 });
        expect(before.guest).toBeLessThan(5);
        await until(() => device.filter.allmulti, 5000, 'the guest to turn allmulticast on');
        const allmulti = await probe('multicast-allmulti', raw('01:00:5e:7f:7f:7f'));
        expect(allmulti.drops).toEqual({});
        expect(allmulti.guest).toBeGreaterThanOrEqual(5);
        await until(() => !device.filter.allmulti, 5000, 'the guest to turn allmulticast off');
        const joined = await probe('multicast-joined', [...raw('01:00:5e:01:02:03'), ...raw('01:00:5e:7f:7f:7f')]);
        expect(joined.drops).toEqual({ rx_filtered_multicast: 5 });
        expect(joined.guest).toBeGreaterThanOrEqual(5);

        // VLANs: VID 5 (eth0.5) delivered to the sub-interface, VID 6 refused; the guest's tagged ARP answered.
        await until(() => device.filter.hasVlan(5), 5000, 'the guest to add VLAN 5');
        const vlan = await probe('vlan', [...raw(newMac, 5), ...raw(newMac, 6)]);
        expect(vlan.drops).toEqual({ rx_filtered_vlan: 5 });
        expect(vlan.guest).toBe(5);
        await g.at('vlan-arp');
        const cap = await rawCapture(tap.name);
        g.go('vlan-arp');
        await until(() => cap.frames.some((f) => arpFrom(f, '10.5.0.2')?.vid === 5), 5000, 'a tagged ARP request from eth0.5');
        const peerMac = parseMac('02:5a:55:55:55:55');
        sendFrames(tap.name, [ethFrame(parseMac(newMac), peerMac, 0x0806, arpReply(peerMac, '10.5.0.1', parseMac(newMac), '10.5.0.2'), 5)]);
        expect(await g.line('VT-VLAN-NEIGH')).toContain('02:5a:55:55:55:55');

        // Guest offloads (CTRL_GUEST_OFFLOADS_SET): the TAP's offloads follow.
        await g.at('offloads-on');
        expect(hostOffloads(tap.name)['tx-tcp-segmentation']).toBe(true);
        g.go('offloads-on');
        await g.at('offloads-off');
        expect(await g.line('VT-ETHTOOL-K')).toBe('0');
        expect(hostOffloads(tap.name)['tx-tcp-segmentation']).toBe(false);
        expect(hostOffloads(tap.name)['tx-checksumming']).toBe(true);
        g.go('offloads-off');
        await g.at('offloads-on-again');
        expect(hostOffloads(tap.name)['tx-tcp-segmentation']).toBe(true);
        g.go('offloads-on-again');

        // Announce: the guest sends its gratuitous ARP and acks (the status bit clears).
        await g.at('announce');
        const garpCap = await rawCapture(tap.name);
        expect(device.requestAnnounce()).toBe(true);
        expect(device.config.status & VIRTIO_NET_S_ANNOUNCE).toBe(VIRTIO_NET_S_ANNOUNCE);
        await until(() => garpCap.frames.some((f) => arpFrom(f, guestIp)?.gratuitous === true), 5000, 'a gratuitous ARP from the guest');
        await until(() => (device.config.status & VIRTIO_NET_S_ANNOUNCE) === 0, 5000, 'the guest to ack the announce');
        await garpCap.stop();
        await cap.stop();
        g.go('announce');

        // Two queue pairs: ethtool -L asks, and both carry iperf3's streams.
        await g.at('pairs');
        expect(await g.line('VT-ETHTOOL-L')).toBe('0');
        expect(await g.line('VT-CHANNELS')).toMatch(/Combined:\s*2/);
        expect(device.activePairs).toBe(2);
        g.go('pairs');
        const run = await g.done;
        expect(run.status, run.output).toBe(0);
        for (const marker of ['VT-MQ-TX', 'VT-MQ-RX']) expect(iperfMbits(run.output, marker), run.output).toBeGreaterThan(0);
        backend.close();
        const chains = (ring: number) => Number(/: (\d+) chains/.exec(logs.find((l) => l.startsWith(`ring ${ring} stopped`)) ?? '')?.[1] ?? 0);
        for (const ring of [0, 1, 2, 3]) expect(chains(ring), `ring ${ring}: ${logs.join('\n')}`).toBeGreaterThan(0);
        expect(logs.filter((l) => l.startsWith('device started')).length).toBe(1);
        expect(logs).toContainEqual(expect.stringMatching(new RegExp(`^device started: \\d+ rings, ${layout}`)));
        expect(errors).toEqual([]);
      } catch (e) {
        throw withConsoles(e, g.output, logs.join('\n'));
      } finally {
        server.stop();
        await g.close();
        backend.close();
        tap.close();
      }
    }, 120_000);
  });
}
