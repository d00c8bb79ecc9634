// One side of the observe suite's comparisons (virtio-tap as built, or the
// copy without trace hooks), run in a process of its own: in one process,
// each copy's JIT state is shaped by the other's runs. Prints {"rate": n}.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { nativeBuildDir } from '../src/host/binding.js';
import { rate } from './lib/c-loop.js';
import { OWN_LIB, tsTransmit, type DeviceLib } from './net.js';
import { ringRate, type QueueClass } from './observe.js';

interface ChildArgs {
  /** Transmit on the bench TAP, or the virtqueue alone. */
  mode: 'transmit' | 'ring';
  frameFile: string;
  seconds: number;
  chains: number;
  /** The root of the copy without hooks, or null for virtio-tap as built. */
  bare: string | null;
}

const args = JSON.parse(process.env['VT_OBSERVE_CHILD'] ?? '{}') as ChildArgs;
if (args.mode === 'ring') {
  const src = args.bare === null ? join(import.meta.dirname, '..', 'src') : join(args.bare, 'src');
  const { SplitQueue } = (await import(join(src, 'virtio', 'split-queue.ts'))) as { SplitQueue: QueueClass };
  console.log(JSON.stringify({ rate: ringRate(SplitQueue, args.chains) }));
  process.exit(0);
}
let lib: DeviceLib = OWN_LIB;
if (args.bare !== null) {
  process.env['VIRTIO_TAP_ADDON'] = join(nativeBuildDir(), 'virtio_tap.node');
  const device = (await import(join(args.bare, 'src', 'net', 'device.ts'))) as { NetDevice: DeviceLib['NetDevice'] };
  const driver = (await import(join(args.bare, 'src', 'driver', 'net-driver.ts'))) as { NetDriver: DeviceLib['NetDriver'] };
  lib = { NetDevice: device.NetDevice, NetDriver: driver.NetDriver };
}
const frame = new Uint8Array(readFileSync(args.frameFile));
console.log(JSON.stringify({ rate: rate(await tsTransmit(frame, args.seconds, lib)) }));
