// The host side of the demo's TAP: up, with the host address on the TAP
// itself or on a Linux bridge the TAP joins; and taken down again.
import { Link } from '../tap/link.js';
import type { Tap } from '../tap/tap.js';
import { formatIpv4 } from '../util/addr.js';
import { DemoFailure, type DemoLog } from './log.js';

export interface HostSide {
  /** The interface that holds the host address (the TAP, or the bridge). */
  ifname: string;
  /** A bridge this demo created, to delete at the end. */
  createdBridge: Link | null;
}

/** What the host side depends on: an attached TAP (a user may not be able to configure it), and a bridge. */
export interface HostSideOptions {
  tap?: string;
  bridge?: string;
}

export function configureHost(tap: Tap, o: HostSideOptions, host: { address: number; prefixLength: number }, log: DemoLog): HostSide {
  try {
    tap.setUp();
  } catch (err) {
    if (o.tap === undefined) throw err;
    if (!tap.isUp) {
      throw new DemoFailure(`${tap.name} is down and this user cannot bring it up: run \`sudo ip link set ${tap.name} up\``);
    }
  }
  if (o.bridge !== undefined) return configureBridge(tap, o.bridge, host, log);
  try {
    tap.setIpv4(host.address, host.prefixLength);
    log.ok(`${tap.name} is up with ${formatIpv4(host.address)}/${host.prefixLength}`);
  } catch (err) {
    if (o.tap === undefined) throw err;
    log.info(`cannot set the address without CAP_NET_ADMIN; assuming ${tap.name} already has ${formatIpv4(host.address)}`);
  }
  return { ifname: tap.name, createdBridge: null };
}

// The set-up most VM hosts use: the TAP joins a Linux bridge that holds the host's address.
function configureBridge(tap: Tap, bridge: string, host: { address: number; prefixLength: number }, log: DemoLog): HostSide {
  const existed = Link.exists(bridge);
  const br = existed ? new Link(bridge) : Link.createBridge(bridge);
  br.setUp();
  if (!existed) br.setIpv4(host.address, host.prefixLength);
  tap.addToBridge(bridge);
  log.ok(`${tap.name} joined bridge ${bridge}${existed ? '' : ` (created, ${formatIpv4(host.address)}/${host.prefixLength})`}`);
  return { ifname: bridge, createdBridge: existed ? null : br };
}

/** Deletes the bridge configureHost created, if it did. */
export function removeHostSide(side: HostSide | null, log: DemoLog): void {
  const br = side?.createdBridge ?? null;
  if (br === null) return;
  br.setUp(false);
  Link.deleteBridge(br.name);
  log.ok(`deleted bridge ${br.name}`);
}
