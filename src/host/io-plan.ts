// Plans for batched vectored I/O: frames as (region, offset, length) segments
// against memory registered once with the native layer. Preallocated, so the
// hot path builds a plan without allocating.
import { native } from './binding.js';

/**
 * Registers memory that batched I/O may read and write. Returns its index.
 * The view's buffer must stay attached while registered: native I/O re-checks
 * each region's length on every call and refuses a detached one.
 */
export function registerIoRegion(view: ArrayBufferView): number {
  return native().registerRegion(view);
}

export function unregisterIoRegion(index: number): void {
  native().unregisterRegion(index);
}

/**
 * A reusable I/O plan. Layout, per frame (or group, for mergeable receive):
 * segment count, then (region, offset, length) per segment. `results`
 * receives bytes or -errno per frame. This class and the native side are the
 * only places that know the layout: everyone else walks a plan through the
 * accessors below, by plan position (`at`, where a frame's count sits).
 */
export class IoPlan {
  readonly plan: Float64Array;
  readonly results: Int32Array;
  readonly maxFrames: number;
  frames = 0;
  private pos = 0;
  private countPos = -1;

  /** maxSegments: total segments across all frames of one batch. */
  constructor(maxFrames: number, maxSegments = maxFrames * 4) {
    if (!Number.isInteger(maxFrames) || maxFrames < 1) throw new RangeError(`maxFrames must be >= 1, got ${maxFrames}`);
    if (!Number.isInteger(maxSegments) || maxSegments < 1) {
      throw new RangeError(`maxSegments must be >= 1, got ${maxSegments}`);
    }
    this.maxFrames = maxFrames;
    this.plan = new Float64Array(maxFrames + maxSegments * 3);
    this.results = new Int32Array(maxFrames);
  }

  // Accessors: one-liners over the one typed array, for the JIT to inline.

  /** Plan position past the last frame planned. */
  get end(): number {
    return this.pos;
  }

  /** Segments of the frame at plan position `at`. */
  segments(at: number): number {
    return this.plan[at]!;
  }

  /** Plan position of the frame after the one at `at`. */
  next(at: number): number {
    return at + 1 + 3 * this.plan[at]!;
  }

  /** Plan position `frames` frames on from `at`: where a frame that ran on over that many groups ends. */
  skip(at: number, frames: number): number {
    for (let f = 0; f < frames; f++) at = this.next(at);
    return at;
  }

  /** Segment `s` of the frame at `at`: its registered region. */
  region(at: number, s: number): number {
    return this.plan[at + 1 + 3 * s]!;
  }

  /** Segment `s` of the frame at `at`: its offset in the region. */
  offset(at: number, s: number): number {
    return this.plan[at + 2 + 3 * s]!;
  }

  /** Segment `s` of the frame at `at`: its length. */
  length(at: number, s: number): number {
    return this.plan[at + 3 + 3 * s]!;
  }

  reset(): void {
    this.frames = 0;
    this.pos = 0;
    this.countPos = -1;
  }

  /** Starts a frame; false when the plan is full. */
  beginFrame(): boolean {
    if (this.frames >= this.maxFrames || this.pos >= this.plan.length) return false;
    this.countPos = this.pos;
    this.plan[this.pos++] = 0;
    this.frames++;
    return true;
  }

  /** Adds a segment to the current frame; false when the plan is full. */
  addSegment(region: number, offset: number, length: number): boolean {
    if (this.countPos < 0 || this.pos + 3 > this.plan.length) return false;
    const p = this.plan;
    p[this.pos] = region;
    p[this.pos + 1] = offset;
    p[this.pos + 2] = length;
    this.pos += 3;
    p[this.countPos] = (p[this.countPos] ?? 0) + 1;
    return true;
  }

  /** Keeps frames [0, frames) whose flag is 1, in order, dropping the others; returns how many remain. */
  keepFrames(keep: Uint8Array): number {
    const p = this.plan;
    let read = 0;
    let write = 0;
    let kept = 0;
    for (let f = 0; f < this.frames; f++) {
      const next = this.next(read);
      if (keep[f] === 1) {
        if (write !== read) p.copyWithin(write, read, next);
        write += next - read;
        kept++;
      }
      read = next;
    }
    this.pos = write;
    this.frames = kept;
    this.countPos = -1;
    return kept;
  }
}
