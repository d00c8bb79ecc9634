// The features a NetDevice offers, each switchable by whoever embeds it.
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  bit,
  hasFeature,
} from '../virtio/constants.js';
import { TunOffload } from '../tap/tap.js';
import * as C from './constants.js';

export const NET_FEATURES = {
  VERSION_1: VIRTIO_F_VERSION_1,
  RING_PACKED: VIRTIO_F_RING_PACKED,
  INDIRECT_DESC: VIRTIO_F_INDIRECT_DESC,
  EVENT_IDX: VIRTIO_F_EVENT_IDX,
  IN_ORDER: VIRTIO_F_IN_ORDER,
  CSUM: C.VIRTIO_NET_F_CSUM,
  GUEST_CSUM: C.VIRTIO_NET_F_GUEST_CSUM,
  CTRL_GUEST_OFFLOADS: C.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
  MTU: C.VIRTIO_NET_F_MTU,
  MAC: C.VIRTIO_NET_F_MAC,
  GUEST_TSO4: C.VIRTIO_NET_F_GUEST_TSO4,
  GUEST_TSO6: C.VIRTIO_NET_F_GUEST_TSO6,
  GUEST_ECN: C.VIRTIO_NET_F_GUEST_ECN,
  GUEST_UFO: C.VIRTIO_NET_F_GUEST_UFO,
  HOST_TSO4: C.VIRTIO_NET_F_HOST_TSO4,
  HOST_TSO6: C.VIRTIO_NET_F_HOST_TSO6,
  HOST_ECN: C.VIRTIO_NET_F_HOST_ECN,
  HOST_UFO: C.VIRTIO_NET_F_HOST_UFO,
  MRG_RXBUF: C.VIRTIO_NET_F_MRG_RXBUF,
  STATUS: C.VIRTIO_NET_F_STATUS,
  CTRL_VQ: C.VIRTIO_NET_F_CTRL_VQ,
  CTRL_RX: C.VIRTIO_NET_F_CTRL_RX,
  CTRL_VLAN: C.VIRTIO_NET_F_CTRL_VLAN,
  CTRL_RX_EXTRA: C.VIRTIO_NET_F_CTRL_RX_EXTRA,
  GUEST_ANNOUNCE: C.VIRTIO_NET_F_GUEST_ANNOUNCE,
  MQ: C.VIRTIO_NET_F_MQ,
  CTRL_MAC_ADDR: C.VIRTIO_NET_F_CTRL_MAC_ADDR,
  GUEST_USO4: C.VIRTIO_NET_F_GUEST_USO4,
  GUEST_USO6: C.VIRTIO_NET_F_GUEST_USO6,
  HOST_USO: C.VIRTIO_NET_F_HOST_USO,
} as const;

export type NetFeatureName = keyof typeof NET_FEATURES;

/** Feature names to switch off or on, over the defaults (everything on). */
export type NetFeatureSwitches = Partial<Record<NetFeatureName, boolean>>;

export function featureMask(switches: NetFeatureSwitches = {}): bigint {
  let mask = 0n;
  for (const [name, b] of Object.entries(NET_FEATURES) as [NetFeatureName, number][]) {
    if (switches[name] !== false) mask |= bit(b);
  }
  return mask;
}

/**
 * What a device over `pairs` TAP queues offers: MQ only with two pairs or
 * more; with the control queue served elsewhere (vhost-user), no feature of
 * the control queue's own.
 */
export function offeredFeatures(switches: NetFeatureSwitches | undefined, pairs: number, controlElsewhere: boolean): bigint {
  const s: NetFeatureSwitches = { ...switches };
  if (pairs < 2) s.MQ = false;
  if (controlElsewhere) {
    for (const k of ['CTRL_VQ', 'CTRL_RX', 'CTRL_VLAN', 'CTRL_RX_EXTRA', 'CTRL_MAC_ADDR', 'CTRL_GUEST_OFFLOADS'] as const) s[k] = false;
  }
  return featureMask(s);
}

/** The guest offload bits: what VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET may change (§5.1.6.5.6.1). */
export const GUEST_OFFLOADS: bigint = [
  C.VIRTIO_NET_F_GUEST_CSUM,
  C.VIRTIO_NET_F_GUEST_TSO4,
  C.VIRTIO_NET_F_GUEST_TSO6,
  C.VIRTIO_NET_F_GUEST_ECN,
  C.VIRTIO_NET_F_GUEST_UFO,
  C.VIRTIO_NET_F_GUEST_USO4,
  C.VIRTIO_NET_F_GUEST_USO6,
].reduce((m, b) => m | bit(b), 0n);

/**
 * The room a receive buffer (or, with MRG_RXBUF, a frame's buffers) must
 * offer: the largest frame plus the header. §5.1.6.3.1: with guest GSO and
 * without MRG_RXBUF, buffers of at least 65562 bytes; else an MTU-sized frame.
 */
export function rxFrameRoom(features: bigint, mtu: number): number {
  const gso = [C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6, C.VIRTIO_NET_F_GUEST_UFO, C.VIRTIO_NET_F_GUEST_USO4, C.VIRTIO_NET_F_GUEST_USO6];
  return gso.some((b) => hasFeature(features, b)) ? C.BIG_RX_BUFFER : C.NET_HDR_SIZE + 14 + 4 + mtu;
}

/** TUNSETOFFLOAD bits for the guest's offloads: what the host may hand the guest (none without GUEST_CSUM). */
export function tunOffloads(guest: bigint): number {
  if (!hasFeature(guest, C.VIRTIO_NET_F_GUEST_CSUM)) return 0;
  let bits = TunOffload.CSUM;
  if (hasFeature(guest, C.VIRTIO_NET_F_GUEST_TSO4)) bits |= TunOffload.TSO4;
  if (hasFeature(guest, C.VIRTIO_NET_F_GUEST_TSO6)) bits |= TunOffload.TSO6;
  if (hasFeature(guest, C.VIRTIO_NET_F_GUEST_ECN)) bits |= TunOffload.TSO_ECN;
  if (hasFeature(guest, C.VIRTIO_NET_F_GUEST_UFO)) bits |= TunOffload.UFO;
  if (hasFeature(guest, C.VIRTIO_NET_F_GUEST_USO4)) bits |= TunOffload.USO4;
  if (hasFeature(guest, C.VIRTIO_NET_F_GUEST_USO6)) bits |= TunOffload.USO6;
  return bits;
}

export function featureNames(mask: bigint): NetFeatureName[] {
  return (Object.entries(NET_FEATURES) as [NetFeatureName, number][]).filter(([, b]) => hasFeature(mask, b)).map(([n]) => n);
}

/**
 * §5.1.3.1: feature dependencies. Returns the first violated one, or null.
 * With controlElsewhere (a vhost-user front-end runs the control queue), the
 * dependencies on CTRL_VQ are met there.
 */
export function featureDependencyError(f: bigint, controlElsewhere = false): string | null {
  const need: [NetFeatureName, NetFeatureName[]][] = [
    ['GUEST_TSO4', ['GUEST_CSUM']],
    ['GUEST_TSO6', ['GUEST_CSUM']],
    ['GUEST_UFO', ['GUEST_CSUM']],
    ['GUEST_USO4', ['GUEST_CSUM']],
    ['GUEST_USO6', ['GUEST_CSUM']],
    ['GUEST_ECN', ['GUEST_TSO4', 'GUEST_TSO6']],
    ['HOST_TSO4', ['CSUM']],
    ['HOST_TSO6', ['CSUM']],
    ['HOST_UFO', ['CSUM']],
    ['HOST_USO', ['CSUM']],
    ['HOST_ECN', ['HOST_TSO4', 'HOST_TSO6']],
    ['CTRL_RX', ['CTRL_VQ']],
    ['CTRL_VLAN', ['CTRL_VQ']],
    ['GUEST_ANNOUNCE', ['CTRL_VQ']],
    ['MQ', ['CTRL_VQ']],
    ['CTRL_MAC_ADDR', ['CTRL_VQ']],
    ['CTRL_GUEST_OFFLOADS', ['CTRL_VQ']],
    ['CTRL_RX_EXTRA', ['CTRL_RX']],
  ];
  for (const [feature, anyOf] of need) {
    if (controlElsewhere && anyOf.includes('CTRL_VQ')) continue;
    if (hasFeature(f, NET_FEATURES[feature]) && !anyOf.some((d) => hasFeature(f, NET_FEATURES[d]))) {
      return `${feature} needs ${anyOf.join(' or ')}`;
    }
  }
  return null;
}
