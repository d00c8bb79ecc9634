// virtio-pci, modern (VIRTIO 1.2 §4.1): the register model, driven by the
// TypeScript driver through configuration cycles and BAR accesses only, with
// INTx and with MSI-X, over a socket-pair TAP (no privileges needed).
import { afterEach, describe, expect, it } from 'vitest';

import { PciDeviceHandle, type PciBus } from '../src/driver/pci-handle.js';
import { NetDriver } from '../src/driver/net-driver.js';
import { NetDevice } from '../src/net/device.js';
import { Tap, type TapPeer } from '../src/tap/tap.js';
import { COMMON, VIRTIO_MSI_NO_VECTOR } from '../src/transport/pci-common.js';
import { PCI_CAP_ID_VNDR, PciTransport, VIRTIO_PCI_CAP_PCI_CFG } from '../src/transport/pci.js';
import { buildArp, parseArp } from '../src/util/packet.js';
import { VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_RING_PACKED, bit } from '../src/virtio/constants.js';
import { GuestMemory } from '../src/virtio/guest-memory.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const READY = VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;

interface VmmOptions {
  bars: 'io' | 'memory';
  msix: boolean;
  packed?: boolean;
}

function vmm(tap: Tap, o: VmmOptions) {
  const ram = GuestMemory.create(32 << 20);
  const lines: boolean[] = [];
  const messages: { address: number; data: number }[] = [];
  let onIrq = (): void => {};
  let onMsi = (_v: number): void => {};
  const device = new NetDevice({ tap, interrupt: (kind, queue) => transport.notify(kind, queue) });
  const transport: PciTransport = new PciTransport(device, {
    memory: ram,
    bars: o.bars,
    msix: o.msix,
    queueNumMax: 128,
    interrupt: (up) => {
      lines.push(up);
      if (up) queueMicrotask(() => onIrq());
    },
    msi: (address, data) => {
      messages.push({ address, data });
      queueMicrotask(() => onMsi(data));
    },
  });
  // The host bridge: configuration cycles go to the function, bus accesses to the BAR they decode to.
  const bus: PciBus = {
    configRead: (off, size) => transport.configRead(off, size),
    configWrite: (off, size, v) => transport.configWrite(off, size, v),
    read: (space, addr, size) => {
      const d = transport.decode(space, addr);
      return d === null ? 0xffffffff : transport.barRead(d.bar, d.offset, size);
    },
    write: (space, addr, size, v) => {
      const d = transport.decode(space, addr);
      if (d !== null) transport.barWrite(d.bar, d.offset, size, v);
    },
  };
  const handle = new PciDeviceHandle(bus, o.msix ? { msixAddress: 0xfee0_0000 } : {});
  const features = o.packed === false ? device.deviceFeatures & ~bit(VIRTIO_F_RING_PACKED) : undefined;
  const driver = new NetDriver(handle, { memory: ram, queueSize: 128, ...(features !== undefined ? { features } : {}) });
  onIrq = () => {
    const { vring, config } = handle.acknowledge();
    if (config) driver.interrupt('config', -1);
    if (vring) driver.interrupt('vring', 0);
  };
  onMsi = (v) => {
    const k = handle.vectorKind(v);
    driver.interrupt(k.kind, k.queue);
  };
  // Common configuration registers, for tests that poke them directly.
  const common = (off: number, size: number, v?: number): number => {
    const at = transport.layout.common.offset + off;
    if (v === undefined) return transport.barRead(0, at, size);
    transport.barWrite(0, at, size, v);
    return 0;
  };
  return { ram, device, transport, handle, driver, lines, messages, common, bus };
}

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

function setup(o: VmmOptions) {
  const { tap, peers } = Tap.socketPair({ name: 'pci0' });
  const v = vmm(tap, o);
  cleanup.push(() => {
    v.device.close();
    tap.close();
    for (const p of peers) p.close();
  });
  return { ...v, peer: peers[0] as TapPeer };
}

async function exchange(v: ReturnType<typeof setup>): Promise<void> {
  const { driver, peer } = v;
  expect(driver.send(buildArp({ op: 1, senderMac: driver.mac, senderIp: 1, targetMac: new Uint8Array(6), targetIp: 2 }))).toBe(true);
  const buf = new Uint8Array(2048);
  let n = -11;
  for (let i = 0; i < 200 && n < 0; i++, await sleep(2)) n = peer.read(buf);
  expect(parseArp(buf.subarray(12, n))?.op).toBe(1);
  const got: Uint8Array[] = [];
  driver.onFrame = (f) => got.push(f.frame);
  const reply = new Uint8Array(12 + 42);
  reply.set(buildArp({ op: 2, senderMac: Uint8Array.of(2, 0, 0, 0, 0, 9), senderIp: 2, targetMac: driver.mac, targetIp: 1 }), 12);
  expect(peer.write(reply)).toBeGreaterThan(0);
  for (let i = 0; i < 200 && got.length === 0; i++) await sleep(2);
  expect(parseArp(got[0]!)?.op).toBe(2);
}

describe('virtio-pci configuration space', () => {
  it('identifies a modern network device: 1af4:1041 revision 1, class 02 00 00, subsystem', () => {
    const { transport: t } = setup({ bars: 'memory', msix: true });
    expect(t.configRead(0x00, 2)).toBe(0x1af4);
    expect(t.configRead(0x02, 2)).toBe(0x1041);
    expect(t.configRead(0x08, 1)).toBe(1);
    expect(t.configRead(0x08, 4) >>> 8).toBe(0x020000);
    expect(t.configRead(0x2c, 2)).toBe(0x1af4);
    expect(t.configRead(0x2e, 2)).toBeGreaterThanOrEqual(0x40);
    expect(t.configRead(0x3d, 1)).toBe(1); // INTA#
  });

  it('lists the common, notify, ISR, device and PCI-config capabilities, and MSI-X', () => {
    const { transport: t } = setup({ bars: 'memory', msix: true });
    const types: number[] = [];
    const ids: number[] = [];
    for (let p = t.configRead(0x34, 1), i = 0; p !== 0 && i < 16; p = t.configRead(p + 1, 1), i++) {
      ids.push(t.configRead(p, 1));
      if (t.configRead(p, 1) === PCI_CAP_ID_VNDR) types.push(t.configRead(p + 3, 1));
    }
    expect(types).toEqual([1, 2, 3, 4, 5]);
    expect(ids).toContain(0x11);
  });

  it('sizes BARs as PCI does: all ones reads back the size mask and the type', () => {
    const io = setup({ bars: 'io', msix: false }).transport;
    io.configWrite(0x10, 4, 0xffffffff);
    expect(io.configRead(0x10, 4) & 1).toBe(1);
    expect((~(io.configRead(0x10, 4) & ~3) >>> 0) + 1).toBe(256);
    expect(io.configRead(0x14, 4)).toBe(0); // no second BAR without MSI-X
    const mem = setup({ bars: 'memory', msix: true }).transport;
    mem.configWrite(0x14, 4, 0xffffffff);
    expect((~(mem.configRead(0x14, 4) & ~15) >>> 0) + 1).toBe(0x1000);
    mem.configWrite(0x14, 4, 0xfebf_1234);
    expect(mem.configRead(0x14, 4)).toBe(0xfebf_1000);
  });

  it('the PCI configuration access capability reads and writes the BARs through pci_cfg_data', () => {
    const v = setup({ bars: 'memory', msix: false });
    const t = v.transport;
    let cap = 0;
    for (let p = t.configRead(0x34, 1), i = 0; p !== 0 && i < 16; p = t.configRead(p + 1, 1), i++) {
      if (t.configRead(p, 1) === PCI_CAP_ID_VNDR && t.configRead(p + 3, 1) === VIRTIO_PCI_CAP_PCI_CFG) cap = p;
    }
    expect(cap).not.toBe(0);
    t.configWrite(cap + 4, 1, 0);
    t.configWrite(cap + 8, 4, t.layout.common.offset + COMMON.queue_select);
    t.configWrite(cap + 12, 4, 2);
    t.configWrite(cap + 16, 2, 1); // queue_select = 1, through the window
    expect(v.common(COMMON.queue_select, 2)).toBe(1);
    t.configWrite(cap + 8, 4, t.layout.common.offset + COMMON.num_queues);
    expect(t.configRead(cap + 16, 2)).toBe(v.device.queues.length);
  });
});

describe('virtio-pci: the driver initialises the device through PCI alone (§4.1.5)', () => {
  const CASES: [string, VmmOptions][] = [
    ['split ring, memory BAR, INTx', { bars: 'memory', msix: false, packed: false }],
    ['packed ring, memory BAR, INTx', { bars: 'memory', msix: false, packed: true }],
    ['split ring, I/O BAR (v86\'s layout), INTx', { bars: 'io', msix: false, packed: false }],
    ['split ring, memory BAR, MSI-X', { bars: 'memory', msix: true, packed: false }],
    ['packed ring, I/O BAR, MSI-X', { bars: 'io', msix: true, packed: true }],
  ];
  for (const [name, o] of CASES) {
    it(`comes up and carries frames both ways: ${name}`, async () => {
      const v = setup(o);
      v.driver.start();
      expect(v.handle.status & READY).toBe(READY);
      expect(v.device.queues[0]?.layout).toBe(o.packed === true ? 'packed' : 'split');
      await exchange(v);
      if (o.msix) {
        expect(v.messages.length).toBeGreaterThan(0);
        expect(v.messages.every((m) => m.address === 0xfee0_0000)).toBe(true);
        expect(v.messages.some((m) => m.data === 1)).toBe(true); // receive queue 0's vector
        expect(v.lines).toEqual([]); // no INTx while MSI-X is on
      } else {
        expect(v.lines).toContain(true);
        expect(v.lines.at(-1)).toBe(false); // the ISR read cleared it
      }
      expect(v.transport.invalidAccesses).toBe(0);
      expect(v.transport.stats.refusedQueues + v.transport.stats.refusedWrites).toBe(0);
    });
  }

  it('a masked MSI-X vector holds its message pending until it is unmasked', async () => {
    const v = setup({ bars: 'memory', msix: true, packed: false });
    v.driver.start();
    const table = (v.bus.configRead(0x14, 4) & ~15) >>> 0; // BAR1: the table at 0
    v.bus.write('memory', table + 16 * 1 + 12, 4, 1); // mask vector 1 (receive queue 0)
    const before = v.messages.length;
    v.transport.notify('vring', 0);
    expect(v.messages.length).toBe(before);
    expect(v.bus.read('memory', table + 0x800, 4) & 2).toBe(2); // PBA bit 1
    v.bus.write('memory', table + 16 * 1 + 12, 4, 0);
    expect(v.messages.length).toBe(before + 1);
    expect(v.messages.at(-1)?.data).toBe(1);
    expect(v.bus.read('memory', table + 0x800, 4) & 2).toBe(0);
  });

  it('INTx disable in the command register keeps the line down while the ISR holds a bit', () => {
    const v = setup({ bars: 'memory', msix: false });
    v.driver.start();
    v.bus.configWrite(0x04, 2, 0x407);
    v.transport.notify('config');
    expect(v.lines.filter((l) => l)).toEqual([]);
    expect(v.bus.configRead(0x06, 2) & 8).toBe(8); // interrupt status still says pending
    v.bus.configWrite(0x04, 2, 0x007);
    expect(v.lines.at(-1)).toBe(true);
    expect(v.handle.acknowledge()).toEqual({ vring: false, config: true });
    expect(v.lines.at(-1)).toBe(false);
  });
});

describe('virtio-pci refusals (counted, as the mmio model does)', () => {
  it('accesses of the wrong width, and writes to read-only fields, change nothing', () => {
    const v = setup({ bars: 'memory', msix: true });
    const before = v.transport.invalidAccesses;
    expect(v.common(COMMON.num_queues, 4)).toBe(0); // a 16-bit field read 32 bits wide
    v.common(COMMON.device_status, 2, 1); // an 8-bit field written 16 bits wide
    expect(v.common(COMMON.device_status, 1)).toBe(0);
    v.common(COMMON.num_queues, 2, 9);
    expect(v.common(COMMON.num_queues, 2)).toBe(v.device.queues.length);
    v.transport.barWrite(0, v.transport.layout.device.offset, 1, 0x55); // net config is read-only
    v.transport.barRead(0, v.transport.layout.isr.offset, 4); // the ISR is 8 bits
    v.transport.configRead(0x01, 2); // unaligned configuration cycle
    expect(v.transport.invalidAccesses - before).toBe(6);
  });

  it('queue_enable of a queue that does not exist, or of 0, is refused', () => {
    const v = setup({ bars: 'memory', msix: true });
    v.common(COMMON.queue_select, 2, 99);
    expect(v.common(COMMON.queue_size, 2)).toBe(0);
    v.common(COMMON.queue_enable, 2, 1);
    v.common(COMMON.queue_select, 2, 0);
    v.common(COMMON.queue_enable, 2, 0);
    expect(v.transport.stats.refusedQueues).toBe(2);
    expect(v.device.queues.every((q) => q === null)).toBe(true);
  });

  it('a size that is not a power of two (split ring) or over the maximum is refused; the old size stays', () => {
    const v = setup({ bars: 'memory', msix: false });
    v.common(COMMON.queue_select, 2, 0);
    v.common(COMMON.queue_size, 2, 100);
    v.common(COMMON.queue_size, 2, 256);
    v.common(COMMON.queue_size, 2, 0);
    expect(v.common(COMMON.queue_size, 2)).toBe(128);
    expect(v.transport.stats.refusedWrites).toBe(3);
    v.common(COMMON.queue_size, 2, 64);
    expect(v.common(COMMON.queue_size, 2)).toBe(64);
  });

  it('queue fields cannot change after queue_enable, or while DRIVER_OK', () => {
    const v = setup({ bars: 'memory', msix: true });
    v.driver.start();
    v.common(COMMON.queue_select, 2, 0);
    const desc = v.common(COMMON.queue_desc, 4);
    v.common(COMMON.queue_desc, 4, 0x1000);
    v.common(COMMON.queue_size, 2, 16);
    v.common(COMMON.queue_msix_vector, 2, 3);
    v.common(COMMON.queue_enable, 2, 1);
    expect(v.common(COMMON.queue_desc, 4)).toBe(desc);
    expect(v.common(COMMON.queue_size, 2)).toBe(128);
    expect(v.common(COMMON.queue_msix_vector, 2)).toBe(1);
    expect(v.transport.stats.refusedWrites).toBe(3);
    expect(v.transport.stats.refusedQueues).toBe(1);
  });

  it('an MSI-X vector beyond the table reads back NO_VECTOR', () => {
    const v = setup({ bars: 'memory', msix: true });
    v.common(COMMON.config_msix_vector, 2, 500);
    expect(v.common(COMMON.config_msix_vector, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    v.common(COMMON.queue_select, 2, 0);
    v.common(COMMON.queue_msix_vector, 2, 4);
    expect(v.common(COMMON.queue_msix_vector, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
  });
});

describe('virtio-pci reset', () => {
  it('a status write of 0 mid-traffic stops the device, clears the transport, and it comes up again', async () => {
    const v = setup({ bars: 'io', msix: false, packed: false });
    v.driver.start();
    // Frames from the host in flight, and some from the guest, when the driver resets the device.
    const frame = new Uint8Array(12 + 60);
    frame.set(buildArp({ op: 2, senderMac: Uint8Array.of(2, 0, 0, 0, 0, 9), senderIp: 2, targetMac: v.driver.mac, targetIp: 1 }), 12);
    for (let i = 0; i < 20; i++) v.peer.write(frame);
    for (let i = 0; i < 20; i++) v.driver.send(buildArp({ op: 1, senderMac: v.driver.mac, senderIp: 1, targetMac: new Uint8Array(6), targetIp: 2 }));
    await sleep(1);
    v.handle.setStatus(0);
    expect(v.handle.status).toBe(0);
    v.common(COMMON.queue_select, 2, 0);
    expect(v.common(COMMON.queue_enable, 2)).toBe(0);
    expect(v.common(COMMON.queue_size, 2)).toBe(128);
    expect(v.device.queues.every((q) => q === null)).toBe(true);
    expect(v.lines.at(-1) ?? false).toBe(false);
    const drain = new Uint8Array(2048);
    for (let i = 0; i < 100 && v.peer.read(drain) > 0; i++);
    v.driver.start();
    expect(v.handle.status & READY).toBe(READY);
    await exchange(v);
  });
});

describe('guest memory that moves (a VMM such as v86 replaces the buffer under its RAM)', () => {
  it('moveMemory rebuilds the active queues over the new views and traffic goes on where it was', async () => {
    const v = setup({ bars: 'io', msix: false, packed: false });
    v.driver.start();
    await exchange(v);
    const r = v.ram.regions[0]!;
    const moved = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength) }]);
    const before = v.device.queues.slice();
    v.device.moveMemory(moved);
    v.transport.memory = moved;
    expect(v.device.queues.every((q, i) => q !== null && q !== before[i] && q.mem === moved)).toBe(true);
    await exchange(v);
    await exchange(v);
  });
});
