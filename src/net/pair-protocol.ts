// What the device and a queue pair's worker thread say to each other: the
// data a worker starts from, the messages each way, and the shared control
// block that keeps the worker off the rings while the device changes them.
import { HostError } from '../host/errors.js';
import type { QueueAddresses } from '../virtio/queue.js';
import type { FilterState } from './filter.js';
import type { PairSettings } from './queue-pair.js';

/** Int32 words of the shared control block. */
const CTRL_STOP = 0; // set by the device: touch no ring again
const CTRL_BUSY = 1; // set by the worker while it touches rings
const CTRL_WORDS = 2;

/** How long the device waits for a worker to leave the rings. */
const STOP_WAIT_MS = 2000;

/**
 * The STOP/BUSY block shared by the device and one worker. The worker
 * brackets every touch of the rings with enter()/leave(); the device's
 * stop() sets STOP and then waits until the worker is out, so rings can be
 * reset or moved without the worker writing into them.
 */
export class ControlBlock {
  readonly buffer: SharedArrayBuffer;
  private readonly words: Int32Array;

  constructor(buffer = new SharedArrayBuffer(4 * CTRL_WORDS)) {
    this.buffer = buffer;
    this.words = new Int32Array(buffer);
  }

  /** Worker side: false once the device said STOP (touch nothing); else BUSY is set until leave(). */
  enter(): boolean {
    const w = this.words;
    if (Atomics.load(w, CTRL_STOP) === 1) return false;
    Atomics.store(w, CTRL_BUSY, 1);
    if (Atomics.load(w, CTRL_STOP) === 0) return true;
    this.leave();
    return false;
  }

  /** Worker side: done touching the rings. */
  leave(): void {
    Atomics.store(this.words, CTRL_BUSY, 0);
    Atomics.notify(this.words, CTRL_BUSY);
  }

  /** Device side: STOP, then wait (bounded) until the worker is off the rings. */
  stop(): void {
    const w = this.words;
    Atomics.store(w, CTRL_STOP, 1);
    const deadline = Date.now() + STOP_WAIT_MS;
    while (Atomics.load(w, CTRL_BUSY) === 1 && Date.now() < deadline) Atomics.wait(w, CTRL_BUSY, 1, 50);
  }
}

export interface PairWorkerData {
  pair: number;
  fd: number;
  tapName: string;
  /** Guest memory regions, each a view over a SharedArrayBuffer. */
  regions: { gpa: number; buffer: SharedArrayBuffer; byteOffset: number; byteLength: number }[];
  rx: QueueAddresses;
  tx: QueueAddresses;
  /** Negotiated features, as a decimal string (bigint). */
  features: string;
  settings: PairSettings;
  filter: FilterState;
  /** The device's link is up. */
  linkUp: boolean;
  /** The ControlBlock's buffer. */
  control: SharedArrayBuffer;
  /** NetMetrics counters of this pair (NetMetrics.SIZE doubles). */
  metrics: SharedArrayBuffer;
}

/** A HostError's fields, as posted across threads (HostError.toFields). */
export type HostErrorFields = ReturnType<HostError['toFields']>;

export type ToWorker = { kick: number } | { filter: FilterState } | { linkUp: boolean };

export type FromWorker = { interrupt: number } | { broken: number } | { error: HostErrorFields } | { ready: true };

/** Any error a worker thread reports, as the Node-shaped HostError the device emits. */
export function workerHostError(e: unknown): HostError {
  if (e instanceof HostError) return e;
  return new HostError(e instanceof Error ? e.message : String(e), 'ERR_WORKER', 0, '');
}
