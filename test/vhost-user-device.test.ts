// The whole device over vhost-user, for a front-end that hands over every
// queue (UML's virtio_uml): config space by GET_CONFIG/SET_CONFIG, the status
// machine by SET_STATUS/GET_STATUS, config changes on the back-end channel,
// and the control queue run by the device when CTRL_VQ is acked. The
// front-end is the test's own (test/helpers/vhost-frontend.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { vhostUserNetDevice, type VhostUserNetDeviceOptions } from '../src/cli/vhost-user-device.js';
import { NetDriver } from '../src/driver/net-driver.js';
import {
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
} from '../src/net/constants.js';
import type { NetDevice } from '../src/net/device.js';
import { NET_FEATURES, type NetFeatureName } from '../src/net/features.js';
import { Tap, type TapPeer } from '../src/tap/tap.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { BackendReq, ProtocolFeature, Req, statePayload, u64Payload } from '../src/transport/vhost-user/protocol.js';
import { formatMac } from '../src/util/addr.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
} from '../src/virtio/constants.js';
import { sh } from './helpers/host.js';
import { describePrivileged } from './helpers/privileged.js';
import { TestFrontend } from './helpers/vhost-frontend.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const bit = (b: number) => 1n << BigInt(b);
const WHOLE_DEVICE = bit(ProtocolFeature.CONFIG) | bit(ProtocolFeature.BACKEND_REQ);
const STATUS = bit(ProtocolFeature.STATUS);
const ACK_DRIVER = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

async function until(cond: () => boolean | Promise<boolean>, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(5);
  }
}

/** Features without the named ones. */
function without(all: bigint, ...names: NetFeatureName[]): bigint {
  return names.reduce((f, n) => f & ~bit(NET_FEATURES[n]), all);
}

/** A back-end over a socket-pair TAP, and a front-end that hands over every queue. */
function rig(o: Partial<VhostUserNetDeviceOptions> = {}, queues = 1) {
  const dir = mkdtempSync(join(tmpdir(), 'vt-vud-'));
  const socket = join(dir, 'vhost.sock');
  const { tap, peers } = Tap.socketPair({ name: 'vud0', queues });
  const logs: string[] = [];
  const device = vhostUserNetDevice({ tap, mac: '52:54:00:aa:bb:01', mtu: 1400, ...o });
  const backend = new VhostUserBackend<NetDevice>({ socketPath: socket, device, log: (l) => logs.push(l) });
  backend.start();
  return {
    socket,
    device,
    backend,
    logs,
    peer: peers[0]!,
    async frontend(extra = WHOLE_DEVICE) {
      const fe = await TestFrontend.connect(socket, 32 << 20, true, extra);
      await fe.openBackendChannel();
      await fe.loadConfig();
      return fe;
    },
    /** The driver up over the front-end (rings enabled; DRIVER_OK sent when STATUS was agreed). */
    async drive(fe: TestFrontend, features?: bigint) {
      const driver = new NetDriver(fe, { memory: fe.mem, queueSize: 64, ...(features !== undefined ? { features } : {}) });
      fe.onInterrupt = () => driver.interrupt('vring', 0);
      driver.start();
      return driver;
    },
    close() {
      backend.close();
      tap.close();
      for (const p of peers) p.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function movesAFrame(driver: NetDriver, peer: TapPeer, fill: number): Promise<void> {
  const frame = new Uint8Array(60).fill(fill);
  expect(driver.send(frame)).toBe(true);
  const buf = new Uint8Array(2048);
  let got = -11;
  await until(() => (got = peer.read(buf)) > 0);
  expect(buf[12]).toBe(fill);
}

const configChanges = (fe: TestFrontend) => fe.backendMessages.filter((m) => m.request === BackendReq.CONFIG_CHANGE_MSG).length;

describe('vhost-user: the whole device for a front-end that hands over every queue', () => {
  let r: ReturnType<typeof rig>;
  afterEach(() => r.close());

  describe('one pair', () => {
    beforeEach(() => {
      r = rig();
    });

    it('GET_CONFIG serves the device config space: MAC, link status, max pairs, MTU', async () => {
      const fe = await r.frontend();
      try {
        const c = await fe.getConfig(0, 24);
        const dv = new DataView(c.buffer, c.byteOffset, c.byteLength);
        expect(formatMac(c.subarray(0, 6))).toBe('52:54:00:aa:bb:01');
        expect(dv.getUint16(6, true) & VIRTIO_NET_S_LINK_UP).toBe(VIRTIO_NET_S_LINK_UP);
        expect(dv.getUint16(8, true)).toBe(1);
        expect(dv.getUint16(10, true)).toBe(1400);
        expect(await fe.getConfig(10, 2)).toEqual(c.subarray(10, 12)); // a part, from its offset
        expect((await fe.getConfig(250, 10)).length).toBe(0); // past any config space: a zero-length no
        expect(fe.backendMessages.length).toBe(0);
      } finally {
        fe.close();
      }
    });

    it('a forbidden SET_CONFIG gets an error reply and a count; the device is unchanged and still moves frames', async () => {
      const fe = await r.frontend();
      try {
        const driver = await r.drive(fe);
        await until(() => r.device.running);
        expect(await fe.setConfig(0, new Uint8Array([2, 0, 0, 0, 0, 9]))).toBe(1n); // mac: a legacy driver's write
        fe.send(Req.SET_CONFIG, new Uint8Array(12 + 2)); // no NEED_REPLY: refused all the same, connection kept
        await until(() => r.device.metrics.configWritesRefused === 2);
        expect(r.logs.some((l) => l.startsWith('refused SET_CONFIG') && l.includes('mac') && l.includes('§5.1.4'))).toBe(true);
        expect(formatMac((await fe.getConfig()).subarray(0, 6))).toBe('52:54:00:aa:bb:01');
        await movesAFrame(driver, r.peer, 0x31);
      } finally {
        fe.close();
      }
    });

    it('without CONFIG, BACKEND_REQ or STATUS agreed, their requests are refused', async () => {
      const plain = await TestFrontend.connect(r.socket); // REPLY_ACK and MQ only, as QEMU's net agrees
      try {
        expect(await plain.acked(Req.SET_CONFIG, new Uint8Array(12))).toBe(1n);
        expect(await plain.acked(Req.SET_STATUS, u64Payload(1n))).toBe(1n);
        await expect(plain.openBackendChannel()).resolves.toBe(1n);
        expect((await plain.getConfig()).length).toBe(0); // GET_CONFIG's no: a zero-length reply
        expect(r.logs.filter((l) => l.includes('without protocol feature')).length).toBe(4);
      } finally {
        plain.close();
      }
    });

    it('with CTRL_VQ acked the device runs the control queue: a MAC set through it shows in GET_CONFIG', async () => {
      const fe = await r.frontend();
      try {
        const driver = await r.drive(fe);
        expect(hasBit(driver.features, 'CTRL_VQ')).toBe(true);
        await until(() => r.device.running && r.device.controlQueueIndex === 2);
        await until(() => r.logs.includes('control queue 2 started'));
        driver.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, new Uint8Array([2, 0x11, 0x22, 0x33, 0x44, 0x55]));
        await until(async () => formatMac((await fe.getConfig()).subarray(0, 6)) === '02:11:22:33:44:55');
        await movesAFrame(driver, r.peer, 0x32);
      } finally {
        fe.close();
      }
    });

    it('GUEST_ANNOUNCE: requestAnnounce sets the status bit and sends a config change; the ack on the control queue clears it', async () => {
      const fe = await r.frontend();
      try {
        const driver = await r.drive(fe);
        await until(() => r.logs.includes('control queue 2 started'));
        expect(r.device.requestAnnounce()).toBe(true);
        await until(() => configChanges(fe) === 1);
        expect((await fe.getConfig(6, 2))[0]! & VIRTIO_NET_S_ANNOUNCE).toBe(VIRTIO_NET_S_ANNOUNCE);
        driver.control(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK);
        await until(async () => ((await fe.getConfig(6, 2))[0]! & VIRTIO_NET_S_ANNOUNCE) === 0);
        expect(r.backend.channelStats.acked).toBe(1); // REPLY_ACK agreed: the change asked for a reply
      } finally {
        fe.close();
      }
    });

    it('without CTRL_VQ the front-end runs the control queue: no control queue here, no announce', async () => {
      const fe = await r.frontend();
      try {
        const noCtrl = without(fe.deviceFeatures, 'CTRL_VQ', 'CTRL_RX', 'CTRL_VLAN', 'CTRL_RX_EXTRA', 'CTRL_MAC_ADDR', 'CTRL_GUEST_OFFLOADS');
        const driver = await r.drive(fe, noCtrl); // GUEST_ANNOUNCE stays: QEMU acks it without CTRL_VQ
        await until(() => r.device.running);
        expect(r.device.controlQueueIndex).toBe(-1);
        expect(hasBit(r.device.features, 'GUEST_ANNOUNCE')).toBe(true);
        expect(r.device.requestAnnounce()).toBe(false);
        await movesAFrame(driver, r.peer, 0x33);
      } finally {
        fe.close();
      }
    });

    it('a link change through the API arrives as a config change and flips the status bit; a refusing channel is counted', async () => {
      const fe = await r.frontend();
      try {
        await r.drive(fe);
        await until(() => r.device.running);
        r.device.setLinkUp(false);
        await until(() => configChanges(fe) === 1);
        expect((await fe.getConfig(6, 2))[0]! & VIRTIO_NET_S_LINK_UP).toBe(0);
        r.device.setLinkUp(false); // no change, no notification
        fe.backendReply = 1n;
        r.device.setLinkUp(true);
        await until(() => configChanges(fe) === 2);
        expect((await fe.getConfig(6, 2))[0]! & VIRTIO_NET_S_LINK_UP).toBe(VIRTIO_NET_S_LINK_UP);
        await until(() => r.backend.channelStats.refused === 1);
        expect(r.backend.channelStats).toMatchObject({ configChanges: 2, acked: 1, refused: 1 });
      } finally {
        fe.close();
      }
    });

    it('a back-end channel the front-end closed is dropped; the data path goes on', async () => {
      const fe = await r.frontend();
      try {
        const driver = await r.drive(fe);
        await until(() => r.device.running);
        fe.closeBackendChannel();
        await until(() => r.logs.some((l) => l.startsWith('back-end channel dropped')));
        r.device.setLinkUp(false);
        r.device.setLinkUp(true);
        expect(r.backend.channelStats.dropped).toBe(2);
        await movesAFrame(driver, r.peer, 0x34);
      } finally {
        fe.close();
      }
    });

    it('disabling a ring of the first pair stops the device (virtio_uml, before it frees its rings)', async () => {
      const fe = await r.frontend();
      try {
        await r.drive(fe);
        await until(() => r.device.running);
        await fe.acked(Req.SET_VRING_ENABLE, statePayload(1, 0));
        expect(r.device.running).toBe(false);
      } finally {
        fe.close();
      }
    });
  });

  describe('STATUS', () => {
    beforeEach(() => {
      r = rig();
    });

    it('SET_STATUS drives the status machine: refused features leave FEATURES_OK clear; DRIVER_OK starts the device', async () => {
      const fe = await r.frontend(WHOLE_DEVICE | STATUS);
      try {
        const f = fe.deviceFeatures;
        // GUEST_TSO4 without GUEST_CSUM breaks §5.1.3.1: the device refuses.
        fe.send(Req.SET_FEATURES, u64Payload(without(f, 'GUEST_CSUM') | bit(30)));
        expect(await fe.sendStatus(ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)).toBe(0n);
        expect(await fe.getStatus()).toBe(ACK_DRIVER);
        expect(await fe.sendStatus(0)).toBe(0n);
        expect(await fe.getStatus()).toBe(0);
        // The driver's own negotiation, then the status a front-end writes.
        const driver = await r.drive(fe);
        expect(await fe.sendStatus(ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)).toBe(0n);
        expect(await fe.getStatus()).toBe(ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        await sleep(20);
        expect(r.device.running).toBe(false); // rings ready, but no DRIVER_OK yet
        expect(await fe.sendStatus(ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK)).toBe(0n);
        expect(r.device.running).toBe(true);
        expect(await fe.getStatus()).toBe(ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
        await movesAFrame(driver, r.peer, 0x35);
        expect(await fe.sendStatus(0)).toBe(0n); // a reset stops the device
        expect(r.device.running).toBe(false);
        expect(hasBit(r.device.deviceFeatures, 'VERSION_1')).toBe(true);
      } finally {
        fe.close();
      }
    });

    it('a status wider than a byte is refused', async () => {
      const fe = await r.frontend(WHOLE_DEVICE | STATUS);
      try {
        expect(await fe.sendStatus(0x100)).toBe(1n);
        expect(await fe.getStatus()).toBe(0);
      } finally {
        fe.close();
      }
    });
  });

  describe('two pairs', () => {
    beforeEach(() => {
      r = rig({}, 2);
    });

    it('config says two pairs; without MQ acked the control queue is virtqueue 2 (§5.1.2)', async () => {
      const fe = await r.frontend();
      try {
        expect(new DataView((await fe.getConfig(8, 2)).buffer).getUint16(0, true)).toBe(2);
        const driver = await r.drive(fe); // one pair: NetDriver leaves MQ out
        await until(() => r.logs.includes('control queue 2 started'));
        expect(hasBit(r.device.features, 'MQ')).toBe(false);
        driver.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, new Uint8Array([2, 1, 2, 3, 4, 5]));
        await until(() => formatMac(r.device.mac) === '02:01:02:03:04:05');
        await movesAFrame(driver, r.peer, 0x36);
      } finally {
        fe.close();
      }
    });
  });
});

function hasBit(f: bigint, name: NetFeatureName): boolean {
  return (f & bit(NET_FEATURES[name])) !== 0n;
}

describePrivileged('vhost-user: the link follows the TAP', () => {
  it('ip link set T down/up arrives as a config change and flips the status bit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-vul-'));
    const socket = join(dir, 'vhost.sock');
    const tap = Tap.open({ name: 'vtvl%d', vnetHdr: true });
    tap.setUp();
    const device = vhostUserNetDevice({ tap, followTapLink: 10 });
    const backend = new VhostUserBackend<NetDevice>({ socketPath: socket, device });
    backend.start();
    const fe = await TestFrontend.connect(socket, 32 << 20, true, WHOLE_DEVICE);
    try {
      await fe.openBackendChannel();
      await fe.loadConfig();
      const driver = new NetDriver(fe, { memory: fe.mem, queueSize: 64 });
      driver.start();
      await until(() => device.running);
      const linkBit = async () => (await fe.getConfig(6, 2))[0]! & VIRTIO_NET_S_LINK_UP;
      expect(await linkBit()).toBe(VIRTIO_NET_S_LINK_UP);
      sh('ip', 'link', 'set', tap.name, 'down');
      await until(() => configChanges(fe) === 1);
      expect(await linkBit()).toBe(0);
      expect(device.linkUp).toBe(false);
      sh('ip', 'link', 'set', tap.name, 'up');
      await until(() => configChanges(fe) === 2);
      expect(await linkBit()).toBe(VIRTIO_NET_S_LINK_UP);
      expect(hasBit(driver.features, 'STATUS')).toBe(true);
    } finally {
      fe.close();
      backend.close();
      tap.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
