// Puts a PciTransport on v86's PCI bus: the function's configuration space
// is the transport's (v86's configuration cycles for its slot are routed to
// it), the virtio structures sit in an I/O-port BAR whose port handlers v86
// moves when firmware places the BAR, and the INTx line is v86's
// level-triggered PCI interrupt. v86 has no MSI/MSI-X: the transport must be
// built with msix: false and bars: 'io'.
import type { PciTransport } from '../transport/pci.js';
import { V86Error, type V86Cpu } from './v86-api.js';

export interface PciAttachOptions {
  /** Bus 0 device/function number, (device << 3) | function. Default 0x0e << 3 (a slot v86 leaves free). */
  pciId?: number;
  /** The I/O port the BAR starts at before firmware places it (>= 0x1000, 256-aligned, free). Default 0xe800. */
  port?: number;
  /** Called before every access the guest makes to the device (a VMM's chance to check its memory). */
  beforeAccess?: () => void;
}

/** Registers the transport's function and its I/O BAR with v86; returns the PCI id it took. */
export function attachPci(cpu: V86Cpu, transport: PciTransport, o: PciAttachOptions = {}): number {
  const pciId = o.pciId ?? 0x0e << 3;
  const port = o.port ?? 0xe800;
  const bar = transport.layout.bars[0];
  if (bar?.kind !== 'io' || transport.msix !== null) {
    throw new V86Error('ERR_V86_TRANSPORT', "v86 needs the transport built with bars: 'io' and msix: false (it has no MSI-X and cannot move memory BARs)");
  }
  if (port < 0x1000 || port % bar.size !== 0) throw new V86Error('ERR_V86_PORT', `port 0x${port.toString(16)}: v86 moves only BARs at 0x1000 or above, and it must be ${bar.size}-aligned`);
  const pci = cpu.devices.pci;
  const before = o.beforeAccess ?? ((): void => {});
  const dev = { name: 'virtio-tap' };
  // Port handlers first: register_device copies them for BAR moves (MACHINE-NOTES).
  for (let off = 0; off < bar.size; off++) {
    if (cpu.io.ports[port + off]!.read8 !== cpu.io.empty_port_read8) throw new V86Error('ERR_V86_PORT', `port 0x${(port + off).toString(16)} is taken in v86`);
    const rd = (size: number) => (): number => {
      before();
      return transport.barRead(0, off, size);
    };
    const wr = (size: number) => (v: number): void => {
      before();
      transport.barWrite(0, off, size, v);
    };
    cpu.io.register_read(port + off, dev, rd(1), rd(2), rd(4));
    cpu.io.register_write(port + off, dev, wr(1), wr(2), wr(4));
  }
  transport.configWrite(0x10, 4, port); // the BAR as v86 registers it
  pci.register_device({ pci_id: pciId, pci_space: Array.from(transport.config.bytes), pci_bars: [{ size: bar.size }], name: 'virtio-tap' });
  routeConfigCycles(cpu, transport, pciId);
  return pciId;
}

// v86 answers configuration reads from its copy of the space when the address is written (pci_query);
// for this slot the answer comes from the transport. Writes go to v86 (which moves I/O BARs) and to the transport.
function routeConfigCycles(cpu: V86Cpu, transport: PciTransport, pciId: number): void {
  const pci = cpu.devices.pci;
  const query = pci.pci_query.bind(pci);
  pci.pci_query = () => {
    query();
    if (((pci.pci_addr[2]! << 8) | pci.pci_addr[1]!) !== pciId) return;
    pci.pci_status32[0] = 0x80000000 | 0;
    pci.pci_response32[0] = transport.configRead(pci.pci_addr[0]! & 0xfc, 4) | 0;
  };
  const writes: [keyof typeof pci & `pci_write${number}`, number][] = [['pci_write8', 1], ['pci_write16', 2], ['pci_write32', 4]];
  for (const [name, size] of writes) {
    const orig = (pci[name] as (a: number, v: number) => void).bind(pci);
    pci[name] = (address: number, value: number): void => {
      orig(address, value);
      if (((address >> 8) & 0xffff) === pciId) transport.configWrite(address & 0xff, size, value >>> 0);
    };
  }
}
