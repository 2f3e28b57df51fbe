/**
 * Processes of `npm run bench`: the gateway as its own process (src/server.ts with a generated
 * config, shipped defaults otherwise: log level info, logs to a file), the Fastify hello-world,
 * and the two load children (autocannon, raw socket). A load child prints `go` and `done`; the
 * CPU of the measured server process is read from /proc between the two.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Endpoint } from '../../src/qga/types.js';
import { gatewayEntry } from './build.js';
import { REPO, stopChild, waitExit } from './sim-child.js';
import { cpuSecondsOf, rssOf } from './stats.js';

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

function track(c: ChildProcess): ChildProcess {
  live.add(c);
  c.once('exit', () => live.delete(c));
  return c;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export const TOKENS = {
  load: 'bench-load-token-0123456789abcdef',
  storm: 'bench-storm-token-0123456789abcdef',
  admin: 'bench-admin-token-0123456789abcdef',
};
export const auth = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

export interface GatewayProc {
  base: string;
  pid: number;
  dir: string;
  /** spawn → first 200 from /healthz, ms */
  startMs: number;
  logFile: string;
  rss(): Promise<number | undefined>;
  cpu(): Promise<number>;
  /** SIGTERM and wait; returns the path of the CPU profile when started with cpuProf */
  stop(): Promise<string | undefined>;
}

function yamlEndpoint(ep: Endpoint): string {
  return ep.type === 'unix' ? `{ type: unix, path: ${JSON.stringify(ep.path)} }` : `{ type: tcp, host: ${ep.host}, port: ${ep.port} }`;
}

/**
 * The gateway as an operator runs it (node + src/server.ts, through tsx), with the VMs and three
 * tokens (load and storm: read; admin: all scopes). `agent` / `freeze` override the shipped
 * defaults only where a measurement needs it (maxOpen for churn, idle release for scale).
 */
export async function startGateway(opts: {
  vms: Array<{ name: string; endpoint: Endpoint }>;
  agent?: Record<string, number>;
  cpuProf?: boolean;
  readyTimeoutMs?: number;
  /** node arguments that start another build of the gateway (bench/quick-http.ts A/B runs) */
  entry?: string[];
  /** top-level YAML sections appended to the config (bench/quick-http.ts --vs-config) */
  extraYaml?: string;
}): Promise<GatewayProc> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-gw-'));
  const port = await freePort();
  const lines = [
    'server:',
    '  host: 127.0.0.1',
    `  port: ${port}`,
    'auth:',
    '  tokens:',
    `    - { name: bench-load, token: ${TOKENS.load}, scopes: [read] }`,
    `    - { name: bench-storm, token: ${TOKENS.storm}, scopes: [read] }`,
    `    - { name: bench-admin, token: ${TOKENS.admin}, scopes: [read, write, admin] }`,
    'freeze:',
    `  stateFile: ${JSON.stringify(path.join(dir, 'leases.json'))}`,
  ];
  if (opts.agent) {
    lines.push('agent:');
    for (const [k, v] of Object.entries(opts.agent)) lines.push(`  ${k}: ${v}`);
  }
  if (opts.extraYaml) lines.push(opts.extraYaml);
  lines.push('vms:');
  for (const v of opts.vms) lines.push(`  - { name: ${v.name}, endpoint: ${yamlEndpoint(v.endpoint)} }`);
  const configFile = path.join(dir, 'gateway.yaml');
  await writeFile(configFile, `${lines.join('\n')}\n`);
  const logFile = path.join(dir, 'gateway.log');
  const log = await open(logFile, 'w');
  const flags = opts.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
  const entry = opts.entry ?? (await gatewayEntry()).entry;
  const t0 = performance.now();
  const child = track(
    spawn(process.execPath, [...flags, ...entry, '--config', configFile], {
      cwd: REPO,
      stdio: ['ignore', log.fd, log.fd],
      env: { ...process.env, QGA_GATEWAY_STATE_DIR: dir, NODE_ENV: 'production' },
    }),
  );
  await log.close();
  const base = `http://127.0.0.1:${port}`;
  const deadline = t0 + (opts.readyTimeoutMs ?? 60_000);
  let startMs = Number.NaN;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited (${child.exitCode}): ${await readFile(logFile, 'utf8')}`);
    const ok = await fetch(`${base}/healthz`).then((r) => r.status === 200, () => false);
    if (ok) {
      startMs = performance.now() - t0;
      break;
    }
    if (performance.now() > deadline) {
      await stopChild(child);
      throw new Error(`gateway not ready: ${await readFile(logFile, 'utf8')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  // The probe's first sweep runs at start (agent.probeIntervalMs, on by default): for a hundred VMs
  // it takes ~13 s (8 at a time, a second apart). Measurements are of the steady state, so they
  // begin once every VM's agent state is known (not for the fleets of thousands, whose sections
  // measure start-up, memory and paging, not traffic: BENCH_SETTLE_MAX_VMS, 500, and 50 in the
  // smoke, whose figures mean nothing). startMs above is unaffected. BENCH_NO_SETTLE=1 skips the wait
  // (a gateway of an older revision, with no first sweep, would wait the full minute).
  const settleMax = Number(process.env.BENCH_SETTLE_MAX_VMS ?? 500);
  if (opts.vms.length <= settleMax && opts.agent?.probeIntervalMs !== 0 && !process.env.BENCH_NO_SETTLE) {
    const until = performance.now() + 60_000;
    for (;;) {
      const r = await fetch(`${base}/v1/vms?state=unknown&limit=1`, { headers: auth(TOKENS.admin) }).then((x) => x.json() as Promise<{ items?: unknown[] }>, () => ({ items: [1] }));
      if ((r.items ?? []).length === 0 || performance.now() > until) break;
      await new Promise((res) => setTimeout(res, 200));
    }
  }
  const pid = child.pid ?? -1;
  return {
    base,
    pid,
    dir,
    startMs,
    logFile,
    rss: () => rssOf(pid),
    cpu: () => cpuSecondsOf(pid),
    async stop() {
      child.kill('SIGTERM');
      if (!(await waitExit(child, 20_000))) await stopChild(child);
      const prof = opts.cpuProf ? (await readdir(dir)).find((f) => f.endsWith('.cpuprofile')) : undefined;
      if (!prof) await rm(dir, { recursive: true, force: true });
      return prof ? path.join(dir, prof) : undefined;
    },
  };
}

export interface HelloProc {
  base: string;
  pid: number;
  stop(): Promise<void>;
}

export async function startHello(): Promise<HelloProc> {
  const child = track(spawn(process.execPath, [path.join(REPO, 'bench/lib/hello.mjs')], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] }));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (c) => reject(new Error(`hello-world exited ${c}`)));
  });
  return { base: `http://127.0.0.1:${port}`, pid: child.pid ?? -1, stop: () => stopChild(child) };
}

export interface Measured<T> {
  result: T;
  /** CPU seconds of each watched pid between `go` and `done` */
  cpu: number[];
  /** wall time between `go` and `done`, ms */
  wallMs: number;
  /** process.hrtime at go / done, µs (the clock of V8's CPU profiles) */
  goUs: number;
  doneUs: number;
}

/** Run a load child (bench/lib/<file>.mjs) and read the watched processes' CPU between go and done. */
export async function runLoadChild<T>(file: string, spec: unknown, watch: number[]): Promise<Measured<T>> {
  const child = track(spawn(process.execPath, [path.join(REPO, 'bench/lib', file), JSON.stringify(spec)], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  let err = '';
  let cpu0: Promise<number[]> | undefined;
  let cpu1: Promise<number[]> | undefined;
  let t0 = 0;
  let t1 = 0;
  let go = 0n;
  let done = 0n;
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    if (!cpu0 && /^go$/m.test(out)) {
      go = process.hrtime.bigint();
      t0 = performance.now();
      cpu0 = Promise.all(watch.map(cpuSecondsOf));
    }
    if (!cpu1 && /^done$/m.test(out)) {
      done = process.hrtime.bigint();
      t1 = performance.now();
      cpu1 = Promise.all(watch.map(cpuSecondsOf));
    }
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  if (code !== 0 || !cpu0 || !cpu1) throw new Error(`${file} failed (${code}): ${err}${out}`);
  const a = await cpu0;
  const b = await cpu1;
  const last = out.trim().split('\n').pop() ?? '';
  return { result: JSON.parse(last) as T, cpu: b.map((x, i) => x - a[i]), wallMs: t1 - t0, goUs: Number(go / 1000n), doneUs: Number(done / 1000n) };
}

export interface CannonResult {
  elapsedMs: number;
  total: number;
  ok: number;
  status: Record<string, number>;
  statusCodeStats: Record<string, number>;
  non2xx: number;
  errors: number;
  timeouts: number;
  reqPerSecAvg: number;
  latencyMs: { p50: number; p99: number; mean: number };
  p50Ms: number;
  p99Ms: number;
  cpuS: number;
}

export interface RawResult {
  pings: number;
  elapsedMs: number;
  perSec: number;
  workers: number;
  sockets: number;
  p50Ms: number;
  p99Ms: number;
  cpuS: number;
}

export function cannon(spec: { base: string; paths?: string[]; pathsFile?: string; order?: 'seq' | 'random'; connections: number; durationMs: number; headers?: Record<string, string> }, watch: number[]): Promise<Measured<CannonResult>> {
  return runLoadChild<CannonResult>('cannon.mjs', { order: 'seq', ...spec }, watch);
}

export function rawLoad(endpoints: Endpoint[], connections: number, durationMs: number): Promise<Measured<RawResult>> {
  return runLoadChild<RawResult>('raw-load.mjs', { endpoints, connections, durationMs }, []);
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/**
 * Untimed load on each fresh gateway (and once on the hello-world) before it is measured: 3 s in a
 * full run (BENCH_WARM_MS), at most the measurement's length. With 1 s, the gateway's optimizing
 * compiler was still working through its hot functions during the measurement (≈ 10 % of the
 * gateway's CPU in a perf profile, ~100 functions compiled in the following 4 s): a gateway that
 * has run for a while does not pay that.
 */
export const warmMs = (ms: number): number => Math.min(Number(process.env.BENCH_WARM_MS ?? 3000), ms);

/** node flags: a full garbage collection on SIGUSR2 (the gateway does not use that signal), so the heap figures hold live objects only */
export const GC_ON_USR2 = ['--expose-gc', '--import', `data:text/javascript,process.on('SIGUSR2', () => globalThis.gc())`];

/** a full GC in a gateway started with GC_ON_USR2, and a moment for it to finish */
export async function fullGc(gw: GatewayProc): Promise<void> {
  process.kill(gw.pid, 'SIGUSR2');
  await new Promise((res) => setTimeout(res, 300));
}
