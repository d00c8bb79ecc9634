// Snapshots (docs/snapshot.md): the one error type, and the reader that
// checks a parsed snapshot field by field before anything is built from it.
// A snapshot comes from JSON and may be malformed, truncated or newer than
// this build: every read names the field it refuses, by its path.

/** Why a snapshot was refused: `code` says which kind of refusal, `field` the path of the field at fault, when one is. */
export type SnapshotErrorCode =
  /** snapshot(): the device is closed. */
  | 'ERR_SNAPSHOT_CLOSED'
  /** snapshot(): a queue pair runs in a worker thread, whose rings and held frame this thread cannot quiesce. */
  | 'ERR_SNAPSHOT_WORKER'
  /** snapshot(): the device behind a transport cannot snapshot itself. */
  | 'ERR_SNAPSHOT_UNSUPPORTED'
  /** restore: text that is not JSON (cut short, say). */
  | 'ERR_SNAPSHOT_JSON'
  /** restore: not a snapshot of this kind (its `format`). */
  | 'ERR_SNAPSHOT_FORMAT'
  /** restore: a `version` this build does not read (a newer one, say). */
  | 'ERR_SNAPSHOT_VERSION'
  /** restore: a field missing, of the wrong type or out of range. */
  | 'ERR_SNAPSHOT_FIELD'
  /** restore: a well-formed snapshot that does not fit what restore was handed (the TAP's queues, the memory, the device). */
  | 'ERR_SNAPSHOT_MISMATCH';

/**
 * A snapshot that cannot be taken, or cannot be restored. Thrown before
 * anything changes: snapshot() writes no half snapshot, and restore touches
 * no TAP and activates no queue. Cold path only.
 */
export class SnapshotError extends Error {
  override readonly name = 'SnapshotError';
  readonly code: SnapshotErrorCode;
  /** The path of the field at fault (`core.queues[1].nextAvail`), or null. */
  readonly field: string | null;

  constructor(code: SnapshotErrorCode, message: string, field: string | null = null) {
    super(field === null ? message : `snapshot field ${field}: ${message}`);
    this.code = code;
    this.field = field;
  }
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const HEX64 = /^0x[0-9a-f]{1,16}$/;

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}

/** One object of a snapshot at `path`, read field by field; every refusal is a SnapshotError naming the field. */
export class SnapshotFields {
  readonly path: string;
  private readonly o: Record<string, unknown>;

  private constructor(o: Record<string, unknown>, path: string) {
    this.o = o;
    this.path = path;
  }

  /** `v` as an object at `path`. */
  static of(v: unknown, path: string): SnapshotFields {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SnapshotError('ERR_SNAPSHOT_FIELD', `must be an object, not ${typeName(v)}`, path || '(the snapshot)');
    return new SnapshotFields(v as Record<string, unknown>, path);
  }

  /** The full path of field `key`. */
  at(key: string | number): string {
    if (typeof key === 'number') return `${this.path}[${key}]`;
    return this.path === '' ? key : `${this.path}.${key}`;
  }

  /** Refuses field `key` with `why`. */
  refuse(key: string, why: string, code: SnapshotErrorCode = 'ERR_SNAPSHOT_FIELD'): never {
    throw new SnapshotError(code, why, this.at(key));
  }

  private get(key: string): unknown {
    if (!Object.prototype.hasOwnProperty.call(this.o, key) || this.o[key] === undefined) this.refuse(key, 'missing');
    return this.o[key];
  }

  /** An integer in [min, max]. */
  int(key: string, min: number, max: number): number {
    const v = this.get(key);
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.refuse(key, `must be an integer, not ${typeName(v)} ${String(v)}`);
    if (v < min || v > max) this.refuse(key, `${v} is out of range (${min} to ${max})`);
    return v;
  }

  /** A finite number in [min, max]. */
  number(key: string, min: number, max: number): number {
    const v = this.get(key);
    if (typeof v !== 'number' || !Number.isFinite(v)) this.refuse(key, `must be a number, not ${typeName(v)} ${String(v)}`);
    if (v < min || v > max) this.refuse(key, `${v} is out of range (${min} to ${max})`);
    return v;
  }

  bool(key: string): boolean {
    const v = this.get(key);
    if (typeof v !== 'boolean') this.refuse(key, `must be true or false, not ${typeName(v)}`);
    return v;
  }

  /** A string, one of `allowed` when given. */
  string(key: string, allowed?: readonly string[]): string {
    const v = this.get(key);
    if (typeof v !== 'string') this.refuse(key, `must be a string, not ${typeName(v)}`);
    if (allowed !== undefined && !allowed.includes(v)) this.refuse(key, `${JSON.stringify(v)} is none of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`);
    return v;
  }

  /** A 64-bit mask written as lower-case hex, "0x..." (JSON numbers are exact to 2^53 only). */
  mask(key: string): bigint {
    const v = this.get(key);
    if (typeof v !== 'string' || !HEX64.test(v)) this.refuse(key, `must be a 64-bit mask as "0x" and lower-case hex, not ${JSON.stringify(v)}`);
    return BigInt(v);
  }

  /** Bytes written as base64, at most `max` of them. */
  bytes(key: string, max: number): Uint8Array {
    const v = this.get(key);
    if (typeof v !== 'string' || !BASE64.test(v)) this.refuse(key, 'must be base64 text');
    const b = Uint8Array.from(Buffer.from(v, 'base64'));
    if (b.length > max) this.refuse(key, `${b.length} bytes, more than ${max}`);
    return b;
  }

  /** An array of `minLen` to `maxLen` integers, each in [min, max]. */
  ints(key: string, min: number, max: number, minLen: number, maxLen: number): number[] {
    return readInts(this.get(key), this.at(key), min, max, minLen, maxLen);
  }

  /** A nested object. */
  obj(key: string): SnapshotFields {
    return SnapshotFields.of(this.get(key), this.at(key));
  }

  /** An array of at least `min` and at most `max` elements. */
  list(key: string, min: number, max: number): unknown[] {
    const v = this.get(key);
    if (!Array.isArray(v)) this.refuse(key, `must be an array, not ${typeName(v)}`);
    if (v.length < min || v.length > max) this.refuse(key, `has ${v.length} entries, not ${min === max ? min : `${min} to ${max}`}`);
    return v;
  }

  /** Field `key` read by `read`, or null when it is null. */
  nullable<T>(key: string, read: (key: string) => T): T | null {
    return this.get(key) === null ? null : read(key);
  }

  /** Field `key` as it is, unchecked (a part another reader checks). */
  value(key: string): unknown {
    return this.get(key);
  }

  /** Whether field `key` is there (for optional fields). */
  has(key: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.o, key) && this.o[key] !== undefined;
  }
}

/** `v` as an array of `minLen` to `maxLen` integers in [min, max], at `path`. */
export function readInts(v: unknown, path: string, min: number, max: number, minLen: number, maxLen: number): number[] {
  if (!Array.isArray(v)) throw new SnapshotError('ERR_SNAPSHOT_FIELD', `must be an array, not ${typeName(v)}`, path);
  if (v.length < minLen || v.length > maxLen) throw new SnapshotError('ERR_SNAPSHOT_FIELD', `has ${v.length} entries, not ${minLen === maxLen ? minLen : `${minLen} to ${maxLen}`}`, path);
  v.forEach((n: unknown, i) => {
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      throw new SnapshotError('ERR_SNAPSHOT_FIELD', `must be an integer from ${min} to ${max}, not ${JSON.stringify(n)}`, `${path}[${i}]`);
    }
  });
  return v as number[];
}

/** A 64-bit mask as a snapshot writes it (see SnapshotFields.mask). */
export function maskText(m: bigint): string {
  return `0x${m.toString(16)}`;
}

/** Bytes as a snapshot writes them (see SnapshotFields.bytes). */
export function bytesText(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

/** A snapshot given as JSON text parsed, or given parsed: as it is. */
export function parsedSnapshot(input: unknown): unknown {
  if (typeof input !== 'string') return input;
  try {
    return JSON.parse(input) as unknown;
  } catch (e) {
    throw new SnapshotError('ERR_SNAPSHOT_JSON', `not JSON (${input.length} characters): ${(e as Error).message}`);
  }
}

/** Checks a snapshot's `format` and `version`: this build reads versions 1 to `version` of `format`. */
export function checkHeader(f: SnapshotFields, format: string, version: number): number {
  const name = f.string('format');
  if (name !== format) f.refuse('format', `${JSON.stringify(name)} is not ${JSON.stringify(format)}`, 'ERR_SNAPSHOT_FORMAT');
  const v = f.int('version', 1, Number.MAX_SAFE_INTEGER);
  if (v > version) f.refuse('version', `version ${v} is newer than this build reads (${version})`, 'ERR_SNAPSHOT_VERSION');
  return v;
}
