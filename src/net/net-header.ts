// virtio_net_hdr (VIRTIO 1.2 §5.1.6): read and written in place in guest
// memory, little-endian.
import {
  NET_HDR_SIZE,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_UFO,
  VIRTIO_NET_F_HOST_USO,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_HDR_GSO_UDP_L4,
} from './constants.js';
import { hasFeature } from '../virtio/constants.js';

export interface NetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  numBuffers: number;
}

/** Byte offsets of the fields in struct virtio_net_hdr (§5.1.6). */
export const HDR_FLAGS = 0;
export const HDR_GSO_TYPE = 1;
export const HDR_HDR_LEN = 2;
export const HDR_GSO_SIZE = 4;
export const HDR_CSUM_START = 6;
export const HDR_CSUM_OFFSET = 8;
export const HDR_NUM_BUFFERS = 10;

export function readNetHeader(dv: DataView, off: number): NetHeader {
  return {
    flags: dv.getUint8(off + HDR_FLAGS),
    gsoType: dv.getUint8(off + HDR_GSO_TYPE),
    hdrLen: dv.getUint16(off + HDR_HDR_LEN, true),
    gsoSize: dv.getUint16(off + HDR_GSO_SIZE, true),
    csumStart: dv.getUint16(off + HDR_CSUM_START, true),
    csumOffset: dv.getUint16(off + HDR_CSUM_OFFSET, true),
    numBuffers: dv.getUint16(off + HDR_NUM_BUFFERS, true),
  };
}

export function writeNetHeader(dv: DataView, off: number, h: Partial<NetHeader>): void {
  dv.setUint8(off + HDR_FLAGS, h.flags ?? 0);
  dv.setUint8(off + HDR_GSO_TYPE, h.gsoType ?? 0);
  dv.setUint16(off + HDR_HDR_LEN, h.hdrLen ?? 0, true);
  dv.setUint16(off + HDR_GSO_SIZE, h.gsoSize ?? 0, true);
  dv.setUint16(off + HDR_CSUM_START, h.csumStart ?? 0, true);
  dv.setUint16(off + HDR_CSUM_OFFSET, h.csumOffset ?? 0, true);
  dv.setUint16(off + HDR_NUM_BUFFERS, h.numBuffers ?? 0, true);
}

/**
 * A received frame's header as the guest must see it, written in place:
 * num_buffers (§5.1.6.4: the buffers the frame took, 1 without MRG_RXBUF),
 * and without GUEST_CSUM no flags (§5.1.6.4.1: the device sets flags to zero).
 */
export function setRxHeader(dv: DataView, off: number, numBuffers: number, guestCsum: boolean): void {
  dv.setUint16(off + HDR_NUM_BUFFERS, numBuffers, true);
  if (!guestCsum) dv.setUint8(off + HDR_FLAGS, 0);
}

/** Why a transmitted header was refused (0: fine). Names double as drop reasons. */
export const TxHeaderFault = {
  NONE: 0,
  UNKNOWN_FLAGS: 1,
  CSUM_NOT_NEGOTIATED: 2,
  CSUM_OUT_OF_FRAME: 3,
  GSO_NOT_NEGOTIATED: 4,
  GSO_UNKNOWN_TYPE: 5,
  GSO_WITHOUT_CSUM: 6,
} as const;

/**
 * Checks a driver's transmit header against the negotiated features
 * (§5.1.6.2.1: the driver MUST NOT use offloads it did not negotiate).
 * frameLen is the Ethernet frame's length, header excluded.
 */
export function checkTxHeader(
  features: bigint,
  flags: number,
  gsoType: number,
  csumStart: number,
  csumOffset: number,
  frameLen: number,
): number {
  if ((flags & ~(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)) !== 0) return TxHeaderFault.UNKNOWN_FLAGS;
  const needsCsum = (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  if (needsCsum) {
    if (!hasFeature(features, VIRTIO_NET_F_CSUM)) return TxHeaderFault.CSUM_NOT_NEGOTIATED;
    if (csumStart + csumOffset + 2 > frameLen) return TxHeaderFault.CSUM_OUT_OF_FRAME;
  }
  const type = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  if (gsoType === VIRTIO_NET_HDR_GSO_NONE) return TxHeaderFault.NONE;
  let feature: number;
  switch (type) {
    case VIRTIO_NET_HDR_GSO_TCPV4:
      feature = VIRTIO_NET_F_HOST_TSO4;
      break;
    case VIRTIO_NET_HDR_GSO_TCPV6:
      feature = VIRTIO_NET_F_HOST_TSO6;
      break;
    case VIRTIO_NET_HDR_GSO_UDP:
      feature = VIRTIO_NET_F_HOST_UFO;
      break;
    case VIRTIO_NET_HDR_GSO_UDP_L4:
      feature = VIRTIO_NET_F_HOST_USO;
      break;
    default:
      return TxHeaderFault.GSO_UNKNOWN_TYPE;
  }
  if (!hasFeature(features, feature)) return TxHeaderFault.GSO_NOT_NEGOTIATED;
  if ((gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0 && !hasFeature(features, VIRTIO_NET_F_HOST_ECN)) return TxHeaderFault.GSO_NOT_NEGOTIATED;
  if (!needsCsum) return TxHeaderFault.GSO_WITHOUT_CSUM;
  return TxHeaderFault.NONE;
}

export { NET_HDR_SIZE };
