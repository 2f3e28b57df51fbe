// The load generator of `npm run bench`: autocannon, through its API, in ITS OWN process (never
// the gateway's, never the bench orchestrator's event loop). Plain JavaScript so that it starts
// fast and carries no TypeScript loader.
//
//   node bench/lib/cannon.mjs '<spec as JSON>'
//
// spec: { base, paths?: string[], pathsFile?: string (one path a line), order: 'seq' | 'random',
//         connections, durationMs, headers?: object }
// Prints `go` when the load starts, `done` when autocannon finished, then one JSON line: the
// autocannon result's raw figures plus latency percentiles of the 2xx responses at µs
// resolution (autocannon's own histogram counts whole milliseconds) and this process's CPU.
import autocannon from 'autocannon';
import { readFileSync } from 'node:fs';

const spec = JSON.parse(process.argv[2]);
const paths = spec.paths ?? readFileSync(spec.pathsFile, 'utf8').split('\n').filter(Boolean);
if (paths.length === 0) throw new Error('cannon: no paths');

// mulberry32, seeded: the same pseudo-random VM sequence in every run
let seed = 0x9e3779b9;
const rand = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
let next = 0;
const pick = spec.order === 'random' ? () => paths[Math.floor(rand() * paths.length)] : () => paths[next++ % paths.length];

const lat = new Float64Array(4_000_000);
let n = 0;
const status = {};

const cpu0 = process.cpuUsage();
const t0 = performance.now();
process.stdout.write('go\n');
const instance = autocannon(
  {
    url: spec.base,
    connections: spec.connections,
    duration: spec.durationMs / 1000,
    headers: spec.headers ?? {},
    requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: pick() }) }],
  },
  (err, result) => {
    const elapsedMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    process.stdout.write('done\n');
    if (err) {
      process.stdout.write(`${JSON.stringify({ error: String(err) })}\n`);
      process.exit(1);
    }
    const xs = Float64Array.from(lat.subarray(0, n)).sort();
    const q = (p) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] : NaN);
    const out = {
      elapsedMs,
      durationS: result.duration,
      connections: result.connections,
      total: result.requests.total,
      reqPerSecAvg: result.requests.average,
      statusCodeStats: Object.fromEntries(Object.entries(result.statusCodeStats).map(([k, v]) => [k, v.count])),
      status,
      ok: status['200'] ?? 0,
      non2xx: result.non2xx,
      errors: result.errors,
      timeouts: result.timeouts,
      latencyMs: { p50: result.latency.p50, p99: result.latency.p99, mean: result.latency.average },
      p50Ms: q(0.5),
      p99Ms: q(0.99),
      cpuS: (cpu.user + cpu.system) / 1e6,
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  },
);
instance.on('response', (_client, statusCode, _bytes, responseTime) => {
  status[statusCode] = (status[statusCode] ?? 0) + 1;
  if (statusCode >= 200 && statusCode < 300 && n < lat.length) lat[n++] = responseTime;
});
