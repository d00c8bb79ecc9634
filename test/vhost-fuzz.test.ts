// Test tier 4: the vhost-user protocol fuzzer for a bounded time (about 15 s,
// or VIRTIO_TAP_FUZZ_SECONDS; VIRTIO_TAP_FUZZ_SEED to replay a seed). For
// hours: `npm run fuzz -- --seconds 3600`.
import { describe, expect, it } from 'vitest';

import { fuzz } from './helpers/vhost-fuzz.js';

const seconds = Number(process.env['VIRTIO_TAP_FUZZ_SECONDS'] ?? 15);
const seed = Number(process.env['VIRTIO_TAP_FUZZ_SEED'] ?? 0x5eed);

describe('vhost-user protocol fuzzer', () => {
  it(`random and mutated message sequences with random fds leave the back-end alive, serving, holding nothing new and idle (seed ${seed}, ${seconds} s)`, async () => {
    const report = await fuzz({ seed, seconds, checkEvery: 200 });
    console.log(
      `vhost-user fuzz: seed ${report.seed}: ${report.sequences} sequences, ${report.messages} messages, ${report.checks} checks, ${report.refused} refusals, ${report.started} starts, ${report.ringsBroken} rings broken, ${report.findings.length} findings`,
    );
    expect(report.findings).toEqual([]);
    expect(report.sequences).toBeGreaterThan(100);
  }, (seconds + 60) * 1000);
});
