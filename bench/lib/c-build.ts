// The C reference loops of bench/c/, compiled by the bench (and the tests
// that drive them) into bench/.build/ when missing or older than their
// source: installing the package never builds them.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..', '..');

/** The path of bench/c/NAME.c built, compiling it first if needed (with $CC, default cc). */
export function cProgram(name: string): string {
  const src = join(root, 'bench', 'c', `${name}.c`);
  const out = join(root, 'bench', '.build', name);
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return out;
  mkdirSync(join(root, 'bench', '.build'), { recursive: true });
  // Built under a name of this process's own, then renamed: parallel test files may race here.
  const tmp = `${out}.${process.pid}`;
  const flags = ['-O2', '-Wall', '-Wextra', '-fstack-protector-strong', '-D_GNU_SOURCE', '-o', tmp, src];
  execFileSync(process.env['CC'] ?? 'cc', flags, { stdio: ['ignore', 'inherit', 'inherit'] });
  renameSync(tmp, out);
  return out;
}
