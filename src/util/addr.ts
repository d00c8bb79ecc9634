// MAC and IPv4 address text forms.

/** Parses "aa:bb:cc:dd:ee:ff" into 6 bytes; throws a TypeError naming the input. */
export function parseMac(text: string): Uint8Array {
  const parts = text.split(/[:-]/);
  const out = new Uint8Array(6);
  if (parts.length !== 6) throw new TypeError(`invalid MAC address "${text}": expected six hex bytes`);
  parts.forEach((p, i) => {
    if (!/^[0-9a-fA-F]{1,2}$/.test(p)) throw new TypeError(`invalid MAC address "${text}": "${p}" is not a hex byte`);
    out[i] = parseInt(p, 16);
  });
  return out;
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A locally administered unicast MAC with random low bytes. */
export function randomMac(): Uint8Array {
  const mac = new Uint8Array(6);
  globalThis.crypto.getRandomValues(mac);
  mac[0] = ((mac[0] ?? 0) & 0xfc) | 0x02;
  return mac;
}

/** Parses dotted IPv4 into a host-order 32-bit number. */
export function parseIpv4(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4) throw new TypeError(`invalid IPv4 address "${text}"`);
  let value = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new TypeError(`invalid IPv4 address "${text}"`);
    value = value * 256 + Number(p);
  }
  return value >>> 0;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join('.');
}

/** Parses "198.18.0.1/24" into address and prefix length. */
export function parseCidr(text: string): { address: number; prefixLength: number } {
  const [addr, prefix = '32'] = text.split('/');
  const prefixLength = Number(prefix);
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) {
    throw new TypeError(`invalid prefix length in "${text}"`);
  }
  return { address: parseIpv4(addr ?? ''), prefixLength };
}
