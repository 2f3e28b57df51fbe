/**
 * AgentPool at fleet scale: 1000 simulated VMs (simulator in a child process), guest-ping to
 * pseudo-random VMs from 64 concurrent callers.
 *   (a) maxOpen 1000: every VM keeps its socket once opened; commands/s and pool stats.
 *   (b) maxOpen 100: most commands find their VM without a socket, so the pool makes the least
 *       recently used idle channel let go and connects (connect + 0xFF sync + guest-info) first.
 *   (c) a whole gateway process (buildApp, in its own child) before/after opening 1000 channels:
 *       RSS and heap per open channel.
 * (a) and (b) alternate for BENCH_POOL_ROUNDS rounds (default 2), BENCH_POOL_MS (default 4000) each.
 */
import os from 'node:os';
import type { AgentPool, PoolStateEvent } from '../src/pool/pool.js';
import { makePool } from './lib/channels.js';
import type { ProbeResult } from './lib/rss-probe.js';
import { runJsonChild, startSimChild, type SimChild } from './lib/sim-child.js';
import { CpuMeter, closedLoop, fmtCpu, fmtErrors, rssOf, fmtMs, fmtRate, fmtRatio, median, table } from './lib/stats.js';
import type { BenchSection } from './section.js';

const VMS = 1000;
const CONCURRENCY = 64;
const MAX_OPS = 1_000_000;

/** mulberry32: the same pseudo-random VM sequence for every run and both pools */
function vmPicker(n: number, seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
}

interface PoolRun {
  label: 'a' | 'b';
  maxOpen: number;
  openMs: number;
  perSec: number;
  p50: number;
  p99: number;
  ops: number;
  connects: number;
  releases: number;
  maxOpenSeen: number;
  open: number;
  ready: number;
  errors: Map<string, number>;
  /** [gateway (this process), simulator] share of one core during the timed run */
  cpu: number[];
  elapsedMs: number;
}

const cpuUsPerCmd = (x: PoolRun): number => (x.cpu[0] * x.elapsedMs * 1000) / Math.max(1, x.ops);

async function runPool(sim: SimChild, label: 'a' | 'b', maxOpen: number, ms: number, seed: number): Promise<PoolRun> {
  const names = sim.vms.map((v) => v.name);
  const pool: AgentPool = makePool(sim.vms, maxOpen);
  let connects = 0;
  let releases = 0;
  pool.on('state', (e: PoolStateEvent) => {
    if (e.state === 'connecting') connects++;
    else if (e.state === 'idle' && e.prev === 'ready') releases++;
  });
  let maxOpenSeen = 0;
  const sampler = setInterval(() => (maxOpenSeen = Math.max(maxOpenSeen, pool.stats().open)), 100);
  try {
    // first touch of every VM (a: opens all 1000; b: opens them 100 at a time)
    const opened = await closedLoop({ concurrency: CONCURRENCY, durationMs: 60_000, maxOps: VMS, op: (i) => pool.execute(names[i], 'guest-ping') });
    if (opened.errors.size) throw new Error(`opening channels failed: ${fmtErrors(opened.errors)}`);
    connects = 0;
    releases = 0;
    const pick = vmPicker(VMS, seed);
    const meter = new CpuMeter([sim.pid]);
    await meter.start();
    const run = await closedLoop({ concurrency: CONCURRENCY, durationMs: ms, maxOps: MAX_OPS, op: () => pool.execute(names[pick()], 'guest-ping') });
    const cpu = await meter.stop();
    const s = pool.stats();
    maxOpenSeen = Math.max(maxOpenSeen, s.open);
    return {
      label, maxOpen, openMs: opened.elapsedMs, perSec: run.perSec, p50: run.lat.quantile(0.5), p99: run.lat.quantile(0.99),
      ops: run.ops, connects, releases, maxOpenSeen, open: s.open, ready: s.ready, errors: run.errors, cpu, elapsedMs: run.elapsedMs,
    };
  } finally {
    clearInterval(sampler);
    await pool.close(); // the simulated agents serve one client at a time: let go before the next pool
  }
}

export default async function poolBench(): Promise<BenchSection> {
  const rounds = Number(process.env.BENCH_POOL_ROUNDS ?? 2);
  const ms = Number(process.env.BENCH_POOL_MS ?? 4000);
  const load = os.loadavg()[0];
  const sim = await startSimChild(VMS);
  const runs: PoolRun[] = [];
  let probe: ProbeResult;
  let simRss: number | undefined;
  try {
    probe = await runJsonChild<ProbeResult>('bench/lib/rss-probe.ts', [sim.configFile, String(CONCURRENCY)], ['--expose-gc']);
    for (let r = 0; r < rounds; r++) {
      runs.push(await runPool(sim, 'a', VMS, ms, 1 + r));
      runs.push(await runPool(sim, 'b', 100, ms, 1 + r));
    }
    simRss = await rssOf(sim.pid);
  } finally {
    await sim.stop();
  }

  const a = runs.filter((x) => x.label === 'a');
  const b = runs.filter((x) => x.label === 'b');
  const ratios = b.map((x, i) => x.perSec / a[i].perSec);
  const rows = runs.map((x, i) => [
    Math.floor(i / 2) + 1,
    `(${x.label}) maxOpen ${x.maxOpen}`,
    `${(x.openMs / 1000).toFixed(2)} s`,
    fmtRate(x.perSec),
    fmtMs(x.p50),
    fmtMs(x.p99),
    `${x.connects.toLocaleString('en-US')} (${(x.connects / Math.max(1, x.ops)).toFixed(2)}/cmd)`,
    x.releases.toLocaleString('en-US'),
    `${x.open} / ${x.ready} / ${x.maxOpenSeen}`,
    `${fmtCpu(x.cpu[0])} / ${fmtCpu(x.cpu[1])}`,
    cpuUsPerCmd(x).toFixed(0),
    fmtErrors(x.errors),
  ]);
  const MB = 1024 * 1024;
  const dRss = probe.after.rss - probe.before.rss;
  const dHeap = probe.after.heapUsed - probe.before.heapUsed;
  const dExt = probe.after.external - probe.before.external;
  const perCh = (bytes: number) => (bytes / Math.max(1, probe.open) / 1024).toFixed(1);
  const markdown = [
    `${VMS} simulated VMs (one simulator child process, unix sockets), guest-ping to pseudo-random VMs from ${CONCURRENCY} ` +
      `concurrent callers straight into AgentPool.execute (no HTTP), ${(ms / 1000).toFixed(1)} s per run, (a) and (b) alternating ` +
      `with fresh pools. "First touch" pings every VM once (connect + 0xFF sync + guest-info + ping) before the timed run. ` +
      `Connects and LRU releases are counted from the pool's state events during the timed run only. CPU is each ` +
      `process's user + system time over the timed run as a share of one core (the machine has ${os.cpus().length} cores; ` +
      `1-min load average ${load.toFixed(1)} when the section started, so the processes compete for CPU).`,
    '',
    table(
      ['round', 'pool', 'first touch of 1000 VMs', 'commands/s', 'p50', 'p99', 'connects (timed run)', 'LRU releases', 'open / ready at end / max open seen', 'CPU gateway / sim', 'gateway CPU µs/cmd', 'errors'],
      rows,
    ),
    '',
    `- **(a) all ${VMS} channels open**: median **${fmtRate(median(a.map((x) => x.perSec)))} commands/s**; pool stats at the end: ` +
      `${a[a.length - 1].open} open, ${a[a.length - 1].ready} ready.`,
    `- **(b) maxOpen 100 (LRU churn)**: median **${fmtRate(median(b.map((x) => x.perSec)))} commands/s**, ` +
      `${median(b.map((x) => x.connects / Math.max(1, x.ops))).toFixed(2)} reconnects per command; ` +
      `ratio (b)/(a) = **${fmtRatio(median(ratios))}** (rounds: ${ratios.map(fmtRatio).join(', ')}); ` +
      `gateway CPU per command (b)/(a) = **${fmtRatio(median(b.map(cpuUsPerCmd)) / median(a.map(cpuUsPerCmd)))}**.`,
    `- **(c) memory of a gateway process** (buildApp, own child process, --expose-gc, measured after GC): ` +
      `opening ${probe.open} channels (${(probe.openMs / 1000).toFixed(2)} s, ${fmtRate((probe.open / probe.openMs) * 1000)} opens/s${
        Object.keys(probe.errors).length ? `, errors ${JSON.stringify(probe.errors)}` : ''
      }) took RSS from ${(probe.before.rss / MB).toFixed(1)} MB to ${(probe.after.rss / MB).toFixed(1)} MB: ` +
      `**+${(dRss / MB).toFixed(1)} MB, ${perCh(dRss)} KB per open channel** ` +
      `(JS heap +${(dHeap / MB).toFixed(1)} MB = ${perCh(dHeap)} KB/channel; external + array buffers +${(dExt / MB).toFixed(1)} MB). ` +
      `For scale: the simulator process serving the ${VMS} VMs had ${simRss ? `${(simRss / MB).toFixed(0)} MB` : 'n/a'} RSS at the end.`,
    '',
    'Under churn every miss costs a unix-socket connect, a sync round trip and a guest-info round trip before the ping, ' +
      'and the LRU scan walks all channels; the ratio (b)/(a) is that price. RSS includes heap the GC has not returned to ' +
      'the OS, so the per-channel figure is an upper bound on what one open channel keeps.',
  ].join('\n');
  return { title: 'Pool: 1000 VMs, LRU churn, memory per channel', markdown };
}
