// How a VMM written in JavaScript wires a virtio-tap NIC in: v86 (a PC
// emulator in wasm) under Node, a Linux guest whose own virtio_pci and
// virtio_net drive the device, on a TAP.
//
//   npm install && bash test/guest/build-v86-guest.sh      (the guest: vmlinuz, initramfs.gz)
//   sudo npx tsx examples/v86-vmm.ts                        (or attach to a TAP you own: ... vtap0)
//
// It imports virtio-tap by its package name: inside this repository that is
// the package referring to itself (package.json "exports"), which resolves to
// the built dist/ (npm install builds it; after editing src/, npm run build).
// From another project it is the installed package, the same lines.
//
// The wiring, by hand, is what V86Machine does:
//   1. the device's interrupt callback goes to the transport (notify);
//   2. PciTransport with bars: 'io' and msix: false (v86 has INTx only, and
//      moves I/O BARs but not memory BARs);
//   3. attachPci puts the function on v86's PCI bus (port handlers, config
//      cycles, the IRQ line);
//   4. V86GuestRam: guest RAM as a GuestMemory over v86's wasm memory,
//      rebuilt (and the device's queues moved) when that memory grows, and
//      v86's compiled code dropped for pages the device filled.
import { homedir } from 'node:os';
import { join } from 'node:path';

import { NetDevice, Tap, V86Machine } from 'virtio-tap';

const image = process.env['VIRTIO_TAP_V86_CACHE'] ?? join(homedir(), '.cache', 'virtio-tap-v86');
const tapName = process.argv[2];
const tap = tapName === undefined ? Tap.open({ name: 'vtv86_%d', vnetHdr: true }) : Tap.attach(tapName, { vnetHdr: true });
if (tapName === undefined) {
  tap.setUp();
  tap.setIpv4('198.18.88.1', 24);
}

let machine: V86Machine | null = null;
const device = new NetDevice({
  tap,
  features: { RING_PACKED: false }, // any ring Linux takes works; split is what the test checks
  interrupt: (kind, queue) => machine?.notify(kind, queue), // the transport raises v86's PCI IRQ
});
machine = await V86Machine.boot(device, {
  kernel: join(image, 'vmlinuz'),
  initrd: join(image, 'initramfs.gz'),
  cmdline: 'console=ttyS0 quiet loglevel=3 vt.ip=198.18.88.2',
});
machine.console.onOutput = (s) => process.stdout.write(s);
await machine.console.waitFor(/VT-READY/, 240_000);
const ping = await machine.console.run('ping -c 3 198.18.88.1', 60_000);
console.log(`\nguest ping exit status ${ping.status}; device status 0x${device.status.toString(16)}, features 0x${device.features.toString(16)}`);
console.log(device.metrics.toPrometheus(tap.name));
await machine.stop();
device.close();
tap.close();
