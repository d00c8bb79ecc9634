// One handler per front-end request (vhost-user.rst "Front-end message
// types"), in a table by request. Each checks its payload and fds, then acts
// on the session; a handler throws VhostUserError (or QueueConfigError, from
// the device) to refuse its request.
import { native, type FdKind } from '../../host/binding.js';
import { errnoName } from '../../host/errors.js';
import { bit, hasFeature } from '../../virtio/constants.js';
import {
  configPayload,
  ProtocolFeature,
  Req,
  reqName,
  statePayload,
  u64Payload,
  VHOST_USER_CONFIG_HDR_SIZE,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_MAX_CONFIG_SIZE,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  VhostUserError,
  type Message,
} from './protocol.js';
import { MAX_MEM_SLOTS, type MappedTable } from './memory.js';
import type { Ring, RingFd } from './rings.js';
import type { Session } from './session.js';

/** Protocol features the back-end speaks (GET_PROTOCOL_FEATURES). */
export const PROTOCOL_FEATURES = [
  ProtocolFeature.MQ,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.BACKEND_REQ,
  ProtocolFeature.CONFIG,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.STATUS,
].reduce(
  (m, b) => m | bit(b),
  0n,
);

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

  /** Refuses the request unless the protocol feature it belongs to was agreed. */
  agreed(s: Session, feature: number, name: string): this {
    if (!s.has(feature)) throw new VhostUserError(`${this.name} without protocol feature ${name} agreed`);
    return this;
  }

  need(bytes: number): this {
    if (this.dv.byteLength < bytes) throw new VhostUserError(`${this.name}: payload of ${this.dv.byteLength} bytes, needs ${bytes}`);
    return this;
  }

  noFds(): this {
    if (this.m.fds.length > 0) throw new VhostUserError(`${this.name} takes no fds, got ${this.m.fds.length}`);
    return this;
  }

  /** The one fd the request brings, checked to be of one of `kinds` and made non-blocking (still the message's). */
  oneFd(...kinds: FdKind[]): number {
    if (this.m.fds.length !== 1) throw new VhostUserError(`${this.name}: expected one fd, got ${this.m.fds.length}`);
    const fd = this.m.fds[0]!;
    const info = native().fdInfo(fd);
    const is = typeof info === 'number' ? `an fd fstat refuses (${errnoName(info)})` : `a ${info.kind}`;
    if (typeof info === 'number' || !kinds.includes(info.kind)) throw new VhostUserError(`${this.name}: the fd is ${is}, not ${kinds.map((k) => (k === 'eventfd' ? 'an' : 'a') + ' ' + k).join(' or ')}`);
    const rc = native().setNonBlocking(fd);
    if (rc < 0) throw new VhostUserError(`${this.name}: cannot make the fd non-blocking: ${errnoName(rc)}`);
    return fd;
  }

  /** The request keeps its fds from now on: the connection does not close them. */
  takeFds(): void {
    this.m.fds.fill(-1);
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

// Every virtqueue the device has: two per pair and the control queue. UML's
// virtio_uml refuses to set up more than this; QEMU checks its pairs against it.
const getQueueNum: Handler = (s, r) => {
  r.noFds();
  return u64Payload(BigInt(s.device.queues.length));
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

// A new table replaces the old: stop, use the new, start again, and only
// then unmap what it replaced (and the new one does not share). A table the
// rings cannot start in is refused: the old one is put back and started
// again, and what only the new one mapped is unmapped.
function useTable(s: Session, next: MappedTable): void {
  const wasRunning = s.device.running;
  s.rings.stop();
  const old = s.memory.swap(next);
  try {
    if (wasRunning) s.maybeStart();
    if (wasRunning && !s.device.running) throw new VhostUserError("the device's rings would be in no memory region");
  } catch (err) {
    s.rings.stop();
    s.memory.release(s.memory.swap(old), false, old);
    restart(s, 'the memory table in use before');
    throw err;
  }
  s.memory.release(old, true, next);
}

const setMemTable: Handler = (s, r) => {
  useTable(s, s.memory.map(r.view, r.fds));
  r.takeFds();
  return null;
};

// CONFIGURE_MEM_SLOTS: regions one at a time (QEMU then sends no SET_MEM_TABLE).
const getMaxMemSlots: Handler = (s, r) => {
  r.agreed(s, ProtocolFeature.CONFIGURE_MEM_SLOTS, 'CONFIGURE_MEM_SLOTS').noFds();
  return u64Payload(BigInt(MAX_MEM_SLOTS));
};

const addMemReg: Handler = (s, r) => {
  r.agreed(s, ProtocolFeature.CONFIGURE_MEM_SLOTS, 'CONFIGURE_MEM_SLOTS');
  const next = s.memory.mapAdded(r.view, r.fds);
  if (next === null) return null; // a region in use again (QEMU 7.2: once per queue pair): counted; its fd goes with the message
  useTable(s, next);
  r.takeFds();
  return null;
};

// A region a running ring is in cannot go (the rings would not start again).
// QEMU 7.2 sends the region's fd along (vhost-user.rst allows it, and says
// not to): it is closed with the message.
const remMemReg: Handler = (s, r) => {
  r.agreed(s, ProtocolFeature.CONFIGURE_MEM_SLOTS, 'CONFIGURE_MEM_SLOTS');
  const next = s.memory.mapRemoved(r.view);
  if (next !== null) useTable(s, next);
  return null;
};

// After a refused request was undone: start again what ran before (a failure now is logged, not the request's).
function restart(s: Session, what: string): void {
  try {
    s.maybeStart();
  } catch (err) {
    s.log(`rings not started again with ${what}: ${(err as Error).message}`);
  }
}

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

// SET_VRING_KICK, _CALL, _ERR: a u64 naming the ring (bits 0-7) and whether
// an fd comes. vhost-user.rst says an eventfd; Linux's UML (virtio_uml) hands
// over one end of a pipe or socket pair and reads and writes 8-byte counts
// on it, so those are taken too (regular files, devices, directories and
// memory fds are refused). Made non-blocking: a call that would block is an
// interrupt already pending; a kick fd at end of file stops its ring. The fd
// it replaces is closed once the request holds; a kick that cannot start the
// rings is undone.
const setVringFd: Handler = (s, r) => {
  const v = Number(r.need(8).u64(0) & 0xffffn);
  const ring = s.rings.at(v & VHOST_USER_VRING_IDX_MASK, r.name);
  const noFd = (v & VHOST_USER_VRING_NOFD_MASK) !== 0;
  if (noFd && r.fds.length !== 0) throw new VhostUserError(`${r.name}: no fd announced, got ${r.fds.length}`);
  const fd = noFd ? -1 : r.oneFd('eventfd', 'pipe', 'socket');
  const slot = FD_SLOT[r.m.request]!;
  const enabled = ring.enabled;
  const old = s.rings.replaceFd(ring, slot, fd);
  try {
    if (r.m.request === Req.SET_VRING_KICK) {
      // Without protocol features a ring is enabled as it starts (vhost-user.rst, "Starting and stopping rings").
      if (!s.protocolAcked) ring.enabled = true;
      s.maybeStart();
    }
  } catch (err) {
    s.rings.replaceFd(ring, slot, old);
    ring.enabled = enabled;
    throw err;
  }
  if (old >= 0) native().close(old);
  r.takeFds();
  return null;
};

// Disabling a ring of the first pair stops the device (UML's virtio_uml
// disables every ring before it frees them); other rings follow maybeStart.
const setVringEnable: Handler = (s, r) => {
  const ring = r.noFds().need(8).ring(s);
  const was = ring.enabled;
  ring.enabled = r.u32(4) === 1;
  if (!ring.enabled && r.u32(0) < 2 && s.device.running) s.rings.stop();
  try {
    s.maybeStart();
  } catch (err) {
    ring.enabled = was;
    throw err;
  }
  return null;
};

// The channel for the back-end's own requests (config changes).
const setBackendReqFd: Handler = (s, r) => {
  r.agreed(s, ProtocolFeature.BACKEND_REQ, 'BACKEND_REQ');
  s.channel.set(r.oneFd('socket'));
  r.takeFds();
  return null;
};

// vhost-user.rst GET_CONFIG: the reply is as large as the request; a zero-length payload says no.
const getConfig: Handler = (s, r) => {
  r.noFds().need(VHOST_USER_CONFIG_HDR_SIZE);
  const offset = r.u32(0);
  const size = r.u32(4);
  const why = !s.has(ProtocolFeature.CONFIG)
    ? 'without protocol feature CONFIG agreed'
    : offset + size > VHOST_USER_MAX_CONFIG_SIZE
      ? `${size} bytes at ${offset} (the config space is at most ${VHOST_USER_MAX_CONFIG_SIZE} bytes)`
      : null;
  if (why !== null) {
    s.log(`refused ${r.name}: ${why}`);
    return new Uint8Array(0);
  }
  // Past the device's fields the space reads as zeros (as an mmio read does).
  const bytes = new Uint8Array(size);
  bytes.set(s.device.configSpace.subarray(offset, offset + size));
  return configPayload(offset, bytes, r.u32(8));
};

// A refused write changes nothing and keeps the connection: the front-end is told with REPLY_ACK.
const setConfig: Handler = (s, r) => {
  r.agreed(s, ProtocolFeature.CONFIG, 'CONFIG').noFds().need(VHOST_USER_CONFIG_HDR_SIZE);
  const offset = r.u32(0);
  const size = r.u32(4);
  r.need(VHOST_USER_CONFIG_HDR_SIZE + size);
  const data = r.m.payload.subarray(VHOST_USER_CONFIG_HDR_SIZE, VHOST_USER_CONFIG_HDR_SIZE + size);
  const why = s.device.writeConfig(offset, data);
  if (why !== null) throw new VhostUserError(`${size} bytes at ${offset}: ${why}`, { keepConnection: true });
  return null;
};

const setStatus: Handler = (s, r) => {
  const v = r.agreed(s, ProtocolFeature.STATUS, 'STATUS').noFds().need(8).u64(0);
  if (v > 0xffn) throw new VhostUserError(`${r.name}: status 0x${v.toString(16)} is more than a byte`);
  s.setStatus(Number(v));
  return null;
};

const getStatus: Handler = (s, r) => {
  r.agreed(s, ProtocolFeature.STATUS, 'STATUS').noFds();
  return u64Payload(BigInt(s.status));
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
  [Req.GET_MAX_MEM_SLOTS, getMaxMemSlots],
  [Req.ADD_MEM_REG, addMemReg],
  [Req.REM_MEM_REG, remMemReg],
  [Req.SET_VRING_NUM, setVringNum],
  [Req.SET_VRING_ADDR, setVringAddr],
  [Req.SET_VRING_BASE, setVringBase],
  [Req.GET_VRING_BASE, getVringBase],
  [Req.SET_VRING_KICK, setVringFd],
  [Req.SET_VRING_CALL, setVringFd],
  [Req.SET_VRING_ERR, setVringFd],
  [Req.SET_VRING_ENABLE, setVringEnable],
  [Req.SET_BACKEND_REQ_FD, setBackendReqFd],
  [Req.GET_CONFIG, getConfig],
  [Req.SET_CONFIG, setConfig],
  [Req.SET_STATUS, setStatus],
  [Req.GET_STATUS, getStatus],
  [Req.SET_LOG_BASE, noLogging],
  [Req.SET_LOG_FD, noLogging],
]);

/** Answers one request on the session: a reply payload, or null; throws VhostUserError to refuse it. */
export function answer(s: Session, m: Message): Uint8Array | null {
  const handler = HANDLERS.get(m.request);
  if (handler === undefined) throw new VhostUserError(`unknown ${reqName(m.request)}`);
  return handler(s, new Request(m));
}
