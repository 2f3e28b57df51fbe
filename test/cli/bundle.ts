/**
 * The CLI's tests start it dozens of times as a child process; under tsx each start transpiles the
 * sources again (seconds on a loaded machine). So src/ is transpiled once per test file with
 * esbuild (tsx's own; file by file, no bundling) into `<repo>/.tmp/cli-<pid>-<id>/dist/`, beside
 * links to package.json and config/: the same layout as the built package, so every module finds
 * what it reads relative to itself (package.json, config/default.yaml) and node_modules above.
 */
import { mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface CliBundle {
  /** src/cli.ts, transpiled */
  cli: string;
  /** src/server.ts (the old entry), transpiled */
  server: string;
  remove(): void;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

export function bundleCli(): CliBundle {
  const dir = path.join(ROOT, '.tmp', `cli-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(dir, { recursive: true });
  buildSync({ entryPoints: sources(path.join(ROOT, 'src')), outdir: path.join(dir, 'dist'), outbase: path.join(ROOT, 'src'), platform: 'node', format: 'esm', target: 'node20', logLevel: 'error' });
  for (const name of ['package.json', 'config']) symlinkSync(path.join(ROOT, name), path.join(dir, name));
  return { cli: path.join(dir, 'dist', 'cli.js'), server: path.join(dir, 'dist', 'server.js'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}
