/**
 * Imports run one way, down the layers of ../shared/DESIGN.md, and never in a circle.
 *
 * Every `.ts` file under `src/` is parsed with TypeScript's own parser and every module reference
 * is read from the syntax tree: `import`, `import type`, `export … from`, `import x = require()`,
 * dynamic `import()`, `require()` and type-level `import('…').T`. Relative specifiers are resolved
 * to files (`./x.js` → `./x.ts`, `./dir` → `./dir/index.ts`); package specifiers are not ours.
 * Type-only imports count like any other: a type lives in the layer that owns it.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Lowest first. A file may import from its own tier or a lower one, never a higher one. */
const TIERS: { tier: number; name: string; dirs: string[]; files?: string[] }[] = [
  { tier: 0, name: 'util', dirs: ['util'], files: ['errors.ts'] },
  { tier: 1, name: 'config', dirs: ['config'] },
  { tier: 2, name: 'qga', dirs: ['qga'] },
  { tier: 3, name: 'store/registry', dirs: ['store', 'registry'] },
  { tier: 4, name: 'pool', dirs: ['pool'] },
  { tier: 5, name: 'agent', dirs: ['agent'] },
  { tier: 6, name: 'services', dirs: ['freeze', 'exec', 'files', 'cluster'] },
  { tier: 7, name: 'http', dirs: ['http'] },
  // the command line (src/cli.ts and src/server.ts are its entries) sits with the root files
  { tier: 8, name: 'root', dirs: ['cli'] },
];
/** app.ts, gateway.ts, server.ts and any other file directly in src/ */
const ROOT_TIER = { tier: 8, name: 'root' };

interface Tier {
  tier: number;
  name: string;
}

/** the tier of a path relative to src/ (posix separators); undefined for a directory not in the table */
function tierOf(rel: string): Tier | undefined {
  const parts = rel.split('/');
  if (parts.length === 1) {
    const t = TIERS.find((x) => x.files?.includes(rel));
    return t ? { tier: t.tier, name: t.name } : ROOT_TIER;
  }
  const t = TIERS.find((x) => x.dirs.includes(parts[0]!));
  return t ? { tier: t.tier, name: t.name } : undefined;
}

interface Edge {
  /** paths relative to src/, posix separators */
  from: string;
  to: string;
  specifier: string;
  typeOnly: boolean;
}

interface Graph {
  files: string[];
  edges: Edge[];
  /** relative specifiers that name no file */
  unresolved: { from: string; specifier: string }[];
}

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...tsFiles(full));
    else if (entry.isFile() && /\.[cm]?ts$/.test(entry.name) && !entry.name.endsWith('.d.ts')) out.push(full);
  }
  return out;
}

/** every module specifier in a file, with whether it only brings in types */
function moduleReferences(fileName: string, text: string): { specifier: string; typeOnly: boolean }[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const refs: { specifier: string; typeOnly: boolean }[] = [];
  const add = (node: ts.Node | undefined, typeOnly: boolean): void => {
    if (node && ts.isStringLiteralLike(node)) refs.push({ specifier: node.text, typeOnly });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const typeOnly =
        !!clause &&
        (clause.isTypeOnly ||
          (!clause.name &&
            !!clause.namedBindings &&
            ts.isNamedImports(clause.namedBindings) &&
            clause.namedBindings.elements.length > 0 &&
            clause.namedBindings.elements.every((e) => e.isTypeOnly)));
      add(node.moduleSpecifier, typeOnly);
    } else if (ts.isExportDeclaration(node)) {
      add(node.moduleSpecifier, node.isTypeOnly);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node.moduleReference.expression, node.isTypeOnly);
    } else if (ts.isImportTypeNode(node)) {
      const arg = node.argument;
      if (ts.isLiteralTypeNode(arg)) add(arg.literal, true);
    } else if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const isImport = callee.kind === ts.SyntaxKind.ImportKeyword;
      const isRequire = ts.isIdentifier(callee) && callee.text === 'require';
      if ((isImport || isRequire) && node.arguments.length >= 1) add(node.arguments[0], false);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return refs;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** the file a relative specifier names, the way NodeNext resolution finds a .ts source */
function resolveRelative(fromFile: string, specifier: string): string | undefined {
  const base = path.resolve(path.dirname(fromFile), specifier);
  const candidates: string[] = [];
  const ext = /\.([cm]?)js$/.exec(base);
  if (ext) candidates.push(base.slice(0, -ext[0].length) + `.${ext[1]}ts`);
  if (/\.[cm]?ts$/.test(base)) candidates.push(base);
  candidates.push(`${base}.ts`, path.join(base, 'index.ts'));
  return candidates.find(isFile);
}

function buildGraph(srcDir: string): Graph {
  const files = tsFiles(srcDir).sort();
  const rel = (p: string): string => path.relative(srcDir, p).split(path.sep).join('/');
  const edges: Edge[] = [];
  const unresolved: Graph['unresolved'] = [];
  for (const file of files) {
    for (const { specifier, typeOnly } of moduleReferences(file, readFileSync(file, 'utf8'))) {
      if (!specifier.startsWith('.')) continue; // a package (node:*, fastify, …)
      const target = resolveRelative(file, specifier);
      if (target === undefined) unresolved.push({ from: rel(file), specifier });
      else edges.push({ from: rel(file), to: rel(target), specifier, typeOnly });
    }
  }
  return { files: files.map(rel), edges, unresolved };
}

/** `from → to (tier a name → tier b name)` for every import that reaches up */
function upwardImports(graph: Graph): string[] {
  const out: string[] = [];
  for (const e of graph.edges) {
    const a = tierOf(e.from);
    const b = tierOf(e.to);
    if (!a || !b) continue; // reported by the unknown-layer check
    if (b.tier > a.tier) {
      out.push(
        `src/${e.from} → src/${e.to} (tier ${a.tier} ${a.name} → tier ${b.tier} ${b.name})${e.typeOnly ? ' [type import]' : ''}`,
      );
    }
  }
  return [...new Set(out)];
}

/**
 * Strongly connected components (Tarjan) with more than one file, or a file importing itself;
 * each described by its files and the imports that close the circle.
 */
function importCycles(graph: Graph): string[] {
  const next = new Map<string, Set<string>>(graph.files.map((f) => [f, new Set<string>()]));
  for (const e of graph.edges) {
    if (!next.has(e.from)) next.set(e.from, new Set());
    if (!next.has(e.to)) next.set(e.to, new Set());
    next.get(e.from)!.add(e.to);
  }
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v)!) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      components.push(scc.sort());
    }
  };
  for (const v of [...next.keys()].sort()) if (!index.has(v)) connect(v);

  const out: string[] = [];
  for (const scc of components) {
    const members = new Set(scc);
    const inner = [...new Set(graph.edges.filter((e) => members.has(e.from) && members.has(e.to)).map((e) => `src/${e.from} → src/${e.to}`))];
    if (scc.length > 1 || inner.length > 0) {
      out.push(`cycle of ${scc.length} file(s): ${scc.map((f) => `src/${f}`).join(', ')}; imports: ${inner.join('; ')}`);
    }
  }
  return out.sort();
}

function unknownLayers(graph: Graph): string[] {
  return graph.files.filter((f) => tierOf(f) === undefined).map((f) => `src/${f}`);
}

describe('layers: imports run down the layers of DESIGN.md, without cycles', () => {
  const graph = buildGraph(path.join(REPO, 'src'));

  it('scanned the whole product', () => {
    expect(graph.files.length).toBeGreaterThan(50);
    expect(graph.edges.length).toBeGreaterThan(100);
    // the layers the table names really exist, so a rename cannot quietly empty a tier
    for (const dir of ['util', 'config', 'qga', 'store', 'registry', 'pool', 'agent', 'freeze', 'http']) {
      expect(graph.files.some((f) => f.startsWith(`${dir}/`)), `no file under src/${dir}/`).toBe(true);
    }
  });

  it('every file belongs to a known layer', () => {
    expect(unknownLayers(graph), 'files in a directory the layer table does not know: add it to TIERS').toEqual([]);
  });

  it('every relative import names a file', () => {
    expect(graph.unresolved).toEqual([]);
  });

  it('no file imports from a higher layer (type imports included)', () => {
    expect(upwardImports(graph), 'imports that reach up a layer (from → to):').toEqual([]);
  });

  it('no import cycles', () => {
    expect(importCycles(graph), 'import cycles (strongly connected components):').toEqual([]);
  });
});

describe('layers: the checker itself', () => {
  it('flags upward imports of every kind and cycles, and lets downward ones pass', () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'layers-'));
    const write = (rel: string, lines: string[]): void => {
      const full = path.join(root, 'src', rel);
      mkdirSync(path.dirname(full), { recursive: true });
      writeFileSync(full, lines.join('\n') + '\n');
    };
    try {
      write('util/json.ts', ["import type { JsonValue } from '../qga/types.js';", 'export const x = 1;']);
      write('qga/types.ts', ['export type JsonValue = string;']);
      write('qga/channel.ts', [
        "import { x } from '../util/json.js';", // down: fine
        "import type { Lease } from '../store';", // directory index, up
        "// import { nope } from '../http/app.js';", // a comment is not an import
      ]);
      write('store/index.ts', ["export * from './types.js';"]);
      write('store/types.ts', ['export interface Lease { a: number }', "export type P = import('../pool/pool.js').Pool;"]);
      write('pool/pool.ts', ['export class Pool {}', "const m = () => import('../qga/channel.js');"]);
      write('freeze/a.ts', ["import { b } from './b.js';", 'export const a = 1;']);
      write('freeze/b.ts', ["export { a as b } from './a.js';"]);
      write('exec/self.ts', ["import * as me from './self.js';"]);
      write('http/routes/x.ts', ["import { a } from '../../freeze/a.js';", "import { y } from './missing.js';"]);
      write('gateway.ts', ["import { Pool } from './pool/pool.js';", "import ts from 'typescript';"]);
      write('stray/file.ts', ['export {};']);

      const graph = buildGraph(path.join(root, 'src'));
      expect(graph.files).toHaveLength(12);
      expect(upwardImports(graph)).toEqual([
        'src/qga/channel.ts → src/store/index.ts (tier 2 qga → tier 3 store/registry) [type import]',
        'src/store/types.ts → src/pool/pool.ts (tier 3 store/registry → tier 4 pool) [type import]',
        'src/util/json.ts → src/qga/types.ts (tier 0 util → tier 2 qga) [type import]',
      ]);
      expect(importCycles(graph)).toEqual([
        'cycle of 1 file(s): src/exec/self.ts; imports: src/exec/self.ts → src/exec/self.ts',
        'cycle of 2 file(s): src/freeze/a.ts, src/freeze/b.ts; imports: src/freeze/a.ts → src/freeze/b.ts; src/freeze/b.ts → src/freeze/a.ts',
        // through a directory index and a dynamic import()
        'cycle of 4 file(s): src/pool/pool.ts, src/qga/channel.ts, src/store/index.ts, src/store/types.ts; imports: src/pool/pool.ts → src/qga/channel.ts; src/qga/channel.ts → src/store/index.ts; src/store/index.ts → src/store/types.ts; src/store/types.ts → src/pool/pool.ts',
      ]);
      expect(graph.unresolved).toEqual([{ from: 'http/routes/x.ts', specifier: './missing.js' }]);
      expect(unknownLayers(graph)).toEqual(['src/stray/file.ts']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('knows the tiers of DESIGN.md', () => {
    const tiers = (files: string[]): (number | undefined)[] => files.map((f) => tierOf(f)?.tier);
    expect(tiers(['util/json.ts', 'errors.ts', 'config/load.ts', 'qga/session.ts', 'store/redis.ts', 'registry/registry.ts'])).toEqual([0, 0, 1, 2, 3, 3]);
    expect(tiers(['pool/pool.ts', 'agent/service.ts', 'freeze/service.ts', 'exec/x.ts', 'files/x.ts', 'cluster/x.ts'])).toEqual([4, 5, 6, 6, 6, 6]);
    expect(tiers(['http/plugins/auth.ts', 'app.ts', 'gateway.ts', 'server.ts', 'other.ts', 'sim/x.ts'])).toEqual([7, 8, 8, 8, 8, undefined]);
  });
});
