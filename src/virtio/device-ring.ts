// What the split and packed rings share on the device side, whatever the
// layout: the configuration, the counts, the broken state (a tier-2 fault),
// how a pop ends, and where an indirect table lies. Each layout's ring logic
// stays in its own file; the methods here are leaves the layouts call.
import { MAX_QUEUE_SIZE } from './constants.js';
import { ChainFault, chainCapacity, chainFaultTier, DescriptorChain, maxIndirectEntries, Pop } from './descriptor-chain.js';
import type { GuestMemory } from './guest-memory.js';
import { QueueConfigError, type QueueAddresses, type QueueFeatures, type QueueStats } from './queue.js';

/** Throws QueueConfigError unless `n` is a size the layout allows: a power of 2 (§2.7) or any (§2.8), up to MAX_QUEUE_SIZE. */
export function requireQueueSize(layout: 'split' | 'packed', n: number): void {
  const split = layout === 'split';
  if (Number.isInteger(n) && n >= 1 && n <= MAX_QUEUE_SIZE && (!split || (n & (n - 1)) === 0)) return;
  throw new QueueConfigError(`${layout} queue size must be ${split ? 'a power of 2' : 'an integer'} from 1 to ${MAX_QUEUE_SIZE}, got ${n}`);
}

/** Throws QueueConfigError unless the ring area `what` at `addr` is `align`-byte aligned. */
export function requireAligned(addr: number, align: number, what: string): void {
  if (addr % align !== 0) throw new QueueConfigError(`${what} 0x${addr.toString(16)} is not ${align}-byte aligned`);
}

export abstract class DeviceRing {
  readonly size: number;
  readonly mem: GuestMemory;
  readonly features: QueueFeatures;
  readonly addresses: QueueAddresses;
  readonly stats: QueueStats = { chains: 0, badChains: 0, notificationsSent: 0, notificationsSuppressed: 0 };
  broken = false;
  brokenReason: number = ChainFault.NONE;
  /** A view per guest memory region, for reading indirect tables. */
  protected readonly views: DataView[];
  /** Where the table found by the last indirectTable call starts in its region. */
  protected tableOffset = 0;

  constructor(mem: GuestMemory, a: QueueAddresses, features: QueueFeatures) {
    this.mem = mem;
    this.size = a.size;
    this.features = { ...features };
    this.addresses = { ...a };
    this.views = mem.regions.map((r) => new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength));
  }

  newChain(): DescriptorChain {
    return new DescriptorChain(chainCapacity(this.size));
  }

  /** A tier-2 fault: the ring is corrupt and pops nothing more until reset. */
  protected breakRing(chain: DescriptorChain, fault: number): number {
    chain.fault = fault;
    this.broken = true;
    this.brokenReason = fault;
    return Pop.BROKEN;
  }

  /**
   * Ends a pop whose walk found `fault`: a bad chain (tier 1, counted), or a
   * broken ring (tier 2). The layouts test for no fault themselves, which
   * keeps the common pop short.
   */
  protected faulted(chain: DescriptorChain, fault: number): number {
    chain.fault = fault;
    if (chainFaultTier(fault) === 2) return this.breakRing(chain, fault);
    this.stats.badChains++;
    return Pop.BAD_CHAIN;
  }

  /**
   * Checks an indirect table of `len` bytes at `addr` (§2.7, "Indirect
   * Descriptors"; §2.8, "Indirect Flag: Scatter-Gather Support") and marks
   * the chain indirect: returns the table's region, its offset there in
   * tableOffset, or minus the fault.
   */
  protected indirectTable(chain: DescriptorChain, addr: number, len: number): number {
    if (len === 0 || len % 16 !== 0 || len / 16 > maxIndirectEntries(this.size)) return -ChainFault.INDIRECT_BAD_LENGTH;
    const r = addr < 0 ? -1 : this.mem.regionOf(addr, len);
    if (r < 0) return -ChainFault.BUFFER_OUT_OF_MEMORY;
    chain.indirect = true;
    this.tableOffset = addr - this.mem.regions[r]!.gpa;
    return r;
  }

  /** A ring a snapshot carried broken by `fault` (tier 2): it pops nothing until reset. */
  markBroken(fault: number): void {
    this.broken = true;
    this.brokenReason = fault;
  }

  /** Counts a notification decision. */
  protected counted(notify: boolean): boolean {
    if (notify) this.stats.notificationsSent++;
    else this.stats.notificationsSuppressed++;
    return notify;
  }

  /** Clears the broken state; the layout resets its positions. */
  protected repair(): void {
    this.broken = false;
    this.brokenReason = ChainFault.NONE;
  }
}
