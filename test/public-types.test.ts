// Every type the public API names is exported from the package: the check
// runs over the declarations tsc emits for src/index.ts (so inferred types
// count too), and lists each type that an export's public surface refers to
// but that `virtio-tap` does not export, with who refers to it.
import { dirname, resolve } from 'node:path';

import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const INDEX = resolve(ROOT, 'src', 'index.ts');
const OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  strict: true,
  skipLibCheck: true,
  types: ['node'],
};

/** src/**.ts -> its emitted .d.ts text, in memory. */
function emitDeclarations(): Map<string, string> {
  const out = new Map<string, string>();
  const program = ts.createProgram([INDEX], { ...OPTIONS, declaration: true, emitDeclarationOnly: true, outDir: resolve(ROOT, 'src') });
  program.emit(undefined, (file, text) => out.set(resolve(file), text));
  return out;
}

/** A program over the emitted declarations, the rest (lib, @types) from disk. */
function declarationProgram(files: Map<string, string>): ts.Program {
  const host = ts.createCompilerHost(OPTIONS);
  const { getSourceFile, fileExists, readFile } = host;
  host.fileExists = (f) => files.has(resolve(f)) || (!resolve(f).startsWith(resolve(ROOT, 'src')) && fileExists.call(host, f));
  host.readFile = (f) => files.get(resolve(f)) ?? readFile.call(host, f);
  host.getSourceFile = (f, lang) => {
    const text = files.get(resolve(f));
    return text !== undefined ? ts.createSourceFile(f, text, lang, true) : getSourceFile.call(host, f, lang);
  };
  return ts.createProgram([resolve(ROOT, 'src', 'index.d.ts')], OPTIONS, host);
}

/**
 * Private and protected members (the drivers' and rings' shared bases are not
 * for subclassing outside), and what is marked @internal (hooks between the
 * package's own parts), are not public.
 */
function isPrivate(node: ts.Node): boolean {
  if (ts.getJSDocTags(node).some((t) => t.tagName.text === 'internal')) return true;
  const mods = ts.canHaveModifiers(node) ? (ts.getModifiers(node) ?? []) : [];
  if (mods.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword || m.kind === ts.SyntaxKind.ProtectedKeyword)) return true;
  return ts.isPropertyDeclaration(node) && ts.isPrivateIdentifier(node.name);
}

/** "Type (file) <- Export" for each type an export refers to that the package does not export. */
function unexportedReferences(): string[] {
  const program = declarationProgram(emitDeclarations());
  const checker = program.getTypeChecker();
  const index = program.getSourceFile(resolve(ROOT, 'src', 'index.d.ts'))!;
  const resolveAlias = (s: ts.Symbol) => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s);
  const exported = new Set(checker.getExportsOfModule(checker.getSymbolAtLocation(index)!).map(resolveAlias));
  // Namespace exports (`export * as net`) export their members too.
  for (const s of [...exported]) if (s.flags & ts.SymbolFlags.ValueModule) for (const m of checker.getExportsOfModule(s)) exported.add(resolveAlias(m));
  const found = new Set<string>();
  for (const symbol of exported) {
    for (const decl of symbol.declarations ?? []) {
      if (ts.isSourceFile(decl)) continue;
      const visit = (node: ts.Node): void => {
        if (isPrivate(node)) return;
        let name: ts.Node | undefined;
        if (ts.isTypeReferenceNode(node)) name = node.typeName;
        else if (ts.isExpressionWithTypeArguments(node)) name = node.expression;
        else if (ts.isImportTypeNode(node)) name = node.qualifier;
        else if (ts.isTypeQueryNode(node)) name = node.exprName;
        const target = name !== undefined ? checker.getSymbolAtLocation(name) : undefined;
        if (target !== undefined) {
          const real = resolveAlias(target);
          const file = real.declarations?.[0]?.getSourceFile().fileName ?? '';
          const own = resolve(file).startsWith(resolve(ROOT, 'src')) && !(real.flags & ts.SymbolFlags.TypeParameter);
          if (own && !exported.has(real)) found.add(`${real.name} (${dirname(file).split('/src/')[1] ?? ''}) <- ${symbol.name}`);
        }
        ts.forEachChild(node, visit);
      };
      visit(decl);
    }
  }
  return [...found].sort();
}

describe('the public API', () => {
  it('exports every type its exports refer to', () => {
    expect(unexportedReferences()).toEqual([]);
  }, 60_000);
});
