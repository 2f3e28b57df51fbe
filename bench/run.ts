/**
 * `npm run bench [-- name ...]`: runs every benchmark section in bench/ (each `bench/<name>.ts`
 * with a default export returning a BenchSection), in file-name order or as named. Each section's
 * result is kept in bench/results/<name>.md, and bench/report.md is assembled from all of them,
 * so running one section updates its part without dropping the others' last results.
 * Benchmarks are measurements, not tests: nothing here asserts a speed.
 *
 * Adding a section: create bench/<name>.ts exporting
 *   `export default async function (): Promise<BenchSection>` (type from ./section.js).
 */
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
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
  const resultsDir = path.join(here, 'results');
  await mkdir(resultsDir, { recursive: true });
  for (const f of files) {
    process.stderr.write(`bench: ${f} …\n`);
    const t0 = performance.now();
    const mod = (await import(pathToFileURL(path.join(here, f)).href)) as { default?: () => Promise<BenchSection> };
    if (typeof mod.default !== 'function') throw new Error(`bench/${f} has no default export`);
    const s = await mod.default();
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    const text = `## ${s.title}\n\n${s.markdown.trim()}\n\n_section ran in ${secs} s on ${new Date().toISOString()} (bench/${f})_\n`;
    await writeFile(path.join(resultsDir, f.replace(/\.ts$/, '.md')), text);
    process.stderr.write(`bench: ${f} done in ${secs} s\n`);
  }
  // Assemble from every section's latest result (sections whose bench file is gone are left out).
  const sections: string[] = [];
  for (const f of await sectionFiles([])) {
    const text = await readFile(path.join(resultsDir, f.replace(/\.ts$/, '.md')), 'utf8').catch(() => undefined);
    if (text) sections.push(text);
  }
  const cpus = os.cpus();
  const header = [
    '# qga-gateway benchmark report',
    '',
    `Assembled ${new Date().toISOString()} by \`npm run bench\` from bench/results/ (each section says when it ran).`,
    `Node ${process.version}, ${os.type()} ${os.release()}, ${cpus.length} × ${cpus[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM.`,
    'Figures come from a shared, noisy machine: compare numbers within one section, not across runs.',
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
