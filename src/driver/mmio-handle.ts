// The guest driver's view of a virtio-mmio device: the operations NetDriver
// needs, done only through register reads and writes, as a guest kernel does
// (VIRTIO 1.2 §4.2.3). Anything with read/write at the device's base will do:
// an MmioTransport, or a VMM's bus.
import { MMIO, MMIO_MAGIC, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING } from '../transport/mmio.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import type { QueueAddresses } from '../virtio/queue.js';
import { NetDriverError, type VirtioDeviceHandle } from './net-driver.js';

export interface MmioBus {
  read(offset: number, size: number): number;
  write(offset: number, size: number, value: number): void;
}

export class MmioDeviceHandle implements VirtioDeviceHandle {
  private readonly bus: MmioBus;

  constructor(bus: MmioBus) {
    this.bus = bus;
    // §4.2.3.1.1: check magic and version before anything else.
    const magic = bus.read(MMIO.MagicValue, 4);
    const version = bus.read(MMIO.Version, 4);
    if (magic !== MMIO_MAGIC) throw new NetDriverError(`virtio-mmio magic is 0x${magic.toString(16)}, not 0x${MMIO_MAGIC.toString(16)}`);
    if (version !== 2) throw new NetDriverError(`virtio-mmio version ${version}; only version 2 is supported`);
    if (bus.read(MMIO.DeviceID, 4) === 0) throw new NetDriverError('virtio-mmio device id 0: no device here');
  }

  get deviceFeatures(): bigint {
    this.bus.write(MMIO.DeviceFeaturesSel, 4, 0);
    const lo = BigInt(this.bus.read(MMIO.DeviceFeatures, 4));
    this.bus.write(MMIO.DeviceFeaturesSel, 4, 1);
    const hi = BigInt(this.bus.read(MMIO.DeviceFeatures, 4));
    return (hi << 32n) | lo;
  }

  get status(): number {
    return this.bus.read(MMIO.Status, 4);
  }

  setStatus(value: number): void {
    this.bus.write(MMIO.Status, 4, value);
  }

  setDriverFeatures(features: bigint): void {
    this.bus.write(MMIO.DriverFeaturesSel, 4, 0);
    this.bus.write(MMIO.DriverFeatures, 4, Number(features & 0xffffffffn));
    this.bus.write(MMIO.DriverFeaturesSel, 4, 1);
    this.bus.write(MMIO.DriverFeatures, 4, Number((features >> 32n) & 0xffffffffn));
  }

  /** §4.2.3.2: select, check QueueNumMax, write size and addresses, set ready and read it back. */
  activateQueue(index: number, _mem: GuestMemory, a: QueueAddresses): void {
    const b = this.bus;
    b.write(MMIO.QueueSel, 4, index);
    if (b.read(MMIO.QueueReady, 4) !== 0) throw new NetDriverError(`queue ${index} is already in use`);
    const max = b.read(MMIO.QueueNumMax, 4);
    if (max === 0) throw new NetDriverError(`queue ${index} is not available`);
    if (a.size > max) throw new NetDriverError(`queue ${index}: size ${a.size} over QueueNumMax ${max}`);
    b.write(MMIO.QueueNum, 4, a.size);
    const pairs: [number, number][] = [
      [MMIO.QueueDescLow, a.desc],
      [MMIO.QueueDriverLow, a.driver],
      [MMIO.QueueDeviceLow, a.device],
    ];
    for (const [reg, addr] of pairs) {
      b.write(reg, 4, addr % 0x1_0000_0000);
      b.write(reg + 4, 4, Math.floor(addr / 0x1_0000_0000));
    }
    b.write(MMIO.QueueReady, 4, 1);
    if (b.read(MMIO.QueueReady, 4) !== 1) throw new NetDriverError(`the device refused queue ${index}'s configuration`);
  }

  kick(index: number): void {
    this.bus.write(MMIO.QueueNotify, 4, index);
  }

  readConfig(offset: number, size: number): number {
    // §4.2.2: read the config generation around multi-byte reads, and retry if it moved.
    for (;;) {
      const before = this.bus.read(MMIO.ConfigGeneration, 4);
      const v = this.bus.read(MMIO.Config + offset, size);
      if (this.bus.read(MMIO.ConfigGeneration, 4) === before) return v;
    }
  }

  /** The interrupt handler: reads and acknowledges InterruptStatus, returns what it said. */
  acknowledge(): { vring: boolean; config: boolean } {
    const s = this.bus.read(MMIO.InterruptStatus, 4);
    if (s !== 0) this.bus.write(MMIO.InterruptACK, 4, s);
    return { vring: (s & VIRTIO_MMIO_INT_VRING) !== 0, config: (s & VIRTIO_MMIO_INT_CONFIG) !== 0 };
  }
}
