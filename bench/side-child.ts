// One repetition of one side of a bench comparison, in a process of its own
// (see lib/side.ts). Loads the side's virtio-tap through its src/index.ts, so
// a checkout with another internal layout works alike, and the native addon
// its loader finds (VIRTIO_TAP_ADDON, set by the parent for a baseline).
// Nothing of this tree's src/ is loaded unless this tree is the side.
// Prints the run's result as one JSON line.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { useTapLoop } from './lib/c-loop.js';
import type { ChildSpec, Observe } from './lib/side.js';
import { runJob, type BenchLib, type DeviceExtras } from './lib/workloads.js';

const spec = JSON.parse(process.env['VT_SIDE'] ?? 'null') as ChildSpec | null;
if (spec === null) throw new Error('bench/side-child.ts is run by the bench (lib/side.ts), with VT_SIDE set');
useTapLoop(spec.tapLoop);
const load = (rel: string) => import(pathToFileURL(join(spec.root, 'src', rel)).href);
const lib = (await load('index.ts')) as BenchLib;

/** The capture and tracer `o` asks for, and how to close them after the run. */
async function observing(o: Observe): Promise<{ extras: DeviceExtras; close: () => Promise<void> }> {
  const extras: DeviceExtras = {};
  const closers: (() => unknown)[] = [];
  if (o.capture !== undefined) {
    const path = o.capture;
    const capture = new lib.PcapWriter(path);
    extras.capture = capture;
    closers.push(() => capture.close());
    if (path !== '/dev/null') closers.push(() => rmSync(path, { force: true }));
  }
  if (o.trace !== undefined) {
    const { TraceSink } = (await load(join('trace', 'sink.ts'))) as typeof import('../src/trace/sink.js');
    const sink = new TraceSink('json', o.trace);
    extras.trace = sink.tracer;
    closers.push(() => sink.close());
  }
  return {
    extras,
    close: async () => {
      for (const c of closers) await c();
    },
  };
}

const { extras, close } = await observing(spec.observe);
// A fresh process starts with a cold JIT: the ring job warms up on its own,
// a transmit gets a short untimed run first. Receive warms up while its
// sender gets going.
if (spec.job.kind === 'transmit') await runJob(lib, { ...spec.job, seconds: Math.min(0.2, spec.job.seconds) }, extras);
const result = await runJob(lib, spec.job, extras);
await close();
console.log(JSON.stringify(result));
process.exit(0);
