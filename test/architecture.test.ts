// The layer map of docs/architecture.md, checked from the imports: no arrow
// from a lower layer to a higher one. And the size rules that keep files
// readable: no file in src/ over 400 lines, no function over 60 lines except
// a register switch.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';

import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '../src');

/** What each layer (a folder of src/) may import besides itself. */
const ALLOWED: Record<string, string[]> = {
  util: [],
  // The trace vocabulary is a leaf; it may name the spec's own constants and errnos.
  trace: ['util', 'virtio/constants.ts', 'host/errors.ts'],
  host: ['util'],
  virtio: ['util', 'trace', 'host'],
  tap: ['util', 'host'],
  net: ['util', 'trace', 'host', 'virtio', 'tap'],
  transport: ['util', 'trace', 'host', 'virtio'],
  driver: ['util', 'virtio', 'net', 'transport'],
  demo: ['util', 'trace', 'host', 'virtio', 'tap', 'net', 'transport', 'driver'],
  tour: ['util', 'trace', 'host', 'virtio', 'tap', 'net', 'transport', 'driver'],
  v86: ['util', 'trace', 'host', 'virtio', 'tap', 'net', 'transport', 'driver'],
  cli: ['*'],
  '.': ['*'],
};

const MAX_FILE_LINES = 400;
const MAX_FUNCTION_LINES = 60;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = join(dir, d.name);
    if (d.isDirectory()) return sourceFiles(p);
    return d.name.endsWith('.ts') ? [p] : [];
  });
}

const files = sourceFiles(SRC);
const parsed = new Map(files.map((f) => [f, ts.createSourceFile(f, readFileSync(f, 'utf8'), ts.ScriptTarget.Latest, true)]));

function layerOf(file: string): string {
  const rel = relative(SRC, file);
  return rel.includes('/') ? rel.slice(0, rel.indexOf('/')) : '.';
}

/** Every project-relative module a file names: static imports, re-exports, dynamic imports, worker URLs. */
function importsOf(sf: ts.SourceFile): string[] {
  const out: string[] = [];
  const visit = (n: ts.Node): void => {
    if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      out.push(n.moduleSpecifier.text);
    } else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword && n.arguments[0] && ts.isStringLiteral(n.arguments[0])) {
      out.push(n.arguments[0].text);
    } else if (ts.isNewExpression(n) && ts.isIdentifier(n.expression) && n.expression.text === 'URL' && n.arguments?.[0] && ts.isStringLiteral(n.arguments[0])) {
      out.push(n.arguments[0].text);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out.filter((s) => s.startsWith('.')).map((s) => relative(SRC, resolve(dirname(sf.fileName), s.replace(/\.js$/, '.ts'))));
}

function layerViolations(): string[] {
  const bad: string[] = [];
  for (const [file, sf] of parsed) {
    const from = layerOf(file);
    const allowed = ALLOWED[from];
    if (allowed === undefined) {
      bad.push(`${relative(SRC, file)}: folder "${from}" has no place in the layer map`);
      continue;
    }
    for (const target of importsOf(sf)) {
      const to = target.includes('/') ? target.slice(0, target.indexOf('/')) : '.';
      if (to === from || allowed.includes('*') || allowed.includes(to) || allowed.includes(target)) continue;
      bad.push(`${relative(SRC, file)} (${from}) imports ${target} (${to})`);
    }
  }
  return bad;
}

function linesOf(sf: ts.SourceFile, n: ts.Node): number {
  const a = sf.getLineAndCharacterOfPosition(n.getStart(sf)).line;
  const b = sf.getLineAndCharacterOfPosition(n.getEnd()).line;
  return b - a + 1;
}

/** A register switch: the body is one switch with many cases (and little else). */
function isRegisterSwitch(body: ts.Node | undefined): boolean {
  if (body === undefined || !ts.isBlock(body)) return false;
  return body.statements.some((s) => ts.isSwitchStatement(s) && s.caseBlock.clauses.length >= 8) && body.statements.length <= 4;
}

function longFunctions(): string[] {
  const bad: string[] = [];
  for (const [file, sf] of parsed) {
    const visit = (n: ts.Node): void => {
      if (ts.isFunctionLike(n) && 'body' in n && n.body !== undefined) {
        const lines = linesOf(sf, n);
        if (lines > MAX_FUNCTION_LINES && !isRegisterSwitch(n.body as ts.Node)) {
          const name = n.name !== undefined && ts.isIdentifier(n.name) ? n.name.text : '(anonymous)';
          const at = sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
          bad.push(`${relative(SRC, file)}:${at} ${name}: ${lines} lines`);
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return bad;
}

describe('architecture', () => {
  it('no import goes from a lower layer to a higher one', () => {
    expect(layerViolations()).toEqual([]);
  });

  it('the layer check sees imports (it is not vacuous)', () => {
    const net = [...parsed].find(([f]) => f.endsWith('net/device.ts'))!;
    expect(importsOf(net[1]).some((t) => t.startsWith('virtio/'))).toBe(true);
  });

  it(`no file in src/ is over ${MAX_FILE_LINES} lines`, () => {
    const long = [...parsed].filter(([, sf]) => sf.getLineAndCharacterOfPosition(sf.getEnd()).line + 1 > MAX_FILE_LINES);
    expect(long.map(([f, sf]) => `${relative(SRC, f)}: ${sf.getLineAndCharacterOfPosition(sf.getEnd()).line + 1} lines`)).toEqual([]);
  });

  it(`no function is over ${MAX_FUNCTION_LINES} lines, register switches aside`, () => {
    expect(longFunctions()).toEqual([]);
  });
});
