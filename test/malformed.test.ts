// Every malformed ring the device must survive, for both layouts: the right
// reason, the right tier, and the queue (tier 1) or the device after a reset
// (tier 2) carrying a good chain again. Rings are corrupted by hand on purpose.
import { describe, expect, it } from 'vitest';

import { makeQueueRig, type QueueRig, type RingLayout } from '../src/driver/rig.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  bit,
} from '../src/virtio/constants.js';
import { ChainFault, chainFaultName, chainFaultTier, Pop } from '../src/virtio/descriptor-chain.js';
import { GuestMemory } from '../src/virtio/guest-memory.js';
import { GuestAllocator } from '../src/driver/layout.js';
import { EchoDevice } from './helpers/echo-device.js';

const SIZE = 8;

/** Raw access to descriptor fields, to break them on purpose. */
function descs(rig: QueueRig) {
  const v = rig.mem.view(rig.addresses.desc, 16 * rig.addresses.size);
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  const packed = rig.driver.layout === 'packed';
  return {
    setAddr: (i: number, a: number) => {
      dv.setUint32(i * 16, a % 2 ** 32, true);
      dv.setUint32(i * 16 + 4, Math.floor(a / 2 ** 32), true);
    },
    setLen: (i: number, l: number) => dv.setUint32(i * 16 + 8, l, true),
    flags: (i: number) => dv.getUint16(i * 16 + (packed ? 14 : 12), true),
    setFlags: (i: number, f: number) => dv.setUint16(i * 16 + (packed ? 14 : 12), f, true),
    setNext: (i: number, n: number) => dv.setUint16(i * 16 + 14, n, true), // split
    setId: (i: number, id: number) => dv.setUint16(i * 16 + 12, id, true), // packed
  };
}

/** Brings an EchoDevice up as a driver would (§3.1.1) with one queue. */
function startDevice(layout: RingLayout, rig: QueueRig, dev = new EchoDevice()) {
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  let f = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_INDIRECT_DESC);
  if (layout === 'packed') f |= bit(VIRTIO_F_RING_PACKED);
  dev.setDriverFeatures(f);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  expect(dev.status & VIRTIO_CONFIG_S_FEATURES_OK).toBe(VIRTIO_CONFIG_S_FEATURES_OK);
  const q = dev.activateQueue(0, rig.mem, rig.addresses);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  return { dev, q };
}

interface Case {
  name: string;
  fault: number;
  layouts: RingLayout[];
  /** Adds chains with the driver, then breaks them. */
  make: (rig: QueueRig) => void;
}

function addChain(rig: QueueRig, segs: [number, boolean][], token = 1, indirect = false): void {
  rig.driver.beginChain();
  for (const [len, w] of segs) rig.driver.addSegment(rig.alloc.alloc(Math.max(len, 1)), len, w);
  expect(rig.driver.commitChain(token, indirect)).toBeGreaterThanOrEqual(0);
  rig.driver.publish();
}

const both: RingLayout[] = ['split', 'packed'];

const CASES: Case[] = [
  {
    name: 'a buffer outside guest memory',
    fault: ChainFault.BUFFER_OUT_OF_MEMORY,
    layouts: both,
    make: (rig) => {
      addChain(rig, [[16, false], [16, true]]);
      descs(rig).setAddr(1, rig.mem.regions[0]!.size - 8); // straddles the end
    },
  },
  {
    name: 'a buffer address past 2^53',
    fault: ChainFault.BUFFER_OUT_OF_MEMORY,
    layouts: both,
    make: (rig) => {
      addChain(rig, [[16, false]]);
      descs(rig).setAddr(0, 2 ** 60);
    },
  },
  {
    name: 'device-readable after device-writable',
    fault: ChainFault.READABLE_AFTER_WRITABLE,
    layouts: both,
    make: (rig) => {
      addChain(rig, [[16, false], [16, false]]);
      const d = descs(rig);
      d.setFlags(0, d.flags(0) | 2); // the first becomes writable
    },
  },
  {
    name: 'the available index moving by more than the queue size',
    fault: ChainFault.AVAIL_INDEX_JUMP,
    layouts: ['split'],
    make: (rig) => {
      addChain(rig, [[16, true]]);
      const v = rig.mem.view(rig.addresses.driver + 2, 2);
      new DataView(v.buffer, v.byteOffset, 2).setUint16(0, SIZE + 1, true);
    },
  },
  {
    name: 'a head index out of range',
    fault: ChainFault.INDEX_OUT_OF_RANGE,
    layouts: ['split'],
    make: (rig) => {
      addChain(rig, [[16, true]]);
      const v = rig.mem.view(rig.addresses.driver + 4, 2);
      new DataView(v.buffer, v.byteOffset, 2).setUint16(0, SIZE + 3, true);
    },
  },
  {
    name: 'a next index out of range',
    fault: ChainFault.INDEX_OUT_OF_RANGE,
    layouts: ['split'],
    make: (rig) => {
      addChain(rig, [[16, false], [16, true]]);
      descs(rig).setNext(0, SIZE + 5);
    },
  },
  {
    name: 'a loop',
    fault: ChainFault.LOOP,
    layouts: both,
    make: (rig) => {
      if (rig.driver.layout === 'split') {
        addChain(rig, [[16, false], [16, false]]);
        const d = descs(rig);
        d.setFlags(1, d.flags(1) | 1);
        d.setNext(1, 0);
      } else {
        // Every slot of the ring chained together: longer than the queue.
        addChain(rig, Array.from({ length: SIZE }, (): [number, boolean] => [16, false]));
        const d = descs(rig);
        d.setFlags(SIZE - 1, d.flags(SIZE - 1) | 1);
      }
    },
  },
  {
    name: 'a nested indirect table',
    fault: ChainFault.NESTED_INDIRECT,
    layouts: both,
    make: (rig) => {
      addChain(rig, [[16, false], [16, true]], 1, true);
      // The indirect table of buffer 0 is at the start of the rig's indirect area.
      const tableAddr = rig.addresses.device + (rig.driver.layout === 'split' ? 4 + 8 * SIZE + 2 : 4);
      const table = Math.ceil(tableAddr / 16) * 16;
      const v = rig.mem.view(table, 32);
      const dv = new DataView(v.buffer, v.byteOffset, 32);
      const off = rig.driver.layout === 'split' ? 12 : 14;
      dv.setUint16(16 + off, dv.getUint16(16 + off, true) | 4, true);
    },
  },
  {
    name: 'an indirect table of bad length',
    fault: ChainFault.INDIRECT_BAD_LENGTH,
    layouts: both,
    make: (rig) => {
      addChain(rig, [[16, false], [16, true]], 1, true);
      descs(rig).setLen(0, 17);
    },
  },
  {
    name: 'INDIRECT and NEXT on one descriptor',
    fault: ChainFault.INDIRECT_WITH_NEXT,
    layouts: both,
    make: (rig) => {
      addChain(rig, [[16, false], [16, true]], 1, true);
      const d = descs(rig);
      d.setFlags(0, d.flags(0) | 1);
    },
  },
  {
    name: 'a buffer id out of range',
    fault: ChainFault.BUFFER_ID_OUT_OF_RANGE,
    layouts: ['packed'],
    make: (rig) => {
      addChain(rig, [[16, false]]);
      descs(rig).setId(0, SIZE + 9);
    },
  },
];

describe.each(both)('%s ring: malformed chains', (layout) => {
  for (const c of CASES.filter((x) => x.layouts.includes(layout))) {
    const tier = chainFaultTier(c.fault);
    it(`${c.name} → ${chainFaultName(c.fault)}, tier ${tier}`, () => {
      const rig = makeQueueRig({ layout, size: SIZE, indirect: true });
      const { dev, q } = startDevice(layout, rig);
      c.make(rig);
      const chain = q.newChain();
      const r = q.popChain(chain);
      expect(chainFaultName(chain.fault)).toBe(chainFaultName(c.fault));
      if (tier === 1) {
        // Complete with length 0, count, go on: the same queue carries a good chain.
        expect(r).toBe(Pop.BAD_CHAIN);
        expect(q.stats.badChains).toBe(1);
        q.addUsed(chain.head, 0, chain.ringSlots);
        q.flushUsed();
        expect(rig.driver.popUsed()).toBe(1);
        expect(rig.driver.usedLen).toBe(0);
        addChain(rig, [[4, false], [8, true]], 2);
        dev.kick(0);
        expect(rig.driver.popUsed()).toBe(2);
        expect(rig.driver.usedLen).toBe(8);
      } else {
        expect(r).toBe(Pop.BROKEN);
        expect(q.broken).toBe(true);
        dev.markBroken(chain.fault);
        expect(dev.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
        expect(dev.interrupts).toContainEqual({ kind: 'config', queue: -1 });
        expect(dev.brokenReason).toBe(chainFaultName(c.fault));
        // Kicks are ignored until the driver resets the device.
        dev.kick(0);
        dev.kick(0);
        expect(dev.coreStats.kicksIgnored).toBe(2);
        expect(dev.completed).toBe(0);
        // Reset, set up again, and a good chain goes through.
        dev.setStatus(0);
        expect(dev.status).toBe(0);
        rig.driver.reset();
        startDevice(layout, rig, dev);
        addChain(rig, [[4, false], [8, true]], 3);
        dev.kick(0);
        expect(dev.completed).toBe(1);
        expect(rig.driver.popUsed()).toBe(3);
      }
    });
  }

  it('a chain longer than 2^32 bytes in total → TOTAL_LENGTH_OVERFLOW, tier 1', () => {
    // A large sparse region (the OS commits no pages the test does not touch).
    const big = 0x60000000;
    const mem = new GuestMemory([
      { gpa: 0, bytes: new Uint8Array(1 << 20) },
      { gpa: 1 << 20, bytes: new Uint8Array(big) },
    ]);
    const rig = makeQueueRig({ layout, size: SIZE, mem, alloc: new GuestAllocator(0, 1 << 20) });
    const { q } = startDevice(layout, rig);
    rig.driver.beginChain();
    for (let i = 0; i < 3; i++) rig.driver.addSegment(1 << 20, big, true);
    rig.driver.commitChain(1);
    rig.driver.publish();
    const chain = q.newChain();
    expect(q.popChain(chain)).toBe(Pop.BAD_CHAIN);
    expect(chainFaultName(chain.fault)).toBe('TOTAL_LENGTH_OVERFLOW');
  });

  it('features the device did not offer fail FEATURES_OK', () => {
    const dev = new EchoDevice();
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    dev.setDriverFeatures(bit(VIRTIO_F_VERSION_1) | bit(40));
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    expect(dev.status & VIRTIO_CONFIG_S_FEATURES_OK).toBe(0);
    dev.setStatus(0);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    dev.setDriverFeatures(0n); // no VERSION_1: a legacy driver
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    expect(dev.status & VIRTIO_CONFIG_S_FEATURES_OK).toBe(0);
  });
});
