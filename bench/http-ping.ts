/**
 * Issue 14 item 1: GET /v1/vms/{vm}/ping through the gateway PROCESS (src/server.ts, log level
 * info) loaded by autocannon (its own process), beside a Fastify hello-world (its own process)
 * under the same autocannon load and a raw-socket client (its own process) pinging the same
 * agents. Per round: hello-world c=64; gateway c=64 over the VMs, c=1 on one VM (and, on the
 * simulator, c=64 on an unknown VM: 404s, the price of a rejection); then, with the gateway
 * stopped (a real qemu-ga serves one client at a time), the raw client at c=64 and c=1.
 */
import type { Endpoint } from '../src/qga/types.js';
import { cannon, rawLoad, startGateway, startHello, auth, TOKENS, warmMs, type CannonResult, type HelloProc, type Measured, type RawResult } from './lib/procs.js';
import { fmtMs, fmtRate, fmtRatio, median, table } from './lib/stats.js';
import { check, type BenchSection, type Check } from './section.js';

export interface Target {
  /** "simulator" / "real qemu-ga" */
  name: string;
  vms: Array<{ name: string; endpoint: Endpoint }>;
  note: string;
}

export interface HttpRound {
  hello: Measured<CannonResult>;
  gw64: Measured<CannonResult>;
  gw1: Measured<CannonResult>;
  rej404?: Measured<CannonResult>;
  raw64: Measured<RawResult>;
  raw1: Measured<RawResult>;
}

const perSec = (m: Measured<CannonResult>): number => (m.result.ok / m.wallMs) * 1000;
/** CPU µs of the watched server per 2xx (or per response for rejections) */
const cpuPer = (m: Measured<CannonResult>, n = m.result.ok): number => (m.cpu[0] * 1e6) / Math.max(1, n);
const responses = (m: Measured<CannonResult>): number => Object.values(m.result.status).reduce((a, b) => a + b, 0);

export async function measureHttp(target: Target, rounds: number, ms: number, hello: HelloProc): Promise<HttpRound[]> {
  const paths = target.vms.map((v) => `/v1/vms/${v.name}/ping`);
  const headers = auth(TOKENS.load);
  const out: HttpRound[] = [];
  // the hello-world gets the same untimed warm-up as each fresh gateway, once (it is not restarted)
  if (ms >= 1000) await cannon({ base: hello.base, paths: ['/ping'], connections: 64, durationMs: warmMs(ms) }, []);
  for (let r = 0; r < rounds; r++) {
    const helloRun = await cannon({ base: hello.base, paths: ['/ping'], connections: 64, durationMs: ms }, [hello.pid]);
    const gw = await startGateway({ vms: target.vms });
    let gw64: Measured<CannonResult>;
    let gw1: Measured<CannonResult>;
    let rej404: Measured<CannonResult> | undefined;
    try {
      // warm-up, not timed: every channel opened, the JIT warm
      if (ms >= 1000) await cannon({ base: gw.base, paths, connections: 64, durationMs: warmMs(ms), headers }, []);
      gw64 = await cannon({ base: gw.base, paths, connections: 64, durationMs: ms, headers }, [gw.pid]);
      gw1 = await cannon({ base: gw.base, paths: [paths[0]], connections: 1, durationMs: ms, headers }, [gw.pid]);
      if (target.name === 'simulator') {
        rej404 = await cannon({ base: gw.base, paths: ['/v1/vms/no-such-vm/ping'], connections: 64, durationMs: ms, headers }, [gw.pid]);
      }
    } finally {
      await gw.stop();
    }
    const eps = target.vms.map((v) => v.endpoint);
    const raw64 = await rawLoad(eps, 64, ms);
    const raw1 = await rawLoad([eps[0]], 1, ms);
    out.push({ hello: helloRun, gw64, gw1, rej404, raw64, raw1 });
  }
  return out;
}

export function httpSection(target: Target, rs: HttpRound[], ms: number): BenchSection {
  const vsHello = rs.map((r) => perSec(r.gw64) / perSec(r.hello));
  const vsRaw = rs.map((r) => perSec(r.gw64) / r.raw64.result.perSec);
  const cpuVsHello = rs.map((r) => cpuPer(r.gw64) / cpuPer(r.hello));
  const c1Extra = rs.map((r) => (r.gw1.result.p50Ms - r.raw1.result.p50Ms) * 1000);
  const rej = rs.filter((r) => r.rej404).map((r) => cpuPer(r.rej404!, responses(r.rej404!)) / cpuPer(r.gw64));
  const rows = rs.map((r, i) => [
    i + 1,
    `${fmtRate(perSec(r.hello))} (${cpuPer(r.hello).toFixed(0)} µs)`,
    `${fmtRate(perSec(r.gw64))} (${cpuPer(r.gw64).toFixed(0)} µs) p50 ${fmtMs(r.gw64.result.p50Ms)} p99 ${fmtMs(r.gw64.result.p99Ms)}`,
    `${fmtRate(r.raw64.result.perSec)} (client ${((r.raw64.result.cpuS * 1e6) / r.raw64.result.pings).toFixed(0)} µs)`,
    `${fmtRate(perSec(r.gw1))} p50 ${fmtMs(r.gw1.result.p50Ms)}`,
    `${fmtRate(r.raw1.result.perSec)} p50 ${fmtMs(r.raw1.result.p50Ms)}`,
    r.rej404 ? `${fmtRate((responses(r.rej404) / r.rej404.wallMs) * 1000)} (${cpuPer(r.rej404, responses(r.rej404)).toFixed(0)} µs)` : '—',
    fmtRatio(vsHello[i]),
    fmtRatio(vsRaw[i]),
    fmtRatio(cpuVsHello[i]),
  ]);
  const rawFigures = rs.flatMap((r, i) =>
    (
      [
        ['hello-world c=64', r.hello],
        ['gateway c=64', r.gw64],
        ['gateway c=1', r.gw1],
        ...(r.rej404 ? ([['gateway 404 c=64', r.rej404]] as const) : []),
      ] as const
    ).map(([what, m]) => [
      i + 1,
      what,
      m.result.total,
      m.result.reqPerSecAvg.toFixed(0),
      Object.entries(m.result.statusCodeStats).map(([k, v]) => `${k}×${v}`).join(' '),
      m.result.errors,
      m.result.timeouts,
      `${m.result.latencyMs.p50} / ${m.result.latencyMs.p99} / ${m.result.latencyMs.mean.toFixed(2)}`,
      (m.cpu[0] * 100 / (m.wallMs / 1000)).toFixed(0) + ' %',
      (m.result.cpuS * 100 / (m.wallMs / 1000)).toFixed(0) + ' %',
    ]),
  );
  const t = target.name;
  const checks: Check[] = [
    check('1', `${t}: HTTP ping c=64 / hello-world`, median(vsHello), '≥', 0.5),
    { item: '1', what: `${t}: HTTP ping c=64 / raw socket client`, value: fmtRatio(median(vsRaw)), target: 'reported' },
    check('1', `${t}: gateway CPU per request / hello-world's`, median(cpuVsHello), '≤', 2),
    check('1', `${t}: c=1 p50 gateway − raw (µs)`, median(c1Extra), '≤', 150, (x) => x.toFixed(0)),
  ];
  if (rej.length) checks.push(check('2', `${t}: CPU of a rejection (404) / served ping`, median(rej), '≤', 0.25));
  const markdown = [
    `${target.note} Gateway: its own process (src/server.ts transpiled to JS by esbuild, run by node; shipped defaults, log level info to a file, ` +
      `bearer token), restarted each round. Load: autocannon in its own process, keep-alive, ${(ms / 1000).toFixed(1)} s per ` +
      `measurement after a ${(warmMs(ms) / 1000).toFixed(1)} s warm-up (the hello-world's once, before round 1). Raw: one socket per agent in its own process (one ping in flight per socket). ` +
      `Per cell: ok/s (server CPU µs per response); ratios per round, the checks take their median.`,
    '',
    table(['round', 'hello-world c=64', 'gateway c=64', 'raw c=64', 'gateway c=1', 'raw c=1', 'gateway 404s c=64', 'gw/hello', 'gw/raw', 'CPU gw/hello'], rows),
    '',
    `Medians: gateway/hello ${fmtRatio(median(vsHello))} (${vsHello.map(fmtRatio).join(', ')}), gateway/raw ${fmtRatio(median(vsRaw))} ` +
      `(${vsRaw.map(fmtRatio).join(', ')}), CPU gateway/hello ${fmtRatio(median(cpuVsHello))} (${cpuVsHello.map(fmtRatio).join(', ')}), ` +
      `c=1 p50 extra ${median(c1Extra).toFixed(0)} µs (${c1Extra.map((x) => x.toFixed(0)).join(', ')})` +
      (rej.length ? `, 404 CPU / served ${fmtRatio(median(rej))} (${rej.map(fmtRatio).join(', ')})` : '') +
      '.',
    '',
    'autocannon raw figures (total requests, its req/s average, status counts, errors, timeouts, its latency p50/p99/mean in ms — ' +
      'whole milliseconds — and CPU share of one core of the server / of autocannon):',
    '',
    table(['round', 'run', 'requests', 'req/s avg', 'status', 'errors', 'timeouts', 'latency p50/p99/mean ms', 'server CPU', 'autocannon CPU'], rawFigures),
  ].join('\n');
  return { title: `HTTP GET /v1/vms/{vm}/ping: gateway vs hello-world vs raw (${t})`, markdown, checks };
}
