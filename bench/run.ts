/**
 * `npm run bench [-- name ...]`: runs every benchmark section in bench/ (each `bench/<name>.ts`
 * with a default export returning a BenchSection), in file-name order or as named, and writes
 * bench/report.md. Benchmarks are measurements, not tests: nothing here asserts a speed.
 *
 * Adding a section: create bench/<name>.ts exporting
 *   `export default async function (): Promise<BenchSection>` (type from ./section.js).
 */
import { readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BenchSection } from './section.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const NOT_SECTIONS = new Set(['run.ts', 'section.ts']);

async function sectionFiles(only: string[]): Promise<string[]> {
  const all = (await readdir(here)).filter((f) => f.endsWith('.ts') && !f.startsWith('_') && !NOT_SECTIONS.has(f)).sort();
  if (only.length === 0) return all;
  const wanted = only.map((n) => (n.endsWith('.ts') ? n : `${n}.ts`));
  const missing = wanted.filter((w) => !all.includes(w));
  if (missing.length) throw new Error(`no such bench section: ${missing.join(', ')} (have: ${all.join(', ')})`);
  return wanted;
}

async function main(): Promise<void> {
  const files = await sectionFiles(process.argv.slice(2));
  const sections: string[] = [];
  for (const f of files) {
    process.stderr.write(`bench: ${f} …\n`);
    const t0 = performance.now();
    const mod = (await import(pathToFileURL(path.join(here, f)).href)) as { default?: () => Promise<BenchSection> };
    if (typeof mod.default !== 'function') throw new Error(`bench/${f} has no default export`);
    const s = await mod.default();
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    sections.push(`## ${s.title}\n\n${s.markdown.trim()}\n\n_section ran in ${secs} s (bench/${f})_\n`);
    process.stderr.write(`bench: ${f} done in ${secs} s\n`);
  }
  const cpus = os.cpus();
  const header = [
    '# qga-gateway benchmark report',
    '',
    `Generated ${new Date().toISOString()} by \`npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}\`.`,
    `Node ${process.version}, ${os.type()} ${os.release()}, ${cpus.length} × ${cpus[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM.`,
    'Figures come from a shared, noisy machine: compare numbers within one report, not across reports.',
    '',
  ].join('\n');
  const out = path.join(here, 'report.md');
  await writeFile(out, `${header}\n${sections.join('\n')}`);
  process.stderr.write(`bench: wrote ${out}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
