// Opening a TAP: the checks on the options, then the ioctl sequence of Linux
// Documentation/networking/tuntap.rst for each queue (open /dev/net/tun,
// TUNSETIFF, TUNSETVNETHDRSZ), then the TAP-wide settings on the first fd.
import { constants as osConstants } from 'node:os';

import { native, type NativeBinding } from '../host/binding.js';
import { errnoError, permissionHint, TapError, usageError } from './errors.js';

export interface TapOptions {
  /** Interface name; empty or absent lets the kernel choose (tap0, tap1, ...). May hold "%d". */
  name?: string;
  /** IFF_VNET_HDR: each frame is preceded by a virtio_net_hdr. Default false. */
  vnetHdr?: boolean;
  /** TUNSETVNETHDRSZ, with vnetHdr. Default 12 (virtio 1.x header with num_buffers). */
  vnetHdrSize?: number;
  /** Queues (fds); more than one sets IFF_MULTI_QUEUE. Default 1. */
  queues?: number;
  /** Set IFF_MULTI_QUEUE even with one queue (to match a persistent multi-queue TAP). */
  multiQueue?: boolean;
  /** TUNSETPERSIST: the TAP outlives its fds. */
  persist?: boolean;
  /** TUNSETOWNER / TUNSETGROUP: who may attach without CAP_NET_ADMIN. */
  owner?: number;
  group?: number;
  /** Only attach to an existing TAP; never create one. */
  mustExist?: boolean;
  /** Path of the clone device. Default /dev/net/tun. */
  devicePath?: string;
}

/** An opened TAP, for the Tap to wrap. */
export interface OpenedTap {
  /** The name the kernel gave (a "%d" in the request is filled in). */
  name: string;
  fds: number[];
  /** TUNGETFEATURES (0 when the kernel does not say). */
  features: number;
  vnetHdrSize: number;
}

const MAX_NAME_BYTES = 15; // IFNAMSIZ - 1

function checkName(name: string): void {
  const bytes = Buffer.byteLength(name);
  if (bytes > MAX_NAME_BYTES) {
    throw usageError(
      'ERR_TAP_NAME_TOO_LONG',
      `interface name "${name}" is ${bytes} bytes; Linux allows at most ${MAX_NAME_BYTES} (IFNAMSIZ - 1)`,
      name,
    );
  }
  if (/[\s/:]/.test(name) || name === '.' || name === '..') {
    throw usageError(
      'ERR_TAP_NAME_INVALID',
      `interface name "${name}" is not valid: no spaces, "/" or ":", and not "." or ".."`,
      name,
    );
  }
}

// The queue count and header size asked for, checked before any syscall.
function checkCounts(options: TapOptions, requested: string): { queues: number; vnetHdrSize: number } {
  const queues = options.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1 || queues > 256) {
    throw usageError('ERR_TAP_QUEUES', `queues must be an integer from 1 to 256, got ${queues}`, requested);
  }
  const vnetHdrSize = options.vnetHdr === true ? (options.vnetHdrSize ?? 12) : 0;
  if (options.vnetHdr === true && (!Number.isInteger(vnetHdrSize) || vnetHdrSize < 10)) {
    throw usageError('ERR_TAP_VNET_HDR_SIZE', `vnetHdrSize must be an integer >= 10, got ${vnetHdrSize}`, requested);
  }
  return { queues, vnetHdrSize };
}

// With mustExist: the exact name of an interface that is there.
function checkExists(n: NativeBinding, requested: string): void {
  if (requested === '' || requested.includes('%')) {
    throw usageError('ERR_TAP_NAME_INVALID', 'attaching needs the exact name of an existing TAP', requested);
  }
  const index = n.linkGetIndex(requested);
  if (index < 0) {
    throw new TapError(
      `no interface named "${requested}" to attach to; create it first, for example with ` +
        `\`sudo ip tuntap add dev ${requested} mode tap user ${process.env['USER'] ?? 'USER'}\``,
      'ERR_TAP_NOT_FOUND',
      index,
      'SIOCGIFINDEX',
      requested,
    );
  }
}

/** Opens (creates or attaches) a TAP as `options` ask; throws a TapError with what to do when it cannot. */
export function openTap(options: TapOptions): OpenedTap {
  const n = native();
  const c = n.constants;
  const requested = options.name ?? '';
  checkName(requested);
  const { queues, vnetHdrSize } = checkCounts(options, requested);
  if (options.mustExist === true) checkExists(n, requested);
  let flags = c.IFF_TAP | c.IFF_NO_PI;
  if (vnetHdrSize > 0) flags |= c.IFF_VNET_HDR;
  if (queues > 1 || options.multiQueue === true) flags |= c.IFF_MULTI_QUEUE;
  const fds: number[] = [];
  try {
    const name = openQueues(n, options.devicePath ?? '/dev/net/tun', requested, flags, queues, vnetHdrSize, fds);
    const features = n.tunGetFeatures(fds[0] as number);
    configure(n, fds[0] as number, name, options);
    return { name, fds, features: features < 0 ? 0 : features, vnetHdrSize };
  } catch (err) {
    for (const fd of fds) n.close(fd);
    throw err;
  }
}

// One fd per queue, each attached to the same interface; the first names it.
// The fds opened are pushed to `fds` (for the caller to close on failure).
function openQueues(n: NativeBinding, devicePath: string, requested: string, flags: number, queues: number, vnetHdrSize: number, fds: number[]): string {
  let name = requested;
  for (let q = 0; q < queues; q++) {
    const fd = n.open(devicePath);
    if (fd < 0) throw openError(fd, devicePath, requested);
    fds.push(fd);
    const rc = n.tunSetIff(fd, name, flags);
    if (rc < 0) throw setIffError(rc, name, q);
    if (q === 0) {
      const info = n.tunGetIff(fd);
      if (typeof info === 'number') throw errnoError(info, 'TUNGETIFF', name, 'reading the TAP name');
      name = info.name;
    }
    if (vnetHdrSize > 0) {
      const hrc = n.tunSetVnetHdrSz(fd, vnetHdrSize);
      if (hrc < 0) throw errnoError(hrc, 'TUNSETVNETHDRSZ', name, `setting the vnet header size to ${vnetHdrSize}`);
    }
  }
  return name;
}

// The TAP-wide settings: owner, group, persistence.
function configure(n: NativeBinding, fd: number, name: string, options: TapOptions): void {
  if (options.owner !== undefined) {
    const rc = n.tunSetOwner(fd, options.owner);
    if (rc < 0) throw errnoError(rc, 'TUNSETOWNER', name, `setting the owner to ${options.owner}`);
  }
  if (options.group !== undefined) {
    const rc = n.tunSetGroup(fd, options.group);
    if (rc < 0) throw errnoError(rc, 'TUNSETGROUP', name, `setting the group to ${options.group}`);
  }
  if (options.persist === true) {
    const rc = n.tunSetPersist(fd, 1);
    if (rc < 0) throw errnoError(rc, 'TUNSETPERSIST', name, 'making the TAP persistent');
  }
}

function openError(rc: number, devicePath: string, requested: string): TapError {
  const e = osConstants.errno;
  const hint =
    rc === -e.ENOENT
      ? `${devicePath} is missing: load the tun module (\`modprobe tun\`)`
      : rc === -e.EACCES || rc === -e.EPERM
        ? permissionHint(requested)
        : undefined;
  return errnoError(rc, 'open', requested, `opening ${devicePath}`, hint);
}

function setIffError(rc: number, name: string, queue: number): TapError {
  const e = osConstants.errno;
  let hint: string | undefined;
  if (rc === -e.EPERM || rc === -e.EACCES) hint = permissionHint(name);
  else if (rc === -e.EBUSY) {
    hint = `"${name}" is in use: another process holds it (a TAP without IFF_MULTI_QUEUE takes one fd), or it is already attached`;
  } else if (rc === -e.EINVAL) {
    hint = `"${name}" exists but is not a TAP with these flags (a TUN device, another kind of link, or a multi-queue mismatch)`;
  }
  const what = queue === 0 ? 'creating or attaching the TAP' : `attaching queue ${queue}`;
  return errnoError(rc, 'TUNSETIFF', name, what, hint);
}
