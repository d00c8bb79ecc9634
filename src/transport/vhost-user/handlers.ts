// One handler per front-end request (vhost-user.rst "Front-end message
// types"), in a table by request. Each checks its payload and fds, then acts
// on the session; a handler throws VhostUserError (or QueueConfigError, from
// the device) to refuse its request.
import { bit, hasFeature } from '../../virtio/constants.js';
import {
  ProtocolFeature,
  Req,
  reqName,
  statePayload,
  u64Payload,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  VhostUserError,
  type Message,
} from './protocol.js';
import type { Ring, RingFd } from './rings.js';
import type { Session } from './session.js';

/** Protocol features the back-end speaks (GET_PROTOCOL_FEATURES). */
export const PROTOCOL_FEATURES = bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK);

/** Largest ring the back-end takes (SET_VRING_NUM); the split ring's limit (VIRTIO 1.2 §2.7). */
const MAX_RING_SIZE = 32768;

/** One request's payload and fds, with the checks every handler makes. */
class Request {
  readonly name: string;
  private readonly dv: DataView;

  constructor(readonly m: Message) {
    this.name = reqName(m.request);
    this.dv = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
  }

  get view(): DataView {
    return this.dv;
  }

  get fds(): number[] {
    return this.m.fds;
  }

  need(bytes: number): this {
    if (this.dv.byteLength < bytes) throw new VhostUserError(`${this.name}: payload of ${this.dv.byteLength} bytes, needs ${bytes}`);
    return this;
  }

  noFds(): this {
    if (this.m.fds.length > 0) throw new VhostUserError(`${this.name} takes no fds, got ${this.m.fds.length}`);
    return this;
  }

  u32(at: number): number {
    return this.dv.getUint32(at, true);
  }

  u64(at: number): bigint {
    return this.dv.getBigUint64(at, true);
  }

  /** The ring a vhost_vring_state names (its first u32). */
  ring(s: Session): Ring {
    return s.rings.at(this.u32(0), this.name);
  }
}

/** A reply payload, or null when the request has no reply. */
type Handler = (s: Session, r: Request) => Uint8Array | null;

const getFeatures: Handler = (s, r) => {
  r.noFds();
  return u64Payload(s.device.deviceFeatures | bit(VHOST_USER_F_PROTOCOL_FEATURES));
};

const setFeatures: Handler = (s, r) => {
  const all = r.noFds().need(8).u64(0);
  const f = all & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
  if ((f & ~s.device.deviceFeatures) !== 0n) throw new VhostUserError(`features 0x${f.toString(16)} include some never offered`);
  s.acked = f;
  s.protocolAcked = hasFeature(all, VHOST_USER_F_PROTOCOL_FEATURES);
  return null;
};

const getProtocolFeatures: Handler = (_s, r) => {
  r.noFds();
  return u64Payload(PROTOCOL_FEATURES);
};

const setProtocolFeatures: Handler = (s, r) => {
  s.protocolFeatures = r.noFds().need(8).u64(0) & PROTOCOL_FEATURES;
  return null;
};

const getQueueNum: Handler = (s, r) => {
  r.noFds();
  return u64Payload(BigInt(s.device.pairs * 2));
};

const setOwner: Handler = (_s, r) => {
  r.noFds();
  return null;
};

const resetOwner: Handler = (s, r) => {
  r.noFds();
  s.reset();
  return null;
};

// A new table replaces the old: stop, unmap what it replaces, go on with the new.
const setMemTable: Handler = (s, r) => {
  const next = s.memory.map(r.view, r.fds);
  const wasRunning = s.device.running;
  s.rings.stop();
  s.memory.replace(next);
  if (wasRunning) s.maybeStart();
  return null;
};

const setVringNum: Handler = (s, r) => {
  const ring = r.noFds().need(8).ring(s);
  const num = r.u32(4);
  if (num === 0 || num > MAX_RING_SIZE) throw new VhostUserError(`ring size ${num} out of range (1 to ${MAX_RING_SIZE})`);
  ring.num = num;
  return null;
};

// vhost_vring_addr: index, flags, then the descriptor, used and available ring addresses.
const setVringAddr: Handler = (s, r) => {
  const ring = r.noFds().need(40).ring(s);
  ring.desc = r.u64(8);
  ring.used = r.u64(16);
  ring.avail = r.u64(24);
  ring.hasAddr = true;
  return null;
};

const setVringBase: Handler = (s, r) => {
  r.noFds().need(8).ring(s).base = r.u32(4);
  return null;
};

// Stops the ring: the device stops serving, and this ring's position goes back.
const getVringBase: Handler = (s, r) => {
  const ring = r.noFds().need(8).ring(s);
  s.rings.stop();
  s.rings.setFd(ring, 'kickFd', -1);
  ring.started = false;
  return statePayload(r.u32(0), ring.base);
};

const FD_SLOT: Partial<Record<number, RingFd>> = { [Req.SET_VRING_KICK]: 'kickFd', [Req.SET_VRING_CALL]: 'callFd', [Req.SET_VRING_ERR]: 'errFd' };

// SET_VRING_KICK, _CALL, _ERR: a u64 naming the ring (bits 0-7) and whether an fd comes.
const setVringFd: Handler = (s, r) => {
  const v = Number(r.need(8).u64(0) & 0xffffn);
  const ring = s.rings.at(v & VHOST_USER_VRING_IDX_MASK, r.name);
  const noFd = (v & VHOST_USER_VRING_NOFD_MASK) !== 0;
  if (!noFd && r.fds.length !== 1) throw new VhostUserError(`${r.name}: expected one fd, got ${r.fds.length}`);
  if (noFd && r.fds.length !== 0) throw new VhostUserError(`${r.name}: no fd announced, got ${r.fds.length}`);
  s.rings.setFd(ring, FD_SLOT[r.m.request]!, noFd ? -1 : r.fds[0]!);
  if (r.m.request === Req.SET_VRING_KICK) {
    // Without protocol features a ring is enabled as it starts (vhost-user.rst, "Starting and stopping rings").
    if (!s.protocolAcked) ring.enabled = true;
    s.maybeStart();
  }
  return null;
};

const setVringEnable: Handler = (s, r) => {
  r.noFds().need(8).ring(s).enabled = r.u32(4) === 1;
  s.maybeStart();
  return null;
};

const noLogging: Handler = () => {
  throw new VhostUserError('dirty logging (live migration) is not supported');
};

const HANDLERS = new Map<number, Handler>([
  [Req.GET_FEATURES, getFeatures],
  [Req.SET_FEATURES, setFeatures],
  [Req.GET_PROTOCOL_FEATURES, getProtocolFeatures],
  [Req.SET_PROTOCOL_FEATURES, setProtocolFeatures],
  [Req.GET_QUEUE_NUM, getQueueNum],
  [Req.SET_OWNER, setOwner],
  [Req.RESET_OWNER, resetOwner],
  [Req.SET_MEM_TABLE, setMemTable],
  [Req.SET_VRING_NUM, setVringNum],
  [Req.SET_VRING_ADDR, setVringAddr],
  [Req.SET_VRING_BASE, setVringBase],
  [Req.GET_VRING_BASE, getVringBase],
  [Req.SET_VRING_KICK, setVringFd],
  [Req.SET_VRING_CALL, setVringFd],
  [Req.SET_VRING_ERR, setVringFd],
  [Req.SET_VRING_ENABLE, setVringEnable],
  [Req.SET_LOG_BASE, noLogging],
  [Req.SET_LOG_FD, noLogging],
]);

/** Answers one request on the session: a reply payload, or null; throws VhostUserError to refuse it. */
export function answer(s: Session, m: Message): Uint8Array | null {
  const handler = HANDLERS.get(m.request);
  if (handler === undefined) throw new VhostUserError(`unknown ${reqName(m.request)}`);
  return handler(s, new Request(m));
}
