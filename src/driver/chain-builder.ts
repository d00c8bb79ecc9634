// What both drivers share: the chain being built, and the order in which
// buffers were made available (for VIRTIO_F_IN_ORDER batches).

/** Segments of the chain being built, preallocated. */
export class ChainBuilder {
  readonly addr: Float64Array;
  readonly len: Uint32Array;
  readonly writable: Uint8Array;
  count = 0;

  constructor(capacity: number) {
    this.addr = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
    this.writable = new Uint8Array(capacity);
  }

  begin(): void {
    this.count = 0;
  }

  add(addr: number, len: number, writable: boolean): boolean {
    const i = this.count;
    if (i >= this.addr.length) return false;
    this.addr[i] = addr;
    this.len[i] = len;
    this.writable[i] = writable ? 1 : 0;
    this.count = i + 1;
    return true;
  }
}

/** Buffer ids in the order they were made available. */
export class AvailOrder {
  private readonly ids: Uint16Array;
  private head = 0;
  length = 0;

  constructor(size: number) {
    this.ids = new Uint16Array(size);
  }

  clear(): void {
    this.head = 0;
    this.length = 0;
  }

  push(id: number): void {
    this.ids[(this.head + this.length) % this.ids.length] = id;
    this.length++;
  }

  /** The k-th oldest id. */
  at(k: number): number {
    return this.ids[(this.head + k) % this.ids.length] as number;
  }

  /** 1 + the position of id (how many buffers an in-order used entry for id completes), or 0. */
  countThrough(id: number): number {
    for (let k = 0; k < this.length; k++) if (this.at(k) === id) return k + 1;
    return 0;
  }

  /** Removes id: O(1) when completions come in order, O(n) otherwise. */
  remove(id: number): void {
    const n = this.ids.length;
    if (this.length > 0 && this.ids[this.head] === id) {
      this.head = (this.head + 1) % n;
      this.length--;
      return;
    }
    for (let k = 1; k < this.length; k++) {
      if (this.at(k) !== id) continue;
      for (let j = k; j > 0; j--) this.ids[(this.head + j) % n] = this.at(j - 1);
      this.head = (this.head + 1) % n;
      this.length--;
      return;
    }
  }
}
