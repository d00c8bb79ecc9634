// Names for TUNGETFEATURES bits (if_tun.h), for people reading the demo.
const TUN_FEATURE_NAMES: [number, string][] = [
  [0x0001, 'IFF_TUN'],
  [0x0002, 'IFF_TAP'],
  [0x0010, 'IFF_NAPI'],
  [0x0020, 'IFF_NAPI_FRAGS'],
  [0x0040, 'IFF_NO_CARRIER'],
  [0x0100, 'IFF_MULTI_QUEUE'],
  [0x1000, 'IFF_NO_PI'],
  [0x2000, 'IFF_ONE_QUEUE'],
  [0x4000, 'IFF_VNET_HDR'],
  [0x8000, 'IFF_TUN_EXCL'],
];

export function tunFeatureNames(flags: number): string[] {
  return TUN_FEATURE_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
}
