// The vhost-user command's flags, parsed (src/cli/vhost-user-flags.ts).
import { describe, expect, it } from 'vitest';

import { OFFLOAD_FEATURES, parseFeatureSwitches, parseVhostUserFlags } from '../src/cli/vhost-user-flags.js';

const base = ['--socket', '/tmp/vu.sock', '--tap', 'vt0'];

describe('vhost-user flags', () => {
  it('defaults', () => {
    const f = parseVhostUserFlags(base);
    expect(f).toMatchObject({ socket: '/tmp/vu.sock', tap: 'vt0', queues: 1, txTimerMs: 1, mtu: undefined, features: {}, rateLimit: {}, client: false, logRequests: false });
    expect(parseVhostUserFlags([...base, '--log-requests']).logRequests).toBe(true);
  });

  it('--features switches names off and on', () => {
    expect(parseFeatureSwitches('-RING_PACKED,-MRG_RXBUF,+CTRL_VQ')).toEqual({ RING_PACKED: false, MRG_RXBUF: false, CTRL_VQ: true });
    expect(() => parseFeatureSwitches('RING_PACKED')).toThrow(/got "RING_PACKED"/);
    expect(() => parseFeatureSwitches('-ring_packed')).toThrow(/got "-ring_packed"/);
    expect(() => parseFeatureSwitches('-RING_PACKED,')).toThrow(/got ""/);
  });

  it('--offloads off turns every offload feature off; --features after it may turn one on again', () => {
    const f = parseVhostUserFlags([...base, '--offloads', 'off', '--features', '+CSUM']);
    for (const n of OFFLOAD_FEATURES) expect(f.features[n], n).toBe(n === 'CSUM');
  });

  it('--mtu, --queues, --rate-limit-*: a token bucket of a tenth of a second', () => {
    const f = parseVhostUserFlags([...base, '--mtu', '9000', '--queues', '4', '--rate-limit-tx', '125M', '--rate-limit-rx', '1000']);
    expect(f.mtu).toBe(9000);
    expect(f.queues).toBe(4);
    expect(f.rateLimit.tx).toEqual({ bytes: { size: 12_500_000, refillMs: 100 } });
    expect(f.rateLimit.rx).toEqual({ bytes: { size: 100, refillMs: 100 } });
  });

  it('refuses what is missing or out of range, naming the flag and the value', () => {
    expect(() => parseVhostUserFlags(['--tap', 'x'])).toThrow('vhost-user needs --socket PATH (or --fd N) and --tap NAME');
    expect(() => parseVhostUserFlags([...base, '--mtu', '65536'])).toThrow('--mtu must be an integer from 68 to 65535, got "65536"');
    expect(() => parseVhostUserFlags([...base, '--rate-limit-tx', '1.5M'])).toThrow(/--rate-limit-tx .* got "1.5M"/);
    expect(() => parseVhostUserFlags([...base, '--rate-limit-tx', '2000G'])).toThrow(/--rate-limit-tx .* got "2000G"/);
  });
});

describe('vhost-user flags: --features as the help gives it', () => {
  it('takes a list that starts with a dash as the next argument', () => {
    expect(parseVhostUserFlags([...base, '--features', '-RING_PACKED,+CTRL_VQ']).features).toEqual({ RING_PACKED: false, CTRL_VQ: true });
    expect(parseVhostUserFlags([...base, '--features=-MRG_RXBUF']).features).toEqual({ MRG_RXBUF: false });
  });
});
