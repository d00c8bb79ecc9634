// Network device wire constants (VIRTIO 1.2 §5.1), names as in the spec.

/** Feature bits (§5.1.3). */
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_CTRL_RX = 18;
export const VIRTIO_NET_F_CTRL_VLAN = 19;
export const VIRTIO_NET_F_CTRL_RX_EXTRA = 20;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 23;
export const VIRTIO_NET_F_GUEST_USO4 = 54;
export const VIRTIO_NET_F_GUEST_USO6 = 55;
export const VIRTIO_NET_F_HOST_USO = 56;

/** virtio_net_hdr.flags (§5.1.6). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** virtio_net_hdr.gso_type (§5.1.6). */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** The header with VIRTIO_F_VERSION_1: always 12 bytes, num_buffers included (§5.1.6). */
export const NET_HDR_SIZE = 12;

/** Config status bits (§5.1.4). */
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

/** Control queue (§5.1.6.5). */
export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;
export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;
export const VIRTIO_NET_CTRL_MAC = 1;
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;
export const VIRTIO_NET_CTRL_VLAN = 2;
export const VIRTIO_NET_CTRL_VLAN_ADD = 0;
export const VIRTIO_NET_CTRL_VLAN_DEL = 1;
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;
export const VIRTIO_NET_CTRL_MQ = 4;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET = 0;

/** Without MRG_RXBUF and with guest GSO, each receive buffer must hold this much (§5.1.6.3.1). */
export const BIG_RX_BUFFER = 65562;
