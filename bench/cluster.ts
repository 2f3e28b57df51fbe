/**
 * Issue 17 item 6: a FORWARDED ping's throughput against a LOCAL ping's, on the same entry node,
 * at 64 connections (autocannon in its own process). Two gateway processes in cluster mode on one
 * redis-server (test/helpers/cluster.ts: the real `serve` command, src transpiled once), each with
 * its own simulated VMs: node `a` serves a001…, node `c` serves c001…. Per round:
 *   local      GET /v1/vms/a…/ping through a     (a answers itself)
 *   forwarded  GET /v1/vms/c…/ping through a     (a forwards to c, which answers; X-Qga-Node: c)
 *   direct     GET /v1/vms/c…/ping through c     (for reference: what c alone does)
 * The target: forwarded / local ≥ 0.5 (median of the rounds). Every node, autocannon, the
 * simulators (in this process) and Redis share the machine's cores.
 *
 *   npx tsx bench/cluster.ts [--quick|--smoke]    this section alone, printed (markdown)
 *   npm run bench                                 part of the full report (bench/run.ts)
 */
import os from 'node:os';
import { ask, bearer, CLUSTER_TOKENS, startCluster, until } from '../test/helpers/cluster.js';
import { cannon, warmMs, type CannonResult, type Measured } from './lib/procs.js';
import { fmtMs, fmtRate, fmtRatio, median, table } from './lib/stats.js';
import { check, type BenchSection } from './section.js';

const perSec = (m: Measured<CannonResult>): number => (m.result.ok / m.wallMs) * 1000;
const cpuPer = (m: Measured<CannonResult>, i: number): number => (m.cpu[i] * 1e6) / Math.max(1, m.result.ok);

export async function clusterSection(rounds: number, ms: number, vmsPerNode: number): Promise<BenchSection> {
  const load0 = os.loadavg()[0];
  const names = (p: string) => Array.from({ length: vmsPerNode }, (_, i) => `${p}${String(i + 1).padStart(3, '0')}`);
  const cl = await startCluster({
    logLevel: 'info',
    logToFiles: true,
    nodes: [
      { id: 'a', vms: names('a') },
      { id: 'c', vms: names('c') },
    ],
    // the shipped heartbeat timing: nothing here tests failure
    heartbeatTtlMs: 10_000,
    heartbeatIntervalMs: 3_000,
  });
  try {
    const [a, c] = cl.nodes;
    await until(async () => {
      const r = await ask(a, 'GET', `/v1/vms/c001/ping`);
      return r.status === 200 && r.headers.get('x-qga-node') === 'c';
    }, 15_000, 'a to forward c001 to c');
    const headers = bearer(CLUSTER_TOKENS.reader);
    const local = names('a').map((n) => `/v1/vms/${n}/ping`);
    const remote = names('c').map((n) => `/v1/vms/${n}/ping`);
    const watch = [a.pid, c.pid];
    const out: Array<{ local: Measured<CannonResult>; fwd: Measured<CannonResult>; direct: Measured<CannonResult> }> = [];
    if (ms >= 1000) {
      // warm-up, once (the nodes run through every round), not timed: channels open, connections
      // between the nodes made, the optimizing compiler done with the hot paths (BENCH_WARM_MS)
      await cannon({ base: a.url, paths: local, connections: 64, durationMs: warmMs(ms), headers }, []);
      await cannon({ base: a.url, paths: remote, connections: 64, durationMs: warmMs(ms), headers }, []);
      await cannon({ base: c.url, paths: remote, connections: 64, durationMs: warmMs(ms), headers }, []);
    }
    for (let r = 0; r < rounds; r++) {
      // alternate the order each round, so neither always runs on a warmer machine
      const runLocal = () => cannon({ base: a.url, paths: local, connections: 64, durationMs: ms, headers }, watch);
      const runFwd = () => cannon({ base: a.url, paths: remote, connections: 64, durationMs: ms, headers }, watch);
      let l: Measured<CannonResult>;
      let f: Measured<CannonResult>;
      if (r % 2 === 0) {
        l = await runLocal();
        f = await runFwd();
      } else {
        f = await runFwd();
        l = await runLocal();
      }
      const d = await cannon({ base: c.url, paths: remote, connections: 64, durationMs: ms, headers }, watch);
      out.push({ local: l, fwd: f, direct: d });
    }
    const ratio = out.map((x) => perSec(x.fwd) / perSec(x.local));
    const vsDirect = out.map((x) => perSec(x.fwd) / perSec(x.direct));
    // What the ratio would be with a core per node: each node's CPU per response is then its bound,
    // node a's for a local ping, the busier node's for a forwarded one. Here every node, autocannon
    // and the simulators share the machine's cores, so the measured ratio is bound by their sum.
    const perCore = out.map((x) => cpuPer(x.local, 0) / Math.max(cpuPer(x.fwd, 0), cpuPer(x.fwd, 1)));
    const cell = (m: Measured<CannonResult>) =>
      `${fmtRate(perSec(m))} p50 ${fmtMs(m.result.p50Ms)} p99 ${fmtMs(m.result.p99Ms)} (a ${cpuPer(m, 0).toFixed(0)} µs, c ${cpuPer(m, 1).toFixed(0)} µs)`;
    const rows = out.map((x, i) => [i + 1, cell(x.local), cell(x.fwd), cell(x.direct), fmtRatio(ratio[i]), fmtRatio(vsDirect[i])]);
    const statuses = out.flatMap((x, i) =>
      (
        [
          ['local via a', x.local],
          ['forwarded a → c', x.fwd],
          ['direct on c', x.direct],
        ] as const
      ).map(([what, m]) => [i + 1, what, m.result.total, Object.entries(m.result.statusCodeStats).map(([k, v]) => `${k}×${v}`).join(' '), m.result.errors, m.result.timeouts]),
    );
    const markdown = [
      `Two gateway processes in cluster mode (test/helpers/cluster.ts: \`qga-gateway serve\`, src transpiled by esbuild, log level info to a file, ` +
        `store on one redis-server, bearer token), ${vmsPerNode} simulated VMs each (simulators in the bench process). ` +
        `autocannon in its own process, c=64, keep-alive, ${(ms / 1000).toFixed(1)} s per measurement` +
        (ms >= 1000 ? ` after a ${(warmMs(ms) / 1000).toFixed(1)} s warm-up of each path (once; the nodes run through every round)` : '') +
        '; local and forwarded alternate their order each round. ' +
        'Per cell: ok/s, latency p50/p99, and CPU µs per response of node a and of node c. ' +
        `1-min load average ${load0.toFixed(1)} at the start of this section, ${os.loadavg()[0].toFixed(1)} at its end.`,
      '',
      table(['round', 'local ping via a', 'forwarded ping a → c', 'direct ping on c', 'forwarded/local', 'forwarded/direct'], rows),
      '',
      `Median forwarded/local ${fmtRatio(median(ratio))} (${ratio.map(fmtRatio).join(', ')}); forwarded/direct ${fmtRatio(median(vsDirect))} (${vsDirect.map(fmtRatio).join(', ')}).`,
      '',
      `With a core per node (${os.cpus().length} here, shared by both nodes, autocannon and the simulators), the bound of each run would be ` +
        `its busiest node's CPU per response: node a's µs per local ping / the busier node's µs per forwarded ping = ` +
        `${fmtRatio(median(perCore))} (${perCore.map(fmtRatio).join(', ')}), derived from the CPU figures above, not measured as throughput.`,
      '',
      'autocannon figures (requests, status counts, errors, timeouts):',
      '',
      table(['round', 'run', 'requests', 'status', 'errors', 'timeouts'], statuses),
    ].join('\n');
    return {
      title: 'Cluster: forwarded ping vs local ping at c=64 (issue 17)',
      markdown,
      checks: [
        check('17', 'cluster: forwarded ping c=64 / local ping on the same node', median(ratio), '≥', 0.5),
        { item: '17', what: 'cluster: forwarded ping c=64 / the serving node asked directly', value: fmtRatio(median(vsDirect)), target: 'reported' },
        { item: '17', what: 'cluster: CPU per local ping on a / per forwarded ping on the busier node (the ratio with a core per node; derived)', value: fmtRatio(median(perCore)), target: 'reported' },
      ],
    };
  } finally {
    await cl.stop();
  }
}

/** bench/run.ts's settings for this section from its mode */
export function clusterSectionFor(mode: { smoke: boolean; quick: boolean; rounds: number; ms: number }): Promise<BenchSection> {
  return clusterSection(mode.rounds, mode.ms, mode.smoke ? 4 : 32);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const smoke = args.includes('--smoke');
  const quick = smoke || args.includes('--quick');
  const ms = Number(process.env.BENCH_MS ?? (smoke ? 300 : quick ? 1000 : 5000));
  const rounds = Number(process.env.BENCH_ROUNDS ?? (quick ? 1 : 3));
  clusterSectionFor({ smoke, quick, rounds, ms }).then(
    (s) => {
      const verdicts = (s.checks ?? []).map((x) => `${x.what}: ${x.value} (target ${x.target}) ${x.pass === undefined ? '' : x.pass ? 'PASS' : 'MISS'}`);
      process.stdout.write(`## ${s.title}\n\n${verdicts.join('\n')}\n\n${s.markdown}\n`);
      process.exit(0);
    },
    (e: unknown) => {
      process.stderr.write(`bench/cluster failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
