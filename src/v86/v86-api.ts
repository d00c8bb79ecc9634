// The parts of v86 (npm `v86`, pinned at 0.5.462) that virtio-tap drives.
// Beyond the constructor, run/stop/destroy, the serial port and listeners
// (its public API), these are v86's own internals: they keep their names in
// the npm build but are in no .d.ts, so the version is pinned exactly.

/** An I/O port's handlers, as v86's IO keeps them. */
export interface V86IoPort {
  read8: (...a: unknown[]) => number;
}

export interface V86Io {
  ports: V86IoPort[];
  empty_port_read8: (...a: unknown[]) => number;
  register_read(port: number, dev: object, r8?: () => number, r16?: () => number, r32?: () => number): void;
  register_write(port: number, dev: object, w8?: (v: number) => void, w16?: (v: number) => void, w32?: (v: number) => void): void;
}

export interface V86Pci {
  register_device(d: { pci_id: number; pci_space: number[]; pci_bars: { size: number }[]; name: string }): Int32Array;
  raise_irq(pciId: number): void;
  lower_irq(pciId: number): void;
  pci_query(): void;
  pci_write8(address: number, value: number): void;
  pci_write16(address: number, value: number): void;
  pci_write32(address: number, value: number): void;
  pci_addr: Uint8Array;
  pci_status32: Int32Array;
  pci_response32: Int32Array;
}

export interface V86Cpu {
  io: V86Io;
  devices: { pci: V86Pci };
  wasm_memory: { buffer: ArrayBuffer };
  mem8: Uint8Array;
  jit_dirty_cache(start: number, end: number): void;
}

export interface V86Emulator {
  v86: { cpu: V86Cpu; do_tick: () => void };
  add_listener(event: string, fn: (arg: never) => void): void;
  serial0_send(data: string): void;
  run(): Promise<void> | void;
  stop(): Promise<void> | void;
  destroy(): Promise<void> | void;
}

export type V86Constructor = new (options: Record<string, unknown>) => V86Emulator;

/** Thrown when v86 cannot be loaded or driven (cold path; the message names what to do). */
export class V86Error extends Error {
  override readonly name = 'V86Error';
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

export const V86_PACKAGE = 'v86';
export const V86_VERSION = '0.5.462';

/** Loads v86 (an optional dependency): its constructor and where its wasm is. */
export async function loadV86(): Promise<{ V86: V86Constructor; wasmPath: string }> {
  let mod: { V86?: V86Constructor };
  let wasmPath: string;
  try {
    mod = (await import(V86_PACKAGE)) as { V86?: V86Constructor };
    const { dirname, join } = await import('node:path');
    const { fileURLToPath } = await import('node:url');
    const entry = fileURLToPath(import.meta.resolve(V86_PACKAGE));
    wasmPath = join(dirname(entry), 'v86.wasm');
  } catch (err) {
    throw new V86Error(
      'ERR_V86_MISSING',
      `the optional package "${V86_PACKAGE}" (${V86_VERSION}) is not installed: npm install --save-exact ${V86_PACKAGE}@${V86_VERSION} (${(err as Error).message.split('\n')[0]})`,
    );
  }
  if (typeof mod.V86 !== 'function') throw new V86Error('ERR_V86_VERSION', `the "${V86_PACKAGE}" package has no V86 export: virtio-tap drives ${V86_PACKAGE}@${V86_VERSION}`);
  return { V86: mod.V86, wasmPath };
}
