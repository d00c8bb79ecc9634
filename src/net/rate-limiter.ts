// Token buckets for bytes and operations, per direction (off by default).

export interface BucketConfig {
  /** Bucket size: the burst allowed. */
  size: number;
  /** Milliseconds to refill a whole bucket (so the rate is size / refillMs per ms). */
  refillMs: number;
}

export class TokenBucket {
  readonly size: number;
  private readonly perMs: number;
  private tokens: number;
  private last: number;

  constructor(c: BucketConfig, now = performance.now()) {
    if (!(c.size > 0) || !(c.refillMs > 0)) throw new RangeError(`a token bucket needs size > 0 and refillMs > 0, got ${c.size} and ${c.refillMs}`);
    this.size = c.size;
    this.perMs = c.size / c.refillMs;
    this.tokens = c.size;
    this.last = now;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.size, this.tokens + (now - this.last) * this.perMs);
    this.last = now;
  }

  /** Takes n tokens if there are enough (n larger than the bucket needs a full one). */
  take(n: number, now = performance.now()): boolean {
    this.refill(now);
    const need = Math.min(n, this.size);
    if (this.tokens < need) return false;
    this.tokens -= n; // may go into debt for n > size; repaid before the next take
    return true;
  }

  /** Takes n tokens unconditionally (bytes known only after a read). */
  charge(n: number, now = performance.now()): void {
    this.refill(now);
    this.tokens -= n;
  }

  /** Milliseconds until n tokens are there. */
  waitMs(n: number, now = performance.now()): number {
    this.refill(now);
    const need = Math.min(n, this.size) - this.tokens;
    return need <= 0 ? 0 : Math.ceil(need / this.perMs);
  }

  /** The tokens in the bucket now, below 0 in debt (a snapshot). */
  level(now = performance.now()): number {
    this.refill(now);
    return this.tokens;
  }

  /** Starts again from `tokens` (a restored snapshot's level), refilling from `now`. */
  setLevel(tokens: number, now = performance.now()): void {
    this.tokens = Math.min(this.size, tokens);
    this.last = now;
  }
}

/** The levels of a limiter's buckets (TokenBucket.level), null for a bucket it does not have. */
export interface LimiterLevels {
  bytes: number | null;
  ops: number | null;
}

export interface RateLimit {
  bytes?: BucketConfig;
  ops?: BucketConfig;
}

/** One direction's limits: both buckets must allow a frame. */
export class RateLimiter {
  private readonly bytes: TokenBucket | null;
  private readonly ops: TokenBucket | null;

  constructor(limit: RateLimit | undefined) {
    this.bytes = limit?.bytes !== undefined ? new TokenBucket(limit.bytes) : null;
    this.ops = limit?.ops !== undefined ? new TokenBucket(limit.ops) : null;
  }

  get active(): boolean {
    return this.bytes !== null || this.ops !== null;
  }

  /** May a frame of `bytes` go now? Takes the tokens if so. */
  allow(bytes: number): boolean {
    const now = performance.now();
    if (this.ops !== null && this.ops.waitMs(1, now) > 0) return false;
    if (this.bytes !== null && bytes > 0 && this.bytes.waitMs(bytes, now) > 0) return false;
    this.ops?.take(1, now);
    if (bytes > 0) this.bytes?.take(bytes, now);
    return true;
  }

  /** Charges bytes learnt after the fact (a read). */
  charge(bytes: number): void {
    this.bytes?.charge(bytes);
  }

  /** Its buckets' levels now (a snapshot). */
  levels(): LimiterLevels {
    const now = performance.now();
    return { bytes: this.bytes?.level(now) ?? null, ops: this.ops?.level(now) ?? null };
  }

  /** Takes on a snapshot's levels, for the buckets it has. */
  setLevels(l: LimiterLevels): void {
    const now = performance.now();
    if (l.bytes !== null) this.bytes?.setLevel(l.bytes, now);
    if (l.ops !== null) this.ops?.setLevel(l.ops, now);
  }

  /** How long until a frame of `bytes` may go. */
  waitMs(bytes: number): number {
    const now = performance.now();
    return Math.max(this.ops?.waitMs(1, now) ?? 0, bytes > 0 ? (this.bytes?.waitMs(bytes, now) ?? 0) : 0);
  }
}
