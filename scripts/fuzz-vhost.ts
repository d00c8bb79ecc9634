// `npm run fuzz -- [--seconds N] [--seed N]`: the vhost-user protocol fuzzer
// (test/helpers/vhost-fuzz.ts) for as long as asked, a report line every
// check, and the findings with the seed and sequence that replay them.
// Exit 1 when it found something.
import { parseArgs } from 'node:util';

import { fuzz } from '../test/helpers/vhost-fuzz.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '60' }, seed: { type: 'string' }, 'check-every': { type: 'string', default: '200' } } });
const seconds = Number(values.seconds);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const checkEvery = Number(values['check-every']);
if (!(seconds > 0) || !Number.isInteger(seed) || !(checkEvery > 0)) {
  console.error('usage: npm run fuzz -- [--seconds N] [--seed N] [--check-every N]');
  process.exit(2);
}
console.log(`vhost-user fuzz: seed ${seed}, ${seconds} s`);
const report = await fuzz({ seed, seconds, checkEvery, log: (l) => console.log(l) });
console.log(
  `${report.sequences} sequences, ${report.messages} messages, ${report.checks} checks; the back-end refused ${report.refused} requests, started ${report.started} times, found ${report.ringsBroken} rings broken and ${report.ringFdFaults} ring fds failing`,
);
for (const f of report.findings) console.log(`FINDING: ${f}`);
process.exit(report.findings.length > 0 ? 1 : 0);
