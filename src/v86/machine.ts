// A v86 PC under Node with a virtio-tap NIC on its PCI bus: SeaBIOS, a
// Linux kernel and initrd, 128 MB of RAM by default. The guest's own
// virtio_pci and virtio_net drive the device through the transport; guest
// RAM follows v86's memory as it moves (V86GuestRam), and pages the device
// fills are dropped from v86's compiled-code cache.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { PciTransport, type PciDevice } from '../transport/pci.js';
import { SerialConsole } from './console.js';
import { V86GuestRam } from './guest-ram.js';
import { attachPci } from './pci-attach.js';
import { loadV86, V86Error, type V86Cpu, type V86Emulator } from './v86-api.js';

export interface V86MachineOptions {
  /** bzImage and initrd paths. */
  kernel: string;
  initrd: string;
  cmdline: string;
  /** MB of RAM (over 64: v86 puts the initrd at 64 MB). Default 128. */
  memoryMb?: number;
  /** Where bios.bin and vgabios-stdvga.bin are (Debian's seabios package). */
  biosDir?: string;
  /** Largest queue size the device offers. Default 256. */
  queueNumMax?: number;
}

function image(path: string): { buffer: ArrayBuffer } {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (err) {
    throw new V86Error('ERR_V86_IMAGE', `cannot read ${path}: ${(err as Error).message}${path.includes('seabios') ? ' (apt-get install seabios)' : ''}`);
  }
  return { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer };
}

export class V86Machine {
  readonly emulator: V86Emulator;
  readonly cpu: V86Cpu;
  readonly transport: PciTransport;
  readonly ram: V86GuestRam;
  readonly console: SerialConsole;
  readonly pciId: number;

  private constructor(emulator: V86Emulator, device: PciDevice, o: V86MachineOptions) {
    this.emulator = emulator;
    this.cpu = emulator.v86.cpu;
    this.console = new SerialConsole(emulator);
    this.ram = new V86GuestRam(this.cpu);
    const pci = this.cpu.devices.pci;
    let id = -1;
    this.transport = new PciTransport(device, {
      memory: this.ram.memory,
      bars: 'io',
      msix: false, // v86 has INTx only
      queueNumMax: o.queueNumMax ?? 256,
      interrupt: (up) => (up ? pci.raise_irq(id) : pci.lower_irq(id)),
    });
    this.ram.follow(device);
    this.ram.onReplaced = (m) => (this.transport.memory = m);
    id = attachPci(this.cpu, this.transport, { beforeAccess: () => this.ram.check() });
    this.pciId = id;
    // After each slice of guest execution, before any TAP event: memory moved? pages filled?
    const tick = emulator.v86.do_tick.bind(emulator.v86);
    emulator.v86.do_tick = () => {
      tick();
      this.ram.check();
      this.ram.dirty();
    };
  }

  /**
   * Builds the machine and starts it. `device` is the virtio device; its
   * interrupt callback must call machine.notify (the machine does not exist
   * yet when the device is made: pass a closure).
   */
  static async boot(device: PciDevice, o: V86MachineOptions): Promise<V86Machine> {
    const { V86, wasmPath } = await loadV86();
    const bios = o.biosDir ?? '/usr/share/seabios';
    const emulator = new V86({
      wasm_path: wasmPath,
      bios: image(join(bios, 'bios.bin')),
      vga_bios: image(join(bios, 'vgabios-stdvga.bin')),
      bzimage: image(o.kernel),
      initrd: image(o.initrd),
      cmdline: o.cmdline,
      memory_size: (o.memoryMb ?? 128) << 20,
      autostart: false,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
    });
    await new Promise<void>((resolve) => emulator.add_listener('emulator-loaded', () => resolve()));
    const m = new V86Machine(emulator, device, o);
    await emulator.run();
    return m;
  }

  /** The device's interrupt callback: tell v86 which pages were filled, then raise. */
  notify(kind: 'vring' | 'config', queue: number): void {
    this.ram.check();
    if (kind === 'vring') this.ram.dirty();
    this.transport.notify(kind, queue);
  }

  async stop(): Promise<void> {
    await this.emulator.stop();
    await this.emulator.destroy();
  }
}
