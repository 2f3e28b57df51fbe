/**
 * A quick look at the agent side of churn alone (not part of `npm run bench`): an AgentPool with
 * agent.maxOpen 100 in this process, BENCH_C (default 64) loops pinging random VMs of BENCH_VMS
 * (default 10000) simulated ones (BENCH_MAX_OPEN: another maxOpen; ≥ BENCH_VMS: no idle release either) (simulator child process), BENCH_MS (default 3000) per round,
 * BENCH_ROUNDS (default 3); prints pings/s and this process's CPU µs per ping (no HTTP, so the
 * connect + sync + ping + close path stands out). --ab REV: each round also runs the src/ of git
 * revision REV, order alternating.
 *
 *   npx tsx bench/quick-churn-pool.ts [--ab REV]
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { gatewayEntry } from './lib/build.js';
import { buildRevision } from './lib/revision.js';
import { startSimChild } from './lib/sim-child.js';

const ms = Number(process.env.BENCH_MS ?? 3000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const count = Number(process.env.BENCH_VMS ?? 10000);
const conc = Number(process.env.BENCH_C ?? 64);
/** BENCH_MAX_OPEN=10000 (with BENCH_VMS 10000): every channel stays open, the reference churn is compared with */
const maxOpen = Number(process.env.BENCH_MAX_OPEN ?? 100);
const abAt = process.argv.indexOf('--ab');
const abRev = abAt > 0 ? process.argv[abAt + 1] : undefined;

type PoolModule = typeof import('../src/pool/pool.js');
type CommandsModule = typeof import('../src/qga/commands.js');

/** the pool and catalog modules of a build whose server.js is `serverJs` */
async function load(serverJs: string): Promise<{ pool: PoolModule; commands: CommandsModule }> {
  const src = path.dirname(serverJs);
  const pool = (await import(pathToFileURL(path.join(src, 'pool/pool.js')).href)) as PoolModule;
  const commands = (await import(pathToFileURL(path.join(src, 'qga/commands.js')).href)) as CommandsModule;
  return { pool, commands };
}

async function main(): Promise<void> {
  const sim = await startSimChild(count);
  const variants: Array<[string, { pool: PoolModule; commands: CommandsModule }]> = [['working tree', await load((await gatewayEntry()).entry.at(-1) as string)]];
  if (abRev) variants.unshift([`A ${abRev}`, await load((await buildRevision(abRev)).at(-1) as string)]);
  const endpoints = new Map(sim.vms.map((v) => [v.name, v.endpoint]));
  const names = sim.vms.map((v) => v.name);
  const cpuPer = new Map<string, number[]>();
  try {
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 1 ? [...variants].reverse() : variants;
      for (const [name, m] of order) {
        const pool = new m.pool.AgentPool({
          resolve: (vm) => endpoints.get(vm),
          maxOpen,
          channelOptions: { catalog: (c) => m.commands.COMMANDS[c], timeouts: m.commands.DEFAULT_TIMEOUTS, idleReleaseMs: maxOpen >= count ? 0 : 2000 },
        });
        const runFor = async (durationMs: number): Promise<{ ok: number; failed: number }> => {
          const until = performance.now() + durationMs;
          let ok = 0;
          let failed = 0;
          await Promise.all(
            Array.from({ length: conc }, async () => {
              while (performance.now() < until) {
                const vm = names[Math.floor(Math.random() * names.length)];
                try {
                  await pool.execute(vm, 'guest-ping');
                  ok++;
                } catch {
                  failed++;
                }
              }
            }),
          );
          return { ok, failed };
        };
        await runFor(1000);
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        const { ok, failed } = await runFor(ms);
        const wall = performance.now() - t0;
        const cpu = process.cpuUsage(cpu0);
        const per = (cpu.user + cpu.system) / Math.max(1, ok);
        cpuPer.set(name, [...(cpuPer.get(name) ?? []), per]);
        console.log(`round ${r + 1} ${name}: ${((ok / wall) * 1000).toFixed(0)} pings/s, ${per.toFixed(1)} µs CPU per ping, ${failed} failed`);
        await pool.close();
      }
    }
    for (const [name, v] of cpuPer) console.log(`${name}: CPU µs per ping ${v.map((x) => x.toFixed(1)).join(', ')}`);
  } finally {
    await sim.stop();
  }
  process.exit(0);
}

void main();
