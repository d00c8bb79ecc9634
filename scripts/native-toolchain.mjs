// What building the addon from source needs, shared by the install step
// (shipped) and the prebuild script: Node headers that match no download,
// node-gyp, and a C++ toolchain on PATH.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join, resolve } from 'node:path';

/**
 * A directory holding include/node/ with node_api.h and uv.h: $VIRTIO_TAP_NODEDIR,
 * then the running Node's own prefix, then the system's. null: none here
 * (node-gyp would download headers, which this project never asks it to).
 */
export function nodeHeaders() {
  const candidates = [process.env.VIRTIO_TAP_NODEDIR, resolve(dirname(process.execPath), '..'), '/usr/local', '/usr'];
  for (const dir of candidates) {
    if (dir && existsSync(join(dir, 'include', 'node', 'node_api.h')) && existsSync(join(dir, 'include', 'node', 'uv.h'))) return dir;
  }
  return null;
}

/** node-gyp's entry script: the one npm runs install scripts with, else this tree's. */
export function nodeGypScript(from) {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  try {
    return createRequire(from).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return null;
  }
}

/** Whether `name` is an executable on PATH. */
export function onPath(name) {
  if (name.includes('/')) return existsSync(name);
  return (process.env.PATH ?? '').split(delimiter).some((d) => d !== '' && existsSync(join(d, name)));
}

/** The tools a source build runs that are not on PATH. */
export function missingTools(env = process.env) {
  const cxx = (env.CXX ?? 'g++').split(' ')[0];
  const cc = (env.CC ?? 'cc').split(' ')[0];
  const python = onPath('python3') || onPath('python') ? [] : ['python3'];
  return [...python, ...['make', cc, cxx].filter((t, i, all) => all.indexOf(t) === i && !onPath(t))];
}
