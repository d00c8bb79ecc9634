// virtio-mmio version 2 (VIRTIO 1.2 §4.2): the register model, driven by the
// TypeScript driver through registers only, and carrying traffic.
import { afterEach, describe, expect, it } from 'vitest';

import { MmioDeviceHandle } from '../src/driver/mmio-handle.js';
import { NetDriver } from '../src/driver/net-driver.js';
import { NetDevice } from '../src/net/device.js';
import { Tap, type TapPeer } from '../src/tap/tap.js';
import { MMIO, MMIO_MAGIC, MmioTransport } from '../src/transport/mmio.js';
import { parseIpv4 as ip } from '../src/util/addr.js';
import { buildArp, buildIcmpEcho, parseArp, parseIcmpEcho } from '../src/util/packet.js';
import { VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK } from '../src/virtio/constants.js';
import { GuestMemory } from '../src/virtio/guest-memory.js';
import { describePrivileged } from './helpers/privileged.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function vmm(tap: Tap) {
  const ram = GuestMemory.create(32 << 20);
  let irq = (): void => {};
  const lines: boolean[] = [];
  const device = new NetDevice({ tap, interrupt: (kind) => transport.notify(kind) });
  const transport: MmioTransport = new MmioTransport(device, {
    memory: ram,
    queueNumMax: 128,
    interrupt: (asserted) => {
      lines.push(asserted);
      if (asserted) queueMicrotask(() => irq());
    },
  });
  const handle = new MmioDeviceHandle(transport);
  const driver = new NetDriver(handle, { memory: ram, queueSize: 128 });
  irq = () => {
    const { vring, config } = handle.acknowledge();
    if (config) driver.interrupt('config', -1);
    if (vring) driver.interrupt('vring', 0);
  };
  return { ram, device, transport, handle, driver, lines };
}

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

describe('virtio-mmio register model', () => {
  function setup() {
    const { tap, peers } = Tap.socketPair({ name: 'mmio0' });
    const v = vmm(tap);
    cleanup.push(() => {
      v.device.close();
      tap.close();
      for (const p of peers) p.close();
    });
    return { ...v, peer: peers[0] as TapPeer };
  }

  it('identifies itself: magic, version 2, device 1 (net), vendor', () => {
    const { transport: t } = setup();
    expect(t.read(MMIO.MagicValue, 4)).toBe(MMIO_MAGIC);
    expect(t.read(MMIO.Version, 4)).toBe(2);
    expect(t.read(MMIO.DeviceID, 4)).toBe(1);
    expect(t.read(MMIO.VendorID, 4)).not.toBe(0);
    expect(t.read(MMIO.SHMLenLow, 4)).toBe(0xffffffff); // no shared memory regions
  });

  it('feature windows, queue registers and ready follow §4.2.2', () => {
    const { transport: t, device } = setup();
    t.write(MMIO.DeviceFeaturesSel, 4, 1);
    expect(t.read(MMIO.DeviceFeatures, 4) & 1).toBe(1); // VIRTIO_F_VERSION_1 is bit 32
    t.write(MMIO.DeviceFeaturesSel, 4, 7);
    expect(t.read(MMIO.DeviceFeatures, 4)).toBe(0);
    t.write(MMIO.QueueSel, 4, 99);
    expect(t.read(MMIO.QueueNumMax, 4)).toBe(0); // no such queue
    t.write(MMIO.QueueSel, 4, 0);
    expect(t.read(MMIO.QueueNumMax, 4)).toBe(128);
    // QueueReady with no size set: refused, reads 0.
    t.write(MMIO.QueueReady, 4, 1);
    expect(t.read(MMIO.QueueReady, 4)).toBe(0);
    // A misaligned ring is refused at QueueReady too (§2.7 alignment).
    t.write(MMIO.QueueNum, 4, 64);
    t.write(MMIO.QueueDescLow, 4, 0x1008);
    t.write(MMIO.QueueReady, 4, 1);
    expect(t.read(MMIO.QueueReady, 4)).toBe(0);
    expect(t.refusedQueues).toBe(2);
    expect(device.queues[0]).toBeNull();
  });

  it('invalid accesses are refused and counted: reads 0, writes ignored', () => {
    const { transport: t } = setup();
    expect(t.read(MMIO.MagicValue, 2)).toBe(0);
    expect(t.read(MMIO.MagicValue + 1, 4)).toBe(0);
    t.write(MMIO.Status, 1, 1);
    expect(t.read(MMIO.Status, 4)).toBe(0);
    t.write(MMIO.Config, 1, 0x55); // config space is read-only
    t.write(MMIO.MagicValue, 4, 0); // read-only register: ignored
    expect(t.read(MMIO.MagicValue, 4)).toBe(MMIO_MAGIC);
    expect(t.invalidAccesses).toBe(4);
    expect(t.read(MMIO.QueueNotify, 4)).toBe(0); // write-only register reads 0
  });

  it('the driver initialises through registers only (§3.1.1) and the device carries frames', async () => {
    const { driver, handle, transport: t, peer, lines } = setup();
    driver.start();
    expect(handle.status & (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK)).toBe(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    expect(t.read(MMIO.Config + 0, 1)).toBe(driver.mac[0]);
    // Transmit through the rings, out of the stand-in TAP.
    expect(driver.send(buildArp({ op: 1, senderMac: driver.mac, senderIp: 1, targetMac: new Uint8Array(6), targetIp: 2 }))).toBe(true);
    const buf = new Uint8Array(2048);
    let n = -11;
    for (let i = 0; i < 100 && n < 0; i++, await sleep(2)) n = peer.read(buf);
    expect(parseArp(buf.subarray(12, n))?.op).toBe(1);
    // Receive: an interrupt is raised on the line, acknowledged, and the frame arrives.
    const got: Uint8Array[] = [];
    driver.onFrame = (f) => got.push(f.frame);
    const reply = new Uint8Array(12 + 42);
    reply.set(buildArp({ op: 2, senderMac: Uint8Array.of(2, 0, 0, 0, 0, 9), senderIp: 2, targetMac: driver.mac, targetIp: 1 }), 12);
    peer.write(reply);
    for (let i = 0; i < 100 && got.length === 0; i++) await sleep(2);
    expect(parseArp(got[0]!)?.op).toBe(2);
    expect(lines).toContain(true);
    expect(t.read(MMIO.InterruptStatus, 4)).toBe(0); // acknowledged
  });

  it('a status write of 0 resets the device and every register the transport holds', () => {
    const { driver, transport: t, device } = setup();
    driver.start();
    t.write(MMIO.Status, 4, 0);
    expect(t.read(MMIO.Status, 4)).toBe(0);
    t.write(MMIO.QueueSel, 4, 0);
    expect(t.read(MMIO.QueueReady, 4)).toBe(0);
    expect(device.queues.every((q) => q === null)).toBe(true);
    driver.start(); // and it comes up again
    expect(t.read(MMIO.Status, 4) & VIRTIO_CONFIG_S_DRIVER_OK).toBe(VIRTIO_CONFIG_S_DRIVER_OK);
  });
});

describePrivileged('virtio-mmio with a real TAP', () => {
  it('the guest pings the host through the mmio-attached device', async () => {
    const tap = Tap.open({ name: 'vtmmio%d', vnetHdr: true });
    tap.setUp();
    tap.setIpv4('198.18.115.1', 24);
    const v = vmm(tap);
    cleanup.push(() => {
      v.device.close();
      tap.close();
    });
    v.driver.start();
    const frames: Uint8Array[] = [];
    v.driver.onFrame = (f) => frames.push(f.frame);
    const wait = async <T>(match: (f: Uint8Array) => T | null): Promise<T | null> => {
      for (let i = 0; i < 300; i++) {
        for (const f of frames) {
          const m = match(f);
          if (m !== null) return m;
        }
        await sleep(5);
      }
      return null;
    };
    const me = ip('198.18.115.2');
    const host = ip('198.18.115.1');
    v.driver.send(buildArp({ op: 1, senderMac: v.driver.mac, senderIp: me, targetMac: new Uint8Array(6), targetIp: host }));
    const hostMac = await wait((f) => {
      const a = parseArp(f);
      return a !== null && a.op === 2 && a.senderIp === host ? a.senderMac : null;
    });
    expect(hostMac).not.toBeNull();
    v.driver.send(buildIcmpEcho({ srcMac: v.driver.mac, dstMac: hostMac!, src: me, dst: host, type: 8, ident: 5, seq: 1, data: Uint8Array.of(1, 2, 3, 4) }));
    const echo = await wait((f) => {
      const e = parseIcmpEcho(f);
      return e !== null && e.type === 0 && e.ident === 5 ? e : null;
    });
    expect(echo?.checksumOk).toBe(true);
    expect(v.transport.invalidAccesses).toBe(0);
  });
});
