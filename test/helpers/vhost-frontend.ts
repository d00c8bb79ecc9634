// A vhost-user front-end for tests, standing in for QEMU (or, with CONFIG,
// BACKEND_REQ and STATUS agreed, for a whole-device front-end such as UML's
// virtio_uml): guest RAM in a memfd, rings laid out by NetDriver, and
// everything else by message. It is the device handle NetDriver drives, so
// the same driver runs over it.
import type { VirtioDeviceHandle } from '../../src/driver/net-driver.js';
import { native, type NativePoller } from '../../src/host/binding.js';
import { errnoName } from '../../src/host/errors.js';
import {
  configPayload,
  encode,
  memTablePayload,
  MessageReader,
  ProtocolFeature,
  Req,
  statePayload,
  u64Payload,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_CONFIG_HDR_SIZE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  vringAddrPayload,
  type Message,
} from '../../src/transport/vhost-user/protocol.js';
import { VIRTIO_F_RING_PACKED } from '../../src/virtio/constants.js';
import { GuestMemory } from '../../src/virtio/guest-memory.js';
import type { QueueAddresses } from '../../src/virtio/queue.js';

const n = native();
/** Where the front-end pretends guest RAM is mapped in its own address space. */
export const VA_BASE = 0x7f00_0000_0000n;

export class TestFrontend implements VirtioDeviceHandle {
  readonly mem: GuestMemory;
  deviceFeatures = 0n;
  status = 0;
  onInterrupt: (queue: number) => void = () => {};
  private readonly fd: number;
  private readonly poller: NativePoller;
  private readonly reader = new MessageReader();
  private readonly replies: Message[] = [];
  private waiters: (() => void)[] = [];
  private readonly memFd: number;
  private readonly ab: ArrayBuffer;
  private readonly kickFds: number[] = [];
  private readonly callFds: number[] = [];
  private readonly callPollers: NativePoller[] = [];
  private readonly config = new Uint8Array(24);
  closed = false;
  /** Messages the back-end sent on its back-end channel. */
  readonly backendMessages: Message[] = [];
  /** What the channel answers a request that asks for a reply (0: yes). */
  backendReply = 0n;
  private backendFd = -1;
  private backendPoller: NativePoller | null = null;

  private constructor(fd: number, memSize: number) {
    this.fd = fd;
    this.memFd = n.memfdCreate('guest-ram', memSize);
    const ab = n.mmapShared(this.memFd, memSize, 0);
    if (typeof ab === 'number') throw new Error(`mmap failed: ${ab}`);
    this.ab = ab;
    this.mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(ab) }]);
    this.config.set([2, 0, 0, 0, 0x77, 1], 0); // QEMU owns the config space: a MAC
    const buf = new Uint8Array(4096);
    const fds = new Int32Array(9);
    this.poller = new n.Poller(fd, () => {
      for (;;) {
        const got = n.recvWithFds(fd, buf, fds);
        if (got <= 0) {
          if (got === 0) this.closed = true;
          break;
        }
        this.reader.push(buf.subarray(0, got), []);
        for (let m = this.reader.next(); m !== null; m = this.reader.next()) this.replies.push(m);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.poller.start(1);
  }

  /**
   * Connects and sets up as QEMU does: features, protocol features (REPLY_ACK
   * and MQ, and `extraProtocol`'s bits), owner, memory table.
   */
  static async connect(path: string, memSize = 64 << 20, protocol = true, extraProtocol = 0n): Promise<TestFrontend> {
    const fd = n.unixConnect(path);
    if (fd < 0) throw new Error(`connect ${path}: ${errnoName(fd)}`);
    return TestFrontend.setUp(fd, memSize, protocol, extraProtocol);
  }

  /**
   * Listens on `path` (as QEMU does with server=on), waits for the back-end
   * to connect, and sets up as connect() does.
   */
  static async listen(path: string, memSize = 64 << 20, ms = 5000): Promise<TestFrontend> {
    const lfd = n.unixListen(path);
    if (lfd < 0) throw new Error(`listen ${path}: ${errnoName(lfd)}`);
    try {
      const deadline = Date.now() + ms;
      let fd = n.unixAccept(lfd);
      while (fd < 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
        fd = n.unixAccept(lfd);
      }
      if (fd < 0) throw new Error('no back-end connected');
      return await TestFrontend.setUp(fd, memSize, true);
    } finally {
      n.close(lfd);
    }
  }

  private static async setUp(fd: number, memSize: number, protocol: boolean, extraProtocol = 0n): Promise<TestFrontend> {
    const f = new TestFrontend(fd, memSize);
    const features = (await f.request(Req.GET_FEATURES)).payload;
    f.deviceFeatures = new DataView(features.buffer, features.byteOffset, 8).getBigUint64(0, true) & ~(1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES));
    f.protocol = protocol;
    if (protocol) {
      await f.request(Req.GET_PROTOCOL_FEATURES);
      f.send(Req.SET_PROTOCOL_FEATURES, u64Payload((1n << BigInt(ProtocolFeature.REPLY_ACK)) | (1n << BigInt(ProtocolFeature.MQ)) | extraProtocol));
    }
    f.send(Req.SET_OWNER);
    f.send(Req.SET_MEM_TABLE, memTablePayload([{ guestPhysAddr: 0n, memorySize: BigInt(memSize), userspaceAddr: VA_BASE, mmapOffset: 0n }]), [f.memFd]);
    return f;
  }

  private protocol = true;

  send(request: number, payload?: Uint8Array, fds?: number[], flags = 0): void {
    const rc = n.sendWithFds(this.fd, encode(request, VHOST_USER_VERSION | flags, payload), fds === undefined ? undefined : Int32Array.from(fds));
    if (rc < 0) throw new Error(`send failed: ${errnoName(rc)}`);
  }

  /** Sends bytes as they are (to send what a front-end must not). */
  sendRaw(bytes: Uint8Array): void {
    n.sendWithFds(this.fd, bytes);
  }

  /** Sends and waits for the reply (requests with replies, or NEED_REPLY). */
  async request(request: number, payload?: Uint8Array, fds?: number[], flags = 0, ms = 2000): Promise<Message> {
    this.send(request, payload, fds, flags);
    const deadline = Date.now() + ms;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('the back-end closed the connection');
      if (Date.now() > deadline) throw new Error(`no reply to request ${request}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, 20);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
    return this.replies.shift()!;
  }

  /** A request with NEED_REPLY: the u64 status of the reply (0 ok). */
  async acked(request: number, payload?: Uint8Array, fds?: number[]): Promise<bigint> {
    const r = await this.request(request, payload, fds, VHOST_USER_NEED_REPLY_MASK);
    return new DataView(r.payload.buffer, r.payload.byteOffset, 8).getBigUint64(0, true);
  }

  /** GET_CONFIG: `size` bytes at `offset` of the back-end's config space (empty: the back-end said no). */
  async getConfig(offset = 0, size = 24): Promise<Uint8Array> {
    const r = await this.request(Req.GET_CONFIG, configPayload(offset, new Uint8Array(size)));
    return r.payload.slice(VHOST_USER_CONFIG_HDR_SIZE);
  }

  /** Reads the back-end's config space into the copy NetDriver reads (a whole-device front-end's view). */
  async loadConfig(): Promise<void> {
    this.config.set(await this.getConfig(0, this.config.length));
  }

  /** SET_CONFIG with NEED_REPLY: the back-end's answer (0 yes). */
  setConfig(offset: number, bytes: Uint8Array): Promise<bigint> {
    return this.acked(Req.SET_CONFIG, configPayload(offset, bytes));
  }

  /** SET_STATUS with NEED_REPLY: the back-end's answer (0 yes). */
  sendStatus(value: number): Promise<bigint> {
    return this.acked(Req.SET_STATUS, u64Payload(BigInt(value)));
  }

  /** GET_STATUS: the device's status byte. */
  async getStatus(): Promise<number> {
    const r = await this.request(Req.GET_STATUS);
    return Number(new DataView(r.payload.buffer, r.payload.byteOffset, 8).getBigUint64(0, true));
  }

  /** Hands the back-end its channel (SET_BACKEND_REQ_FD, NEED_REPLY) and reads what comes on it. */
  async openBackendChannel(): Promise<bigint> {
    const pair = n.socketPair();
    if (typeof pair === 'number') throw new Error(`socketpair: ${errnoName(pair)}`);
    const [mine, theirs] = pair;
    this.backendFd = mine;
    const reader = new MessageReader();
    const buf = new Uint8Array(4096);
    const fds = new Int32Array(9);
    this.backendPoller = new n.Poller(mine, () => {
      for (let got = n.recvWithFds(mine, buf, fds); got > 0; got = n.recvWithFds(mine, buf, fds)) {
        reader.push(buf.subarray(0, got), []);
        for (let m = reader.next(); m !== null; m = reader.next()) this.onBackendMessage(m);
      }
    });
    this.backendPoller.start(1);
    const status = await this.acked(Req.SET_BACKEND_REQ_FD, undefined, [theirs]);
    n.close(theirs);
    return status;
  }

  private onBackendMessage(m: Message): void {
    this.backendMessages.push(m);
    if ((m.flags & VHOST_USER_NEED_REPLY_MASK) === 0) return;
    n.sendWithFds(this.backendFd, encode(m.request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, u64Payload(this.backendReply)));
  }

  /** Closes the front-end's end of the back-end channel (a front-end that stops listening). */
  closeBackendChannel(): void {
    this.backendPoller?.close();
    this.backendPoller = null;
    if (this.backendFd >= 0) n.close(this.backendFd);
    this.backendFd = -1;
  }

  // VirtioDeviceHandle: what NetDriver calls.
  setStatus(value: number): void {
    this.status = value; // QEMU keeps the status; FEATURES_OK sticks for features it accepted
  }

  private negotiated = 0n;

  setDriverFeatures(features: bigint): void {
    this.negotiated = features;
    this.send(Req.SET_FEATURES, u64Payload(features | (this.protocol ? 1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES) : 0n)));
  }

  activateQueue(index: number, _mem: GuestMemory, a: QueueAddresses): void {
    this.send(Req.SET_VRING_NUM, statePayload(index, a.size));
    this.send(
      Req.SET_VRING_ADDR,
      vringAddrPayload({ index, flags: 0, desc: VA_BASE + BigInt(a.desc), used: VA_BASE + BigInt(a.device), avail: VA_BASE + BigInt(a.driver), log: 0n }),
    );
    // A packed ring starts with its wrap counter at 1: bit 15 of the base (as QEMU sends it).
    const packed = (this.negotiated >> BigInt(VIRTIO_F_RING_PACKED)) & 1n;
    this.send(Req.SET_VRING_BASE, statePayload(index, packed === 1n ? 0x8000 : 0));
    const kick = n.eventfdCreate();
    const call = n.eventfdCreate();
    this.kickFds[index] = kick;
    this.callFds[index] = call;
    const p = new n.Poller(call, () => {
      if (n.eventfdRead(call) > 0) this.onInterrupt(index);
    });
    p.start(1);
    this.callPollers.push(p);
    this.send(Req.SET_VRING_CALL, u64Payload(BigInt(index)), [call]);
    this.send(Req.SET_VRING_KICK, u64Payload(BigInt(index)), [kick]);
    if (this.protocol) this.send(Req.SET_VRING_ENABLE, statePayload(index, 1));
  }

  kick(index: number): void {
    const fd = this.kickFds[index];
    if (fd !== undefined) n.eventfdWrite(fd);
  }

  readConfig(offset: number, size: number): number {
    const dv = new DataView(this.config.buffer);
    if (offset + size > this.config.length) return 0;
    return size === 1 ? dv.getUint8(offset) : size === 2 ? dv.getUint16(offset, true) : dv.getUint32(offset, true);
  }

  close(): void {
    this.closeBackendChannel();
    for (const p of this.callPollers) p.close();
    this.poller.close();
    for (const fd of [...this.kickFds, ...this.callFds]) if (fd !== undefined) n.close(fd);
    n.close(this.fd);
    n.unmap(this.ab);
    n.close(this.memFd);
  }
}
