/**
 * A small autocannon-like HTTP load generator, run as its own process so that it does not share
 * the gateway's event loop: `concurrency` keep-alive connections (node:http Agent), each sending
 * its next GET as soon as the previous response ended, over `paths` in turn, until `durationMs`
 * passed or `maxRequests` were sent. Prints `go` when the load starts and one JSON line
 * (LoadResult) at the end.
 *
 *   node --import tsx bench/lib/load-child.ts '<LoadSpec as JSON>'
 */
import http from 'node:http';
import { Latencies } from './stats.js';

export interface LoadSpec {
  base: string;
  paths: string[];
  concurrency: number;
  durationMs: number;
  maxRequests: number;
}

export interface LoadResult {
  sent: number;
  /** HTTP status → responses */
  status: Record<string, number>;
  /** socket-level failures (no HTTP response) */
  failures: number;
  elapsedMs: number;
  /** latency of 200 responses, ms */
  p50: number;
  p99: number;
  /** this load generator's CPU share of one core */
  cpu: number;
}

function get(agent: http.Agent, url: URL, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ agent, host: url.hostname, port: url.port, path }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]) as LoadSpec;
  const url = new URL(spec.base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec.concurrency });
  const lat = new Latencies(spec.maxRequests);
  const status: Record<string, number> = {};
  let failures = 0;
  let sent = 0;
  // open every connection first, so connection set-up is not in the timed run
  await Promise.all(Array.from({ length: spec.concurrency }, (_, i) => get(agent, url, spec.paths[i % spec.paths.length]).catch(() => 0)));
  process.stdout.write('go\n');
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + spec.durationMs;
  const worker = async (): Promise<void> => {
    while (sent < spec.maxRequests && performance.now() < end) {
      const path = spec.paths[sent++ % spec.paths.length];
      const s = performance.now();
      try {
        const code = await get(agent, url, path);
        status[code] = (status[code] ?? 0) + 1;
        if (code === 200) lat.add(performance.now() - s);
      } catch {
        failures++;
      }
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, worker));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  agent.destroy();
  const result: LoadResult = {
    sent, status, failures, elapsedMs, p50: lat.quantile(0.5), p99: lat.quantile(0.99),
    cpu: (cpu.user + cpu.system) / 1000 / elapsedMs,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`load-child: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
