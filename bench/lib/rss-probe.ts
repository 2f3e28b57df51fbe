/**
 * Child process for the pool bench: a whole gateway (buildApp) with the simulator's VMs, its RSS
 * and heap measured before and after opening one channel per VM (connect + sync + guest-info +
 * one guest-ping each). Run with --expose-gc. Prints one JSON line (ProbeResult) on stdout.
 *
 *   node --expose-gc --import tsx bench/lib/rss-probe.ts <vms.yaml> <concurrency>
 */
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import type { Endpoint } from '../../src/qga/types.js';
import { makeApp } from '../../test/helpers/app.js';
import { closedLoop } from './stats.js';

export interface ProbeResult {
  vms: number;
  open: number;
  ready: number;
  openMs: number;
  errors: Record<string, number>;
  before: { rss: number; heapUsed: number; external: number };
  after: { rss: number; heapUsed: number; external: number };
}

const gc = (globalThis as { gc?: () => void }).gc;

async function settle(): Promise<{ rss: number; heapUsed: number; external: number }> {
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 50));
  }
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external + m.arrayBuffers };
}

async function main(): Promise<void> {
  const [file, conc] = process.argv.slice(2);
  const { vms } = YAML.parse(await readFile(file, 'utf8')) as { vms: Array<{ name: string; endpoint: Endpoint }> };
  const app = await makeApp({ vms, config: { agent: { idleReleaseMs: 0, maxOpen: vms.length } } });
  try {
    const pool = app.services.pool;
    // one warm-up round trip on a throwaway name-free path: JIT and lazy modules loaded before "before"
    await pool.execute(vms[0].name, 'guest-ping');
    await pool.remove(vms[0].name);
    const before = await settle();
    const run = await closedLoop({
      concurrency: Number(conc ?? 64),
      durationMs: 60_000,
      maxOps: vms.length,
      op: (i) => pool.execute(vms[i].name, 'guest-ping'),
    });
    const after = await settle();
    const s = pool.stats();
    const result: ProbeResult = {
      vms: vms.length,
      open: s.open,
      ready: s.ready,
      openMs: run.elapsedMs,
      errors: Object.fromEntries(run.errors),
      before,
      after,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await app.close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`rss-probe: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
