/**
 * GET /v1/vms/{vm}/ping through a real listening gateway (127.0.0.1:0, this process) loaded by a
 * hand-written keep-alive load generator in its own process (bench/lib/load-child.ts), with 100
 * simulated VMs in a third process. Compared with direct AgentPool.execute pings made in this
 * process with the same concurrency, in the same run, alternating. Then 100 and 200 concurrent
 * callers on ONE VM (the channel serializes them): throughput, the deepest queue seen, and how
 * many were refused with 429 QUEUE_FULL once callers outnumber agent.maxQueue.
 *
 * Env: BENCH_HTTP_ROUNDS (default 2), BENCH_HTTP_MS (default 4000) per run.
 */
import os from 'node:os';
import type { PoolCommandEvent } from '../src/pool/pool.js';
import { listen, makeApp } from '../test/helpers/app.js';
import { runLoad, type LoadResult } from './lib/load.js';
import { startSimChild } from './lib/sim-child.js';
import { CpuMeter, closedLoop, fmtCpu, fmtErrors, fmtMs, fmtRate, fmtRatio, median, table } from './lib/stats.js';
import type { BenchSection } from './section.js';

const VMS = 100;
const CONCURRENCY = 32;
const MAX_QUEUE = 128;
const MAX_REQUESTS = 1_000_000;

interface Run {
  kind: 'HTTP' | 'direct pool.execute';
  perSec: number;
  p50: number;
  p99: number;
  /** share of one core: [gateway, simulator, load generator] */
  cpu: number[];
  gatewayCpuUs: number;
  notes: string;
}

const ok = (r: LoadResult): number => r.status['200'] ?? 0;
const statusText = (r: LoadResult): string =>
  Object.entries(r.status).map(([k, v]) => `${k} × ${v.toLocaleString('en-US')}`).join(', ') + (r.failures ? `, socket failures × ${r.failures}` : '');

export default async function httpBench(): Promise<BenchSection> {
  const rounds = Number(process.env.BENCH_HTTP_ROUNDS ?? 2);
  const ms = Number(process.env.BENCH_HTTP_MS ?? 4000);
  const load = os.loadavg()[0];
  const sim = await startSimChild(VMS);
  const app = await makeApp({ vms: sim.vms, config: { agent: { idleReleaseMs: 0, maxQueue: MAX_QUEUE } } });
  const names = sim.vms.map((v) => v.name);
  const pool = app.services.pool;
  try {
    const base = await listen(app);
    const pingPath = (vm: string) => `/v1/vms/${vm}/ping`;
    // open every channel and compile the route's serializer before anything is timed
    for (const vm of names) {
      const res = await fetch(`${base}${pingPath(vm)}`);
      if (res.status !== 200) throw new Error(`warm-up ping of ${vm}: HTTP ${res.status} ${await res.text()}`);
    }

    const meter = new CpuMeter([sim.pid]);
    const httpRun = async (): Promise<Run> => {
      let cpu: number[] = [];
      const r = await runLoad(
        { base, paths: names.map(pingPath), concurrency: CONCURRENCY, durationMs: ms, maxRequests: MAX_REQUESTS },
        { onGo: () => meter.start(), onDone: async () => void (cpu = await meter.stop()) },
      );
      const perSec = (ok(r) / r.elapsedMs) * 1000;
      return {
        kind: 'HTTP', perSec, p50: r.p50, p99: r.p99, cpu: [...cpu, r.cpu],
        gatewayCpuUs: (cpu[0] * 1e6) / perSec,
        notes: statusText(r),
      };
    };
    const directRun = async (): Promise<Run> => {
      await meter.start();
      const r = await closedLoop({ concurrency: CONCURRENCY, durationMs: ms, maxOps: MAX_REQUESTS, op: (i) => pool.execute(names[i % VMS], 'guest-ping') });
      const cpu = await meter.stop();
      return {
        kind: 'direct pool.execute', perSec: r.perSec, p50: r.lat.quantile(0.5), p99: r.lat.quantile(0.99), cpu,
        gatewayCpuUs: (cpu[0] * 1e6) / r.perSec,
        notes: `${r.ops.toLocaleString('en-US')} ok; errors: ${fmtErrors(r.errors)}`,
      };
    };
    const runs: Run[] = [];
    for (let i = 0; i < rounds; i++) {
      if (i % 2 === 0) runs.push(await httpRun(), await directRun());
      else runs.push(await directRun(), await httpRun());
    }

    // ONE VM, many callers: the channel has one command on the wire; the rest wait in its queue
    const oneVm = names[0];
    let maxQueued = 0;
    const onCommand = (e: PoolCommandEvent): void => {
      if (e.vm === oneVm) maxQueued = Math.max(maxQueued, pool.channel(oneVm).stats().queued);
    };
    pool.on('command', onCommand);
    const crowd: Array<{ callers: number; r: LoadResult; maxQueued: number }> = [];
    try {
      for (const callers of [100, 200]) {
        maxQueued = 0;
        const r = await runLoad(
          { base, paths: [pingPath(oneVm)], concurrency: callers, durationMs: ms, maxRequests: MAX_REQUESTS },
          { onGo: () => void (maxQueued = 0) },
        );
        crowd.push({ callers, r, maxQueued });
      }
    } finally {
      pool.off('command', onCommand);
    }

    const http = runs.filter((r) => r.kind === 'HTTP');
    const direct = runs.filter((r) => r.kind !== 'HTTP');
    const pairRatios = http.map((h, i) => h.perSec / direct[i].perSec);
    const cpuRatio = median(http.map((r) => r.gatewayCpuUs)) / median(direct.map((r) => r.gatewayCpuUs));
    const markdown = [
      `${VMS} simulated VMs (child process), gateway from buildApp listening on 127.0.0.1:0 in the bench process ` +
        `(log level silent, agent.maxQueue ${MAX_QUEUE}, channels opened before timing), load generator in a third process: ` +
        `${CONCURRENCY} keep-alive connections, each sending GET /v1/vms/{vm}/ping as soon as its previous response ended, ` +
        `VMs in turn. "direct" = the same pings through app.services.pool.execute from ${CONCURRENCY} in-process callers. ` +
        `${(ms / 1000).toFixed(1)} s per run, ${rounds} rounds alternating. CPU = share of one core over the run ` +
        `(${os.cpus().length} cores, 1-min load average ${load.toFixed(1)} at the start: everything competes).`,
      '',
      table(
        ['run', 'path', 'ok/s', 'p50', 'p99', 'CPU gateway / sim / load gen', 'gateway CPU µs per ping', 'responses'],
        runs.map((r, i) => [
          Math.floor(i / 2) + 1, r.kind, fmtRate(r.perSec), fmtMs(r.p50), fmtMs(r.p99),
          r.cpu.map(fmtCpu).join(' / '), r.gatewayCpuUs.toFixed(0), r.notes,
        ]),
      ),
      '',
      `- **HTTP, ${CONCURRENCY} connections, ${VMS} VMs**: median **${fmtRate(median(http.map((r) => r.perSec)))} req/s**, ` +
        `p50 ${fmtMs(median(http.map((r) => r.p50)))}, p99 ${fmtMs(median(http.map((r) => r.p99)))}.`,
      `- **direct pool.execute**: median **${fmtRate(median(direct.map((r) => r.perSec)))} pings/s**; ` +
        `HTTP / direct = **${fmtRatio(median(pairRatios))}** (rounds: ${pairRatios.map(fmtRatio).join(', ')}); ` +
        `gateway CPU per ping HTTP / direct = **${fmtRatio(cpuRatio)}**.`,
      '',
      `One VM (${oneVm}), N concurrent keep-alive callers, same gateway (agent.maxQueue ${MAX_QUEUE}: at most one command ` +
        `on the wire and ${MAX_QUEUE} waiting). The queue depth is read from the channel each time one of its commands settles.`,
      '',
      table(
        ['callers', 'ok/s', 'p50 (200s)', 'p99 (200s)', 'max queue depth seen', '429 QUEUE_FULL', 'responses'],
        crowd.map(({ callers, r, maxQueued: q }) => [
          callers, fmtRate((ok(r) / r.elapsedMs) * 1000), fmtMs(r.p50), fmtMs(r.p99), q,
          `${(r.status['429'] ?? 0).toLocaleString('en-US')} (${(((r.status['429'] ?? 0) / Math.max(1, r.sent)) * 100).toFixed(1)} % of responses)`,
          statusText(r),
        ]),
      ),
      '',
      `- With ${crowd[0].callers} callers (≤ maxQueue + 1) every request waits its turn and none is refused; the queue ` +
        `held up to ${crowd[0].maxQueued}. Per-VM throughput is one agent round trip at a time, so p50 ≈ queue depth × ` +
        `one round trip.`,
      `- With ${crowd[1].callers} callers the queue reached ${crowd[1].maxQueued} (its cap) and the surplus is answered ` +
        `429 at once (with Retry-After); the load generator ignores Retry-After and retries immediately, so the 429 count ` +
        `is a rate of refusals, not a count of callers. The served requests went from ` +
        `${fmtRate((ok(crowd[0].r) / crowd[0].r.elapsedMs) * 1000)} to ${fmtRate((ok(crowd[1].r) / crowd[1].r.elapsedMs) * 1000)} ok/s: ` +
        `each agent round trip of the one channel takes at least one event-loop turn, and every turn now also parses ` +
        `and refuses the retry storm.`,
    ].join('\n');
    return { title: 'HTTP: GET /v1/vms/{vm}/ping under load', markdown };
  } finally {
    await app.close();
    await sim.stop();
  }
}
