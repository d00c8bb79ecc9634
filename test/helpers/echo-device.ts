// A minimal device for the virtqueue tests: it fills each chain's writable
// part with the sum of its readable bytes (mod 256) and completes it with the
// writable length. Bad chains go back with length 0; a corrupt ring breaks it.
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, bit } from '../../src/virtio/constants.js';
import { DescriptorChain, Pop } from '../../src/virtio/descriptor-chain.js';
import { VirtioDeviceCore, type InterruptKind } from '../../src/virtio/device.js';
import type { DeviceQueue } from '../../src/virtio/queue.js';

export const ECHO_FEATURES =
  bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_F_INDIRECT_DESC) | bit(VIRTIO_F_EVENT_IDX) | bit(VIRTIO_F_IN_ORDER);

export class EchoDevice extends VirtioDeviceCore {
  readonly interrupts: { kind: InterruptKind; queue: number }[] = [];
  badChains = 0;
  completed = 0;
  private chain: DescriptorChain | null = null;

  constructor() {
    super({ features: ECHO_FEATURES, numQueues: 1, interrupt: (kind, queue) => this.interrupts.push({ kind, queue }) });
  }

  protected processQueue(index: number, q: DeviceQueue): void {
    if (this.chain === null || this.chain.capacity < 2 * q.size) this.chain = q.newChain();
    const c = this.chain;
    for (;;) {
      const r = q.popChain(c);
      if (r === Pop.EMPTY) break;
      if (r === Pop.BROKEN) {
        this.markBroken(c.fault);
        return;
      }
      if (r === Pop.BAD_CHAIN) {
        this.badChains++;
        q.addUsed(c.head, 0, c.ringSlots);
        continue;
      }
      let sum = 0;
      const regions = q.mem.regions;
      for (let i = 0; i < c.readable; i++) {
        const b = regions[c.region[i]!]!.bytes;
        const off = c.offset[i]!;
        for (let k = 0; k < c.len[i]!; k++) sum = (sum + b[off + k]!) & 0xff;
      }
      for (let i = c.readable; i < c.count; i++) {
        regions[c.region[i]!]!.bytes.fill(sum, c.offset[i]!, c.offset[i]! + c.len[i]!);
      }
      q.addUsed(c.head, c.writableBytes, c.ringSlots);
      this.completed++;
    }
    if (q.flushUsed()) this.raise('vring', index);
  }
}
