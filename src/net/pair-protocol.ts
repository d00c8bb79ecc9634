// What the device and a queue pair's worker thread say to each other.
import type { QueueAddresses } from '../virtio/queue.js';
import type { RateLimit } from './rate-limiter.js';

/** Int32 words of the shared control block. */
export const CTRL_STOP = 0; // set by the device: touch no ring again
export const CTRL_BUSY = 1; // set by the worker while it touches rings
export const CTRL_WORDS = 2;

export interface FilterState {
  promisc: boolean;
  allmulti: boolean;
  alluni: boolean;
  nomulti: boolean;
  nouni: boolean;
  nobcast: boolean;
  vlanFiltering: boolean;
  mac: number[];
  unicast: number[][];
  multicast: number[][];
  vlans: number[];
}

export interface PairWorkerData {
  pair: number;
  fd: number;
  tapName: string;
  /** Guest memory regions, each a view over a SharedArrayBuffer. */
  regions: { gpa: number; buffer: SharedArrayBuffer; byteOffset: number; byteLength: number }[];
  layout: 'split' | 'packed';
  rx: { index: number; addresses: QueueAddresses };
  tx: { index: number; addresses: QueueAddresses };
  /** Negotiated features, as a decimal string (bigint). */
  features: string;
  mtu: number;
  batch: number;
  txTimerMs: number;
  rateLimit: { tx?: RateLimit; rx?: RateLimit };
  filter: FilterState;
  control: SharedArrayBuffer;
  /** NetMetrics counters of this pair (NetMetrics.SIZE doubles). */
  metrics: SharedArrayBuffer;
}

export type ToWorker = { kick: number } | { filter: FilterState };

export type FromWorker = { interrupt: number } | { broken: number } | { error: string } | { ready: true };
