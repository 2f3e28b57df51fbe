/**
 * The gateway as the bench runs it: src/ transpiled to JavaScript (esbuild, one file per module,
 * no bundling, names kept for the CPU profile) into .tmp/bench-build-<pid>/ inside the repo (so
 * node_modules and ../package.json resolve as from dist/). Takes well under a second, and does
 * not depend on the type check passing. BENCH_GATEWAY=tsx runs src/server.ts through tsx instead.
 */
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { mkdir, readdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { REPO } from './sim-child.js';

let built: Promise<{ entry: string[]; dir: string }> | undefined;

async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await tsFiles(p)));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** node arguments that start the gateway's server.ts */
export function gatewayEntry(): Promise<{ entry: string[]; dir: string }> {
  if (process.env.BENCH_GATEWAY === 'tsx') return Promise.resolve({ entry: ['--import', 'tsx', path.join(REPO, 'src/server.ts')], dir: '' });
  built ??= (async () => {
    const dir = path.join(REPO, '.tmp', `bench-build-${process.pid}`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await build({
      entryPoints: await tsFiles(path.join(REPO, 'src')),
      outbase: REPO,
      outdir: dir,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      bundle: false,
      sourcemap: false,
      logLevel: 'error',
    });
    await symlink(path.join(REPO, 'package.json'), path.join(dir, 'package.json'));
    // synchronous: an 'exit' handler cannot wait for a promise
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    return { entry: [path.join(dir, 'src/server.js')], dir };
  })();
  return built;
}

export async function removeBuild(): Promise<void> {
  if (!built) return;
  const { dir } = await built;
  if (dir) await rm(dir, { recursive: true, force: true });
}
