/**
 * A quick look at the agent layers' own CPU per ping (not part of `npm run bench`): in this
 * process, BENCH_C (default 64) loops ping BENCH_VMS (default 64) simulated VMs (simulator child
 * process) through, in turn: Channel.execute, AgentPool.execute, AgentService.call (with an abort
 * signal, as the HTTP routes pass one), each for BENCH_MS (default 2000) per round, BENCH_ROUNDS
 * (default 3) rounds; prints this process's CPU µs per ping for each. The pool's metrics listeners
 * (pool/metrics.ts) are attached, as in the gateway.
 *
 *   npx tsx bench/quick-layers.ts
 */
import { AgentPool } from '../src/pool/pool.js';
import { createMetrics } from '../src/pool/metrics.js';
import { AgentService } from '../src/agent/service.js';
import { VmRegistry } from '../src/registry/registry.js';
import { COMMANDS, DEFAULT_TIMEOUTS } from '../src/qga/commands.js';
import { startSimChild } from './lib/sim-child.js';
import { median } from './lib/stats.js';

const ms = Number(process.env.BENCH_MS ?? 2000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const count = Number(process.env.BENCH_VMS ?? 64);
const conc = Number(process.env.BENCH_C ?? 64);

async function main(): Promise<void> {
  const sim = await startSimChild(count);
  const registry = new VmRegistry({ vms: sim.vms, registry: { allowApiRegistration: false, directories: [], allowedSocketRoots: [], allowedTcpEndpoints: [] } } as unknown as ConstructorParameters<typeof VmRegistry>[0]);
  const pool = new AgentPool({
    resolve: (vm) => registry.resolve(vm),
    maxOpen: count,
    channelOptions: { catalog: (name) => COMMANDS[name], timeouts: { ...DEFAULT_TIMEOUTS }, idleReleaseMs: 0 },
  });
  createMetrics(pool);
  const service = new AgentService(pool, registry);
  const names = sim.vms.map((v) => v.name);
  // one signal per loop, as one per HTTP connection
  const signals = Array.from({ length: conc }, () => new AbortController().signal);
  const modes: Array<[string, (vm: string, i: number) => Promise<unknown>]> = [
    ['Channel.execute', (vm) => pool.channel(vm).execute('guest-ping')],
    ['AgentPool.execute', (vm) => pool.execute(vm, 'guest-ping')],
    ['AgentPool.execute + signal', (vm, i) => pool.execute(vm, 'guest-ping', undefined, { signal: signals[i] })],
    ['AgentService.call', (vm, i) => service.call(vm, 'guest-ping', undefined, { signal: signals[i] })],
    // a read with the capability check and the read coalescer (nothing to share: one loop per VM)
    ['osinfo AgentPool.execute + signal', (vm, i) => pool.execute(vm, 'guest-get-osinfo', undefined, { signal: signals[i] })],
    ['osinfo ReadCoalescer.run + AgentPool.execute', (vm, i) => service.reads.run(vm, 'guest-get-osinfo', undefined, { signal: signals[i] }, (o) => pool.execute(vm, 'guest-get-osinfo', undefined, o))],
    ['osinfo AgentService.call', (vm, i) => service.call(vm, 'guest-get-osinfo', undefined, { signal: signals[i] })],
  ];
  // BENCH_ONLY=<part of a mode's name>: only that mode (e.g. under --cpu-prof)
  const only = process.env.BENCH_ONLY;
  if (only) modes.splice(0, modes.length, ...modes.filter(([name]) => name.includes(only)));
  const results = new Map<string, number[]>();
  try {
    await Promise.all(names.map((vm) => pool.execute(vm, 'guest-ping')));
    for (let r = 0; r < rounds + 1; r++) {
      for (const [name, fn] of modes) {
        let n = 0;
        let stop = false;
        const t0 = process.cpuUsage();
        const w0 = performance.now();
        const timer = setTimeout(() => (stop = true), ms);
        await Promise.all(
          Array.from({ length: conc }, async (_, i) => {
            const vm = names[i % names.length];
            while (!stop) {
              await fn(vm, i);
              n++;
            }
          }),
        );
        clearTimeout(timer);
        const u = process.cpuUsage(t0);
        const wall = performance.now() - w0;
        if (r === 0) continue; // warm-up round
        const per = (u.user + u.system) / n;
        results.set(name, [...(results.get(name) ?? []), per]);
        console.log(`round ${r} ${name}: ${((n / wall) * 1000).toFixed(0)} pings/s, ${per.toFixed(2)} µs CPU per ping`);
      }
    }
    for (const [name, v] of results) console.log(`median ${name}: ${median(v).toFixed(2)} µs CPU per ping (${v.map((x) => x.toFixed(2)).join(', ')})`);
  } finally {
    await pool.close();
    await sim.stop();
  }
  process.exit(0);
}

void main();
