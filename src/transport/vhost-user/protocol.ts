// vhost-user wire format (QEMU docs/interop/vhost-user.rst): a 12-byte
// header (request, flags, size), then the payload; fds ride along as
// SCM_RIGHTS. Little-endian throughout.
import { HostError, NEG_EAGAIN } from '../../host/errors.js';

export const VHOST_USER_HDR_SIZE = 12;
export const VHOST_USER_VERSION = 0x1;
export const VHOST_USER_VERSION_MASK = 0x3;
export const VHOST_USER_REPLY_MASK = 0x4;
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** Largest payload accepted (the biggest message QEMU's net frontend sends is SET_MEM_TABLE). */
export const VHOST_USER_MAX_PAYLOAD = 4096;
/** Regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS). */
export const VHOST_MEMORY_MAX_NREGIONS = 8;

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

const REQ_NAMES = new Map<number, string>(Object.entries(Req).map(([k, v]) => [v, k]));
export function reqName(r: number): string {
  return REQ_NAMES.get(r) ?? `request ${r}`;
}

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  /** The back-end request channel (called SLAVE_REQ in older texts). */
  BACKEND_REQ: 5,
  CONFIG: 9,
  INFLIGHT_SHMFD: 12,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Requests the back-end sends on the back-end request channel (vhost-user.rst "Back-end message types"). */
export const BackendReq = {
  CONFIG_CHANGE_MSG: 2,
} as const;

/** GET_CONFIG and SET_CONFIG: offset, size and flags (u32 each) before the config bytes. */
export const VHOST_USER_CONFIG_HDR_SIZE = 12;
/** The largest config space a front-end asks for (VHOST_USER_MAX_CONFIG_SIZE). */
export const VHOST_USER_MAX_CONFIG_SIZE = 256;

/** The virtio feature bit that says protocol features are spoken. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** SET_VRING_KICK/CALL/ERR payload: bits 0-7 the ring, this bit: no fd comes. */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
export const VHOST_USER_VRING_NOFD_MASK = 0x100;

export interface Message {
  request: number;
  flags: number;
  payload: Uint8Array;
  /**
   * The fds that came with it. A handler that keeps one takes it (its slot
   * becomes -1); the connection closes whatever is left, once, whether the
   * request was answered or refused.
   */
  fds: number[];
}

/**
 * Why a message is refused (code ERR_VHOST_USER), or what went wrong with a
 * ring (ERR_VHOST_USER_RING_BROKEN, tier 2: the guest broke it;
 * ERR_VHOST_USER_RING_FD, tier 3: a kick or call fd failed). A refusal
 * without REPLY_ACK ends the connection (the front-end would go on believing
 * the request worked) unless `keepConnection` says the refusal leaves nothing
 * half done, as a write to a read-only config field does.
 */
export class VhostUserError extends Error {
  override readonly name = 'VhostUserError';
  readonly code: string;
  readonly keepConnection: boolean;

  constructor(message: string, options: { keepConnection?: boolean; code?: string } = {}) {
    super(message);
    this.keepConnection = options.keepConnection === true;
    this.code = options.code ?? 'ERR_VHOST_USER';
  }
}

export function encode(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(VHOST_USER_HDR_SIZE + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, flags, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, VHOST_USER_HDR_SIZE);
  return out;
}

export function u64Payload(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

export function statePayload(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, index, true);
  dv.setUint32(4, num, true);
  return b;
}

/** A GET_CONFIG or SET_CONFIG payload: offset, size, flags, then the bytes (size of them). */
export function configPayload(offset: number, bytes: Uint8Array, flags = 0): Uint8Array {
  const b = new Uint8Array(VHOST_USER_CONFIG_HDR_SIZE + bytes.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, offset, true);
  dv.setUint32(4, bytes.length, true);
  dv.setUint32(8, flags, true);
  b.set(bytes, VHOST_USER_CONFIG_HDR_SIZE);
  return b;
}

export interface MemRegion {
  guestPhysAddr: bigint;
  memorySize: bigint;
  userspaceAddr: bigint;
  mmapOffset: bigint;
}

/** An ADD_MEM_REG or REM_MEM_REG payload: a u64 of padding, then the region, as one region of a table lies. */
export function memRegionPayload(r: MemRegion): Uint8Array {
  const b = memTablePayload([r]);
  b.fill(0, 0, 8);
  return b;
}

export function memTablePayload(regions: MemRegion[]): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, regions.length, true);
  regions.forEach((r, i) => {
    dv.setBigUint64(8 + i * 32, r.guestPhysAddr, true);
    dv.setBigUint64(16 + i * 32, r.memorySize, true);
    dv.setBigUint64(24 + i * 32, r.userspaceAddr, true);
    dv.setBigUint64(32 + i * 32, r.mmapOffset, true);
  });
  return b;
}

export interface VringAddr {
  index: number;
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

export function vringAddrPayload(a: VringAddr): Uint8Array {
  const b = new Uint8Array(40);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, a.index, true);
  dv.setUint32(4, a.flags, true);
  dv.setBigUint64(8, a.desc, true);
  dv.setBigUint64(16, a.used, true);
  dv.setBigUint64(24, a.avail, true);
  dv.setBigUint64(32, a.log, true);
  return b;
}

/** Reads and checks a message header: version 1, payload within bounds; throws VhostUserError. */
export function checkHeader(dv: DataView): { request: number; flags: number; size: number } {
  const request = dv.getUint32(0, true);
  const flags = dv.getUint32(4, true);
  const size = dv.getUint32(8, true);
  if ((flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
    throw new VhostUserError(`${reqName(request)}: version ${flags & VHOST_USER_VERSION_MASK}, expected ${VHOST_USER_VERSION}`);
  }
  if (size > VHOST_USER_MAX_PAYLOAD) throw new VhostUserError(`${reqName(request)}: payload of ${size} bytes, more than ${VHOST_USER_MAX_PAYLOAD}`);
  return { request, flags, size };
}

/**
 * Reads one message at a time from a stream socket: exactly the 12-byte
 * header, then exactly its payload. A stream socket merges messages into one
 * recvmsg and hands over the fds of all of them, so only reads bounded by
 * the message tell whose fds they are (as QEMU's libvhost-user reads).
 */
export class ExactReader {
  private readonly header = new Uint8Array(VHOST_USER_HDR_SIZE);
  private readonly body = new Uint8Array(VHOST_USER_MAX_PAYLOAD);
  private have = 0;
  private size = -1; // -1 while reading the header
  private fds: number[] = [];
  private readonly fdBuf = new Int32Array(1 + 16);

  /**
   * Reads what is there; calls onMessage for each whole message. Returns
   * 'again' (EAGAIN), 'closed', or an error sentence. Throws VhostUserError
   * for a bad header.
   */
  read(recv: (into: Uint8Array, fds: Int32Array) => number, onMessage: (m: Message) => void, stop: () => boolean = () => false): 'again' | 'closed' | string {
    for (;;) {
      if (stop()) return 'again';
      const target = this.size < 0 ? this.header.subarray(this.have) : this.body.subarray(this.have, this.size);
      if (target.length > 0) {
        const got = recv(target, this.fdBuf);
        if (got === NEG_EAGAIN) return 'again';
        if (got === 0) return 'closed';
        if (got < 0) return HostError.fromErrno(got, 'recvmsg', 'receive').message;
        const count = this.fdBuf[0]!;
        if (count < 0) return 'a message came with more fds than any request takes';
        for (let i = 0; i < count; i++) this.fds.push(this.fdBuf[1 + i]!);
        this.have += got;
        if (this.size < 0 && this.have < VHOST_USER_HDR_SIZE) continue;
        if (this.size >= 0 && this.have < this.size) continue;
      }
      if (this.size < 0) {
        this.size = checkHeader(new DataView(this.header.buffer)).size;
        this.have = 0;
        if (this.size > 0) continue;
      }
      const dv = new DataView(this.header.buffer);
      const m: Message = { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), payload: this.body.slice(0, this.size), fds: this.fds };
      this.fds = [];
      this.size = -1;
      this.have = 0;
      onMessage(m);
    }
  }

  /** fds received for a message not yet whole (to close on disconnect). */
  takeFds(): number[] {
    const f = this.fds;
    this.fds = [];
    return f;
  }
}

/** Splits a byte stream into messages that carry no fds (replies, on the front-end's side). */
export class MessageReader {
  private buf = new Uint8Array(0);
  private pendingFds: number[] = [];

  push(bytes: Uint8Array, fds: number[]): void {
    const next = new Uint8Array(this.buf.length + bytes.length);
    next.set(this.buf);
    next.set(bytes, this.buf.length);
    this.buf = next;
    this.pendingFds.push(...fds);
  }

  /** The next whole message, null when more bytes are needed; throws VhostUserError for a bad header. */
  next(): Message | null {
    if (this.buf.length < VHOST_USER_HDR_SIZE) return null;
    const { request, flags, size } = checkHeader(new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength));
    if (this.buf.length < VHOST_USER_HDR_SIZE + size) return null;
    const payload = this.buf.slice(VHOST_USER_HDR_SIZE, VHOST_USER_HDR_SIZE + size);
    this.buf = this.buf.slice(VHOST_USER_HDR_SIZE + size);
    const fds = this.pendingFds;
    this.pendingFds = [];
    return { request, flags, payload, fds };
  }

  /** fds received but not yet given to a message (to close on disconnect). */
  takeFds(): number[] {
    const f = this.pendingFds;
    this.pendingFds = [];
    return f;
  }
}
