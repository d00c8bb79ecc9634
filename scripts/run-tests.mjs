#!/usr/bin/env node
// `npm test`: runs vitest. With CAP_NET_ADMIN and CAP_SYS_ADMIN (root), the
// whole run happens inside a network namespace made for it (see netns.mjs),
// so TAPs, bridges and addresses the tests create never touch the host and
// vanish with the run. Without those capabilities the tests that need them are
// skipped with the reason, or fail when VIRTIO_TAP_REQUIRE_PRIVILEGED=1 (CI).
//
// `--unprivileged` runs only the files of test/unprivileged.json, which need
// no TAP: outside any namespace, with VIRTIO_TAP_REQUIRE_PRIVILEGED=1 so that
// nothing can pass by skipping (CI runs it on the other Node versions).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { canMakeNetns, insideNetns, runInNetns } from './netns.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const vitest = resolve(dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
const args = process.argv.slice(2);
const unprivileged = args.includes('--unprivileged');
const selection = unprivileged ? JSON.parse(readFileSync(resolve(root, 'test', 'unprivileged.json'), 'utf8')).files : [];
const argv = [process.execPath, vitest, 'run', ...selection, ...args.filter((a) => a !== '--unprivileged')];

let status;
if (unprivileged) {
  console.log(`virtio-tap tests: the ${selection.length} files that need no TAP (test/unprivileged.json), on Node ${process.version}`);
  const r = spawnSync(argv[0], argv.slice(1), { cwd: root, stdio: 'inherit', env: { ...process.env, VIRTIO_TAP_REQUIRE_PRIVILEGED: '1' } });
  status = r.status ?? 1;
} else if (canMakeNetns() && !insideNetns()) {
  status = runInNetns(argv, { cwd: root });
} else {
  if (!canMakeNetns()) {
    console.log('virtio-tap tests: no CAP_NET_ADMIN/CAP_SYS_ADMIN: tests that need a TAP will be skipped');
  }
  const r = spawnSync(argv[0], argv.slice(1), { cwd: root, stdio: 'inherit' });
  status = r.status ?? 1;
}
process.exit(status);
