// The virtio-pci common configuration structure (VIRTIO 1.2 §4.1.4.3):
// feature windows, device status, and the selected queue's registers. Each
// field takes its natural width only (§4.1.3.1: 64-bit fields as two 32-bit
// halves); other accesses are refused and counted. Queue set-ups the spec
// forbids are refused and counted too, and queue_enable then reads 0.
import type { GuestMemory } from '../virtio/guest-memory.js';
import { QueueConfigError, type QueueAddresses } from '../virtio/queue.js';
import { VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_F_RING_PACKED, hasFeature } from '../virtio/constants.js';
import type { VirtioDeviceCore } from '../virtio/device.js';

/** Offsets of the common configuration fields (struct virtio_pci_common_cfg). */
export const COMMON = {
  device_feature_select: 0x00,
  device_feature: 0x04,
  driver_feature_select: 0x08,
  driver_feature: 0x0c,
  config_msix_vector: 0x10,
  num_queues: 0x12,
  device_status: 0x14,
  config_generation: 0x15,
  queue_select: 0x16,
  queue_size: 0x18,
  queue_msix_vector: 0x1a,
  queue_enable: 0x1c,
  queue_notify_off: 0x1e,
  queue_desc: 0x20,
  queue_driver: 0x28,
  queue_device: 0x30,
  queue_notify_data: 0x38,
  queue_reset: 0x3a,
} as const;

/** Bytes of the structure. */
export const COMMON_CFG_SIZE = 0x3c;
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** The natural width of the field at each offset (64-bit fields: each 32-bit half). */
const WIDTH = new Map<number, number>([
  [0x00, 4], [0x04, 4], [0x08, 4], [0x0c, 4], [0x10, 2], [0x12, 2], [0x14, 1], [0x15, 1],
  [0x16, 2], [0x18, 2], [0x1a, 2], [0x1c, 2], [0x1e, 2], [0x20, 4], [0x24, 4], [0x28, 4],
  [0x2c, 4], [0x30, 4], [0x34, 4], [0x38, 2], [0x3a, 2],
]);

export interface PciQueueRegs {
  size: number;
  msixVector: number;
  enabled: boolean;
  desc: number;
  driver: number;
  device: number;
}

export interface PciCommonStats {
  /** Accesses of the wrong width or alignment, or writes to read-only fields. */
  invalidAccesses: number;
  /** Queue field writes refused: while the queue is enabled or the device is DRIVER_OK, or a bad size. */
  refusedWrites: number;
  /** queue_enable writes refused: no such queue, 0, or a configuration the rings cannot take. */
  refusedQueues: number;
}

/** What the common configuration needs of the transport around it. */
export interface CommonHost {
  readonly device: VirtioDeviceCore;
  readonly memory: GuestMemory;
  readonly queueNumMax: number;
  /** MSI-X table size, 0 without MSI-X: vectors at or beyond it read back NO_VECTOR. */
  readonly msixVectors: number;
  readonly configGeneration: number;
  /** A status write of 0: the transport resets what it holds too. */
  reset(): void;
}

export class CommonConfig {
  deviceFeatureSel = 0;
  driverFeatureSel = 0;
  driverFeatures = 0n;
  queueSel = 0;
  configVector = VIRTIO_MSI_NO_VECTOR;
  queues: PciQueueRegs[];
  private readonly host: CommonHost;
  private readonly stats: PciCommonStats;

  constructor(host: CommonHost, stats: PciCommonStats) {
    this.host = host;
    this.stats = stats;
    this.queues = this.freshQueues();
  }

  /** Back to reset values (the transport's status write of 0). */
  clear(): void {
    this.deviceFeatureSel = 0;
    this.driverFeatureSel = 0;
    this.driverFeatures = 0n;
    this.queueSel = 0;
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.queues = this.freshQueues();
  }

  read(offset: number, size: number): number {
    if (WIDTH.get(offset) !== size) return this.invalid(0);
    const dev = this.host.device;
    const q = this.queues[this.queueSel];
    switch (offset) {
      case COMMON.device_feature_select:
        return this.deviceFeatureSel;
      case COMMON.device_feature:
        return this.deviceFeatureSel > 1 ? 0 : Number((dev.deviceFeatures >> BigInt(32 * this.deviceFeatureSel)) & 0xffffffffn);
      case COMMON.driver_feature_select:
        return this.driverFeatureSel;
      case COMMON.driver_feature:
        return this.driverFeatureSel > 1 ? 0 : Number((this.driverFeatures >> BigInt(32 * this.driverFeatureSel)) & 0xffffffffn);
      case COMMON.config_msix_vector:
        return this.configVector;
      case COMMON.num_queues:
        return dev.queues.length;
      case COMMON.device_status:
        return dev.status;
      case COMMON.config_generation:
        return this.host.configGeneration & 0xff;
      case COMMON.queue_select:
        return this.queueSel;
      case COMMON.queue_size:
        return q?.size ?? 0; // §4.1.4.3.2: 0 for a queue that is not available
      case COMMON.queue_msix_vector:
        return q?.msixVector ?? VIRTIO_MSI_NO_VECTOR;
      case COMMON.queue_enable:
        return q?.enabled === true ? 1 : 0;
      case COMMON.queue_notify_off:
        return q === undefined ? 0 : this.queueSel;
      case COMMON.queue_desc:
      case COMMON.queue_desc + 4:
      case COMMON.queue_driver:
      case COMMON.queue_driver + 4:
      case COMMON.queue_device:
      case COMMON.queue_device + 4:
        return q === undefined ? 0 : half(q[fieldOf(offset)], offset);
      default:
        return 0; // queue_notify_data and queue_reset: their features are not offered
    }
  }

  write(offset: number, size: number, value: number): void {
    if (WIDTH.get(offset) !== size) {
      this.invalid(0);
      return;
    }
    const v = value >>> 0;
    if (offset >= COMMON.queue_size && offset !== COMMON.queue_notify_off && offset < COMMON.queue_notify_data) {
      this.writeQueue(offset, v);
      return;
    }
    switch (offset) {
      case COMMON.device_feature_select:
        this.deviceFeatureSel = v;
        return;
      case COMMON.driver_feature_select:
        this.driverFeatureSel = v;
        return;
      case COMMON.driver_feature: {
        if (this.driverFeatureSel > 1) return;
        const shift = BigInt(32 * this.driverFeatureSel);
        this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(v) << shift);
        this.host.device.setDriverFeatures(this.driverFeatures);
        return;
      }
      case COMMON.config_msix_vector:
        // §4.1.4.3.1 (via §4.1.5.1.2): a vector the device cannot map reads back NO_VECTOR.
        this.configVector = v < this.host.msixVectors ? v : VIRTIO_MSI_NO_VECTOR;
        return;
      case COMMON.device_status:
        if (v === 0) this.host.reset();
        else this.host.device.setStatus(v);
        return;
      case COMMON.queue_select:
        this.queueSel = v;
        return;
      default:
        this.invalid(0); // read-only: device_feature, num_queues, config_generation, queue_notify_off, ...
    }
  }

  // The selected queue's fields: refused once it is enabled or the device runs (§4.1.4.3.2).
  private writeQueue(offset: number, v: number): void {
    const q = this.queues[this.queueSel];
    if (q === undefined) {
      this.stats.refusedQueues += offset === COMMON.queue_enable ? 1 : 0;
      this.stats.refusedWrites += offset === COMMON.queue_enable ? 0 : 1;
      return;
    }
    if (q.enabled || (this.host.device.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0) {
      if (offset === COMMON.queue_enable) this.stats.refusedQueues++;
      else this.stats.refusedWrites++;
      return;
    }
    if (offset === COMMON.queue_enable) this.enable(q, v);
    else if (offset === COMMON.queue_size) this.setSize(q, v);
    else if (offset === COMMON.queue_msix_vector) q.msixVector = v < this.host.msixVectors ? v : VIRTIO_MSI_NO_VECTOR;
    else {
      const f = fieldOf(offset);
      q[f] = (offset & 4) !== 0 ? v * 0x1_0000_0000 + (q[f] % 0x1_0000_0000) : Math.floor(q[f] / 0x1_0000_0000) * 0x1_0000_0000 + v;
    }
  }

  private setSize(q: PciQueueRegs, v: number): void {
    // §2.7: a split ring's size is a power of two; neither layout goes past what the device offers.
    const packed = hasFeature(this.host.device.driverFeatures, VIRTIO_F_RING_PACKED);
    if (v === 0 || v > this.host.queueNumMax || (!packed && (v & (v - 1)) !== 0)) {
      this.stats.refusedWrites++;
      return;
    }
    q.size = v;
  }

  // §4.1.4.3.2: the driver MUST NOT write 0 to queue_enable.
  private enable(q: PciQueueRegs, v: number): void {
    if (v !== 1) {
      this.stats.refusedQueues++;
      return;
    }
    const addresses: QueueAddresses = { size: q.size, desc: q.desc, driver: q.driver, device: q.device };
    try {
      this.host.device.activateQueue(this.queueSel, this.host.memory, addresses);
      q.enabled = true;
    } catch (err) {
      if (!(err instanceof QueueConfigError)) throw err;
      this.stats.refusedQueues++; // queue_enable reads 0: the driver sees the refusal
    }
  }

  private freshQueues(): PciQueueRegs[] {
    const max = this.host.queueNumMax;
    return this.host.device.queues.map(() => ({ size: max, msixVector: VIRTIO_MSI_NO_VECTOR, enabled: false, desc: 0, driver: 0, device: 0 }));
  }

  private invalid(result: number): number {
    this.stats.invalidAccesses++;
    return result;
  }
}

function fieldOf(offset: number): 'desc' | 'driver' | 'device' {
  return offset < COMMON.queue_driver ? 'desc' : offset < COMMON.queue_device ? 'driver' : 'device';
}

function half(addr: number, offset: number): number {
  return (offset & 4) !== 0 ? Math.floor(addr / 0x1_0000_0000) : addr % 0x1_0000_0000;
}
