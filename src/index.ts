// virtio-tap: a userspace virtio-net device over a Linux TAP.
export { Tap, TapQueue, TunOffload, TUN_OFFLOAD_ALL, offloadNames } from './tap/tap.js';
export type { TapOptions, OffloadResult } from './tap/tap.js';
export { TapError } from './tap/errors.js';
export { Link } from './tap/link.js';
export { IoPlan, registerIoRegion, unregisterIoRegion } from './tap/io-plan.js';
export { native } from './tap/binding.js';
export type { NativeBinding, NativeConstants, NativePoller } from './tap/binding.js';
export { parseMac, formatMac, randomMac, parseIpv4, formatIpv4, parseCidr } from './util/addr.js';
