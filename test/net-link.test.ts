// The net device's link, config space writes, announce and control queue
// index, in-process over a socket-pair TAP (no privileges needed).
import { afterEach, describe, expect, it } from 'vitest';

import { NetDriver } from '../src/driver/net-driver.js';
import {
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
} from '../src/net/constants.js';
import { NetDevice, type NetDeviceOptions } from '../src/net/device.js';
import { Tap } from '../src/tap/tap.js';
import { formatMac } from '../src/util/addr.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(5);
  }
}

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A device over a socket-pair TAP with its host side up, driven by the in-process driver. */
function start(o: Partial<NetDeviceOptions> = {}, queues = 1, driverPairs = 1, up = true) {
  const { tap, peers } = Tap.socketPair({ name: 'vtlink', queues });
  tap.setUp(up);
  const configInterrupts: number[] = [];
  let driver: NetDriver | null = null;
  const dev = new NetDevice({
    tap,
    ...o,
    interrupt: (kind, q) => {
      if (kind === 'config') configInterrupts.push(q);
      driver?.interrupt(kind, q);
    },
  });
  driver = new NetDriver(dev, { pairs: driverPairs, queueSize: 64 });
  driver.start();
  cleanup.push(() => {
    dev.close();
    tap.close();
    for (const p of peers) p.close();
  });
  return { dev, driver, tap, configInterrupts };
}

const linkBit = (dev: NetDevice) => dev.readConfig(6, 2) & VIRTIO_NET_S_LINK_UP;

describe('net device: link', () => {
  it('setLinkUp flips the config status bit; each change is one config interrupt', () => {
    const { dev, driver, configInterrupts } = start();
    let heard = 0;
    driver.onConfigChange = () => heard++;
    expect(linkBit(dev)).toBe(VIRTIO_NET_S_LINK_UP);
    dev.setLinkUp(false);
    expect(linkBit(dev)).toBe(0);
    expect(dev.linkUp).toBe(false);
    dev.setLinkUp(false);
    expect(configInterrupts.length).toBe(1);
    dev.setLinkUp(true);
    expect(linkBit(dev)).toBe(VIRTIO_NET_S_LINK_UP);
    expect(configInterrupts.length).toBe(2);
    expect(heard).toBe(2);
  });

  it('a device whose link is down sends nothing: each chain is completed unsent and counted', async () => {
    const { dev, driver, tap } = start();
    const frame = new Uint8Array(60).fill(0xab);
    frame.set([0x02, 0, 0, 0, 0, 1], 0); // a unicast destination
    dev.setLinkUp(false);
    const before = dev.metrics.txPackets;
    for (let i = 0; i < 3; i++) driver.send(frame);
    await until(() => dev.metrics.drops.tx_link_down === 3);
    expect(dev.metrics.txPackets).toBe(before);
    dev.setLinkUp(true);
    driver.send(frame);
    await until(() => dev.metrics.txPackets === before + 1);
    expect(dev.metrics.drops.tx_link_down).toBe(3);
  });

  for (const packed of [false, true]) {
    it(`control commands one after another are each answered (${packed ? 'packed' : 'split'} ring, EVENT_IDX)`, () => {
      const { dev, driver } = start({ features: { RING_PACKED: packed, EVENT_IDX: true } });
      for (let i = 1; i <= 5; i++) {
        const mac = Uint8Array.of(0x02, 0, 0, 0, 0, i);
        expect(driver.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, mac)).toBe(0);
        expect(formatMac(dev.mac)).toBe(formatMac(mac));
      }
    });
  }

  it('followTapLink: the link follows the host side of the TAP', async () => {
    const { dev, tap, configInterrupts } = start({ followTapLink: 5 }, 1, 1, false);
    expect(linkBit(dev)).toBe(0); // the TAP is down from the start
    tap.setUp(true);
    await until(() => linkBit(dev) === VIRTIO_NET_S_LINK_UP);
    expect(configInterrupts.length).toBe(1);
    dev.setLinkUp(false); // the embedder's say counts as well
    tap.setUp(false);
    tap.setUp(true);
    await sleep(30);
    expect(linkBit(dev)).toBe(0);
    dev.setLinkUp(true);
    expect(linkBit(dev)).toBe(VIRTIO_NET_S_LINK_UP);
  });

  it('a closed TAP stops the following without an error', async () => {
    const { dev, tap } = start({ followTapLink: 5 });
    const errors: Error[] = [];
    dev.on('error', (e: Error) => errors.push(e));
    dev.close();
    tap.close();
    await sleep(30);
    expect(errors).toEqual([]);
  });
});

describe('net device: config space writes and announce', () => {
  it('a config write is refused with its reason and counted', () => {
    const { dev } = start();
    expect(dev.writeConfig(0, new Uint8Array(6))).toMatch(/^mac \(6 bytes at 0\): .* read-only .*§5\.1\.4/);
    expect(dev.writeConfig(10, new Uint8Array(2))).toMatch(/^mtu /);
    expect(dev.writeConfig(100, new Uint8Array(1))).toMatch(/past the config space/);
    expect(dev.metrics.configWritesRefused).toBe(3);
    expect(dev.metrics.toPrometheus('vtlink')).toContain('virtio_tap_config_writes_refused_total{interface="vtlink"} 3');
  });

  it('requestAnnounce sets VIRTIO_NET_S_ANNOUNCE until the ack; not without GUEST_ANNOUNCE', () => {
    const { dev, driver, configInterrupts } = start();
    expect(dev.requestAnnounce()).toBe(true);
    expect(dev.readConfig(6, 2) & VIRTIO_NET_S_ANNOUNCE).toBe(VIRTIO_NET_S_ANNOUNCE);
    expect(configInterrupts.length).toBe(1);
    expect(driver.control(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK)).toBe(0);
    expect(dev.readConfig(6, 2) & VIRTIO_NET_S_ANNOUNCE).toBe(0);
    const other = start({ features: { GUEST_ANNOUNCE: false } });
    expect(other.dev.requestAnnounce()).toBe(false);
    expect(other.configInterrupts.length).toBe(0);
  });
});

describe('net device: the control queue index (§5.1.2)', () => {
  it('is 2 without MQ on a device of two pairs, and 2N with MQ', () => {
    const one = start({}, 2, 1);
    expect(one.dev.controlQueueIndex).toBe(2);
    expect(one.driver.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, new Uint8Array([2, 0, 0, 0, 0, 7]))).toBe(0);
    expect(formatMac(one.dev.mac)).toBe('02:00:00:00:00:07');
    const two = start({}, 2, 2);
    expect(two.dev.controlQueueIndex).toBe(4);
    expect(two.driver.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, new Uint8Array([2, 0, 0, 0, 0, 8]))).toBe(0);
    expect(formatMac(two.dev.mac)).toBe('02:00:00:00:00:08');
  });

  it('is -1 before negotiation and without CTRL_VQ', () => {
    const { dev } = start({ features: { CTRL_VQ: false, CTRL_RX: false, CTRL_VLAN: false, CTRL_RX_EXTRA: false, CTRL_MAC_ADDR: false, CTRL_GUEST_OFFLOADS: false, GUEST_ANNOUNCE: false, MQ: false } });
    expect(dev.controlQueueIndex).toBe(-1);
  });
});
