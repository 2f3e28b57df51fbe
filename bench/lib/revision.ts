/** src/ of a git revision, transpiled for A/B runs (bench/quick-http.ts, bench/quick-churn.ts --ab REV). */
import { execFileSync } from 'node:child_process';
import { mkdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { build } from 'esbuild';
import { REPO } from './sim-child.js';

/** src/ of a git revision, transpiled as bench/lib/build.ts does, into .tmp/quick-ab-<pid>/ */
export async function buildRevision(rev: string): Promise<string[]> {
  const root = path.join(REPO, '.tmp', `quick-ab-${process.pid}-${rev.replace(/[^A-Za-z0-9]/g, '')}`);
  await rm(root, { recursive: true, force: true });
  const srcDir = path.join(root, 'tree');
  await mkdir(srcDir, { recursive: true });
  execFileSync('sh', ['-c', `git archive ${rev} src | tar -x -C ${JSON.stringify(srcDir)}`], { cwd: REPO });
  const files = execFileSync('find', [path.join(srcDir, 'src'), '-name', '*.ts', '!', '-name', '*.d.ts'], { encoding: 'utf8' }).trim().split('\n');
  const out = path.join(root, 'out');
  await build({ entryPoints: files, outbase: srcDir, outdir: out, format: 'esm', platform: 'node', target: 'node20', bundle: false, logLevel: 'error' });
  await symlink(path.join(REPO, 'package.json'), path.join(out, 'package.json'));
  process.once('exit', () => execFileSync('rm', ['-rf', root]));
  return [path.join(out, 'src/server.js')];
}
