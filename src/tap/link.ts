// Link configuration by ioctl (netdevice(7)): flags, MTU, MAC, IPv4 address,
// bridges. Used for a TAP and for the bridges it joins.
import { constants as osConstants } from 'node:os';

import { formatMac, parseIpv4, parseMac } from '../util/addr.js';
import { native, type NativeBinding } from '../host/binding.js';
import { errnoError, usageError } from './errors.js';

/** What a Tap needs of its host-side interface. */
export interface LinkOps {
  readonly name: string;
  readonly ifindex: number;
  readonly mtu: number;
  setMtu(mtu: number): void;
  readonly mac: string;
  setMac(mac: string | Uint8Array): void;
  readonly isUp: boolean;
  setUp(up?: boolean): void;
  setIpv4(address: string | number, prefixLength: number): void;
  addToBridge(bridge: string): void;
  removeFromBridge(bridge: string): void;
}

/**
 * The link of a stand-in TAP (Tap.socketPair): MTU, MAC and state kept in
 * memory; what only a kernel interface can do is refused with a clear error.
 */
export class MemoryLink implements LinkOps {
  readonly name: string;
  readonly ifindex = 0;
  private mtuValue = 1500;
  private macValue: string;
  private up = false;

  constructor(name: string, mac: string) {
    this.name = name;
    this.macValue = mac;
  }

  get mtu(): number {
    return this.mtuValue;
  }

  setMtu(mtu: number): void {
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
      throw usageError('ERR_TAP_MTU', `MTU must be an integer from 68 to 65535, got ${mtu}`, this.name);
    }
    this.mtuValue = mtu;
  }

  get mac(): string {
    return this.macValue;
  }

  setMac(mac: string | Uint8Array): void {
    this.macValue = formatMac(typeof mac === 'string' ? parseMac(mac) : mac);
  }

  get isUp(): boolean {
    return this.up;
  }

  setUp(up = true): void {
    this.up = up;
  }

  setIpv4(): void {
    throw usageError('ERR_TAP_NOT_KERNEL', `"${this.name}" is a socket pair, not a kernel interface: it has no IPv4 address`, this.name);
  }

  addToBridge(): void {
    throw usageError('ERR_TAP_NOT_KERNEL', `"${this.name}" is a socket pair, not a kernel interface: it cannot join a bridge`, this.name);
  }

  removeFromBridge(): void {
    this.addToBridge();
  }
}

/** A network interface named `name`, configured without running `ip`. */
export class Link implements LinkOps {
  readonly name: string;
  private readonly n: NativeBinding;
  private readonly isOpen: () => boolean;

  /** isOpen lets an owner (a Tap) refuse calls after it closed. */
  constructor(name: string, isOpen: () => boolean = () => true) {
    this.name = name;
    this.n = native();
    this.isOpen = isOpen;
  }

  /** Creates a Linux bridge (SIOCBRADDBR); needs CAP_NET_ADMIN. */
  static createBridge(name: string): Link {
    const rc = native().bridgeCreate(name);
    if (rc < 0) throw errnoError(rc, 'SIOCBRADDBR', name, 'creating the bridge', privilegeHint(rc));
    return new Link(name);
  }

  /** Deletes a Linux bridge (SIOCBRDELBR); it must be down. */
  static deleteBridge(name: string): void {
    const rc = native().bridgeDelete(name);
    if (rc < 0) throw errnoError(rc, 'SIOCBRDELBR', name, 'deleting the bridge', privilegeHint(rc));
  }

  /** True when an interface of that name exists in this network namespace. */
  static exists(name: string): boolean {
    return native().linkGetIndex(name) >= 0;
  }

  get ifindex(): number {
    return this.call(() => this.n.linkGetIndex(this.name), 'SIOCGIFINDEX', 'reading the interface index');
  }

  get mtu(): number {
    return this.call(() => this.n.linkGetMtu(this.name), 'SIOCGIFMTU', 'reading the MTU');
  }

  setMtu(mtu: number): void {
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
      throw usageError('ERR_TAP_MTU', `MTU must be an integer from 68 to 65535, got ${mtu}`, this.name);
    }
    this.call(() => this.n.linkSetMtu(this.name, mtu), 'SIOCSIFMTU', `setting the MTU to ${mtu}`);
  }

  /** The MAC address, "aa:bb:cc:dd:ee:ff". */
  get mac(): string {
    const out = new Uint8Array(6);
    this.call(() => this.n.linkGetMac(this.name, out), 'SIOCGIFHWADDR', 'reading the MAC address');
    return formatMac(out);
  }

  setMac(mac: string | Uint8Array): void {
    const bytes = typeof mac === 'string' ? parseMac(mac) : mac;
    if (bytes.length !== 6) throw usageError('ERR_TAP_MAC', `a MAC address has 6 bytes, got ${bytes.length}`, this.name);
    this.call(() => this.n.linkSetMac(this.name, bytes), 'SIOCSIFHWADDR', `setting the MAC address to ${formatMac(bytes)}`);
  }

  get isUp(): boolean {
    return (this.flags() & this.n.constants.IFF_UP) !== 0;
  }

  /** Brings the link up (or down). */
  setUp(up = true): void {
    const c = this.n.constants;
    const flags = this.flags();
    const next = up ? flags | c.IFF_UP : flags & ~c.IFF_UP;
    this.call(() => this.n.linkSetFlags(this.name, next), 'SIOCSIFFLAGS', up ? 'bringing the link up' : 'bringing the link down');
  }

  /** Sets the IPv4 address and netmask, e.g. setIpv4('198.18.0.1', 24). */
  setIpv4(address: string | number, prefixLength: number): void {
    const addr = typeof address === 'string' ? parseIpv4(address) : address;
    if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) {
      throw usageError('ERR_TAP_ADDRESS', `prefix length must be 0 to 32, got ${prefixLength}`, this.name);
    }
    this.call(
      () => this.n.linkSetIpv4(this.name, addr, prefixLength),
      'SIOCSIFADDR',
      `setting the IPv4 address to ${address}/${prefixLength}`,
    );
  }

  /** Adds this interface to an existing Linux bridge (SIOCBRADDIF). */
  addToBridge(bridge: string): void {
    const index = this.ifindex;
    this.call(() => this.n.bridgeAddIf(bridge, index), 'SIOCBRADDIF', `adding to bridge "${bridge}"`);
  }

  /** Removes this interface from a Linux bridge (SIOCBRDELIF). */
  removeFromBridge(bridge: string): void {
    const index = this.ifindex;
    this.call(() => this.n.bridgeDelIf(bridge, index), 'SIOCBRDELIF', `removing from bridge "${bridge}"`);
  }

  private flags(): number {
    return this.call(() => this.n.linkGetFlags(this.name), 'SIOCGIFFLAGS', 'reading the link flags');
  }

  // Checks "closed" before the syscall, then turns -errno into a TapError.
  private call(op: () => number, syscall: string, what: string): number {
    if (!this.isOpen()) {
      throw usageError('ERR_TAP_CLOSED', `TAP "${this.name}" is closed (${what})`, this.name, syscall);
    }
    const rc = op();
    if (rc < 0) throw errnoError(rc, syscall, this.name, what, privilegeHint(rc));
    return rc;
  }
}

function privilegeHint(rc: number): string | undefined {
  return rc === -osConstants.errno.EPERM ? 'this needs CAP_NET_ADMIN' : undefined;
}
