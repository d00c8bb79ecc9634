// How a TypeScript VMM wires a virtio-tap network device over virtio-mmio.
//
//   sudo node examples/mmio-vmm.ts          (Node 22.18+; or attach to a TAP you own: ... vtap0)
//
// The VMM owns guest RAM and an MMIO window at some base address. On each
// MMIO exit it calls transport.read/write with the offset from that base; the
// transport raises and lowers the device's interrupt line. Here the "guest"
// is virtio-tap's own TypeScript driver, talking to the device only through
// the registers, as a guest kernel's virtio_mmio driver would.
import { GuestMemory, MmioDeviceHandle, MmioTransport, NetDevice, NetDriver, Tap, formatMac } from 'virtio-tap';

const MMIO_BASE = 0xd000_0000; // where the VMM maps the device (its choice)
const ram = GuestMemory.create(64 << 20); // 64 MiB of guest RAM at guest-physical 0

const tapName = process.argv[2];
const tap = tapName === undefined ? Tap.open({ name: 'vtvmm%d', vnetHdr: true }) : Tap.attach(tapName, { vnetHdr: true });

let guestIrq = (): void => {};
// The device raises interrupts through the transport, which drives the line.
const device = new NetDevice({ tap, interrupt: (kind) => transport.notify(kind) });
const transport: MmioTransport = new MmioTransport(device, {
  memory: ram,
  interrupt: (asserted) => {
    if (asserted) queueMicrotask(() => guestIrq()); // the VMM injects the IRQ into the guest
  },
});

// The VMM's MMIO exit handler: guest-physical address -> offset in the window.
const bus = {
  read: (gpa: number, size: number) => transport.read(gpa - MMIO_BASE, size),
  write: (gpa: number, size: number, value: number) => transport.write(gpa - MMIO_BASE, size, value),
};

// The guest side: a driver that knows only the MMIO window.
const handle = new MmioDeviceHandle({
  read: (off, size) => bus.read(MMIO_BASE + off, size),
  write: (off, size, value) => bus.write(MMIO_BASE + off, size, value),
});
const driver = new NetDriver(handle, { memory: ram, queueSize: 128 });
guestIrq = () => {
  const { vring, config } = handle.acknowledge();
  if (config) driver.interrupt('config', -1);
  if (vring) driver.interrupt('vring', 0);
};
driver.start();
console.log(`virtio-mmio net device at 0x${MMIO_BASE.toString(16)} on ${tap.name}: status 0x${handle.status.toString(16)}, guest MAC ${formatMac(driver.mac)}`);
console.log(`invalid register accesses so far: ${transport.invalidAccesses}`);
device.close();
tap.close();
