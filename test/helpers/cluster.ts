/**
 * A cluster of real gateway PROCESSES for the end-to-end cluster tests and bench/cluster.ts:
 * `node <transpiled>/dist/cli.js serve --config FILE` (the real command line, src/ transpiled once
 * per test file by test/cli/bundle.ts), each node on 127.0.0.1 with a port of its own, its own
 * config file (cluster.enabled, cluster.id, cluster.advertiseUrl = its real URL, one shared
 * cluster.secretFile, store.type redis on ONE real redis-server started here, bearer tokens, a short
 * heartbeat TTL) and its own simulated VMs (an in-process Simulator per node: the test can look at
 * a VM's state, e.g. whether it is frozen). A node can be SIGKILLed and started again on the same
 * port; readiness is polled on /readyz, never slept for.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import type { Endpoint } from '../../src/qga/types.js';
import type { SimAgent } from '../../sim/agent.js';
import { Simulator } from '../../sim/simulator.js';
import { bundleCli, ROOT, type CliBundle } from '../cli/bundle.js';
import { freePort } from '../e2e/freeze-gateways.js';
import { startRedis, type TestRedis } from './redis.js';

/** bearer tokens every node accepts (literal tokens in the test configs only) */
export const CLUSTER_TOKENS = {
  /** read, write, admin on every VM */
  ops: 'cluster-ops-token-0123456789abcdef',
  /** read only, every VM */
  reader: 'cluster-reader-token-0123456789abcdef',
  /** read only, VMs matching a* */
  aOnly: 'cluster-a-only-token-0123456789abcdef',
} as const;

export const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

export interface NodeSpec {
  id: string;
  /** simulated VMs this node serves (their names; the same name on two nodes is a conflict) */
  vms: string[];
  /** further VMs by endpoint (the real VM) */
  extraVms?: Array<{ name: string; endpoint: Endpoint }>;
}

export interface ClusterOptions {
  nodes: NodeSpec[];
  heartbeatTtlMs?: number;
  heartbeatIntervalMs?: number;
  /** more config, merged per top-level section over the defaults (e.g. freeze, log) */
  config?: Record<string, unknown>;
  /** simulated VMs on TCP, each configured on several nodes (a VM reachable from several nodes: one owner at a time) */
  tcpVms?: Array<{ name: string; nodes: string[] }>;
  /** log.level of every node (default info) */
  logLevel?: string;
  /** write each node's output to <dir>/<id>.log instead of piping it here (benchmarks: the piping would cost this process CPU) */
  logToFiles?: boolean;
  /** node flags of every node process (e.g. --cpu-prof --cpu-prof-dir=DIR to profile a bench) */
  nodeFlags?: string[];
}

export interface ClusterNode {
  id: string;
  url: string;
  port: number;
  configFile: string;
  sim: Simulator;
  vm: Record<string, SimAgent>;
  readonly pid: number;
  readonly running: boolean;
  /** what the process printed, last ~1 MiB (pino JSON lines) */
  log(): string;
  /** SIGKILL and wait for the exit; the simulated VMs stay up */
  kill(): Promise<void>;
  /** SIGTERM (a graceful stop) and wait for the exit; resolves with the exit code */
  terminate(): Promise<number | null>;
  /** SIGSTOP / SIGCONT: the process hangs with its sockets open (a hung host), then goes on */
  pause(): void;
  resume(): void;
  /** start the process again (same port, same config); resolves when /readyz answers 200 */
  start(): Promise<void>;
  /** ms from spawn to the first 200 of /readyz, of the last start */
  readonly startMs: number;
}

export interface TestCluster {
  redis: TestRedis;
  nodes: ClusterNode[];
  node(id: string): ClusterNode;
  /** the tcpVms, by name */
  shared: Record<string, SimAgent>;
  secretFile: string;
  dir: string;
  ttlMs: number;
  intervalMs: number;
  /** stop every node (SIGKILL), the simulators, Redis; remove the temp files */
  stop(): Promise<void>;
}

const LOG_CAP = 1 << 20;
const READY_TIMEOUT_MS = 60_000;
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = b && typeof b === 'object' && !Array.isArray(b) && v && typeof v === 'object' && !Array.isArray(v) ? { ...(b as object), ...(v as object) } : v;
  }
  return out;
}

export async function startCluster(opts: ClusterOptions): Promise<TestCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-cluster-'));
  const ttlMs = opts.heartbeatTtlMs ?? 1_500;
  const intervalMs = opts.heartbeatIntervalMs ?? Math.floor(ttlMs / 3);
  const secretFile = path.join(dir, 'cluster.secret');
  await writeFile(secretFile, `${'s3cr3t-'.repeat(8)}${process.pid}\n`, { mode: 0o600 });
  let bundle: CliBundle | undefined;
  let redis: TestRedis | undefined;
  const nodes: ClusterNode[] = [];
  const sims: Simulator[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.kill()));
    for (const s of sims) await s.close();
    await redis?.stop();
    bundle?.remove();
    await rm(dir, { recursive: true, force: true });
  };
  const shared: Record<string, SimAgent> = {};
  try {
    bundle = bundleCli();
    redis = await startRedis();
    if (opts.tcpVms?.length) {
      const simDir = path.join(dir, 'sim-shared');
      await mkdir(simDir);
      const sim = new Simulator({ dir: simDir });
      sims.push(sim);
      for (const t of opts.tcpVms) shared[t.name] = await sim.addVm({ name: t.name, tcp: true });
    }
    for (const spec of opts.nodes) {
      const simDir = path.join(dir, `sim-${spec.id}`);
      await mkdir(simDir);
      const sim = new Simulator({ dir: simDir });
      sims.push(sim);
      const vm: Record<string, SimAgent> = {};
      for (const name of spec.vms) vm[name] = await sim.addVm({ name });
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const config = merge(
        {
          server: { host: '127.0.0.1', port },
          log: { level: opts.logLevel ?? 'info' },
          auth: {
            tokens: [
              { name: 'ops', token: CLUSTER_TOKENS.ops, scopes: ['read', 'write', 'admin'] },
              { name: 'reader', token: CLUSTER_TOKENS.reader, scopes: ['read'] },
              { name: 'a-only', token: CLUSTER_TOKENS.aOnly, scopes: ['read'], vms: ['a*'] },
            ],
          },
          store: { type: 'redis', redisUrl: redis.url, keyPrefix: 'qc:', commandTimeoutMs: 1_000 },
          cluster: { enabled: true, id: spec.id, advertiseUrl: url, secretFile, heartbeatTtlMs: ttlMs, heartbeatIntervalMs: intervalMs },
          freeze: { sweepIntervalMs: 250 },
          // every simulated VM carries the label host=<node id> (for the cluster-wide list's label filter)
          vms: [
            ...spec.vms.map((name) => ({ name, endpoint: vm[name].endpoint, labels: { host: spec.id } })),
            ...(opts.tcpVms ?? []).filter((t) => t.nodes.includes(spec.id)).map((t) => ({ name: t.name, endpoint: shared[t.name].endpoint })),
            ...(spec.extraVms ?? []),
          ],
        },
        opts.config ?? {},
      );
      const configFile = path.join(dir, `${spec.id}.yaml`);
      await writeFile(configFile, stringify(config));
      nodes.push(makeNode(spec.id, url, port, configFile, path.join(dir, `${spec.id}.state`), bundle, sim, vm, opts.logToFiles ? path.join(dir, `${spec.id}.log`) : undefined, opts.nodeFlags ?? []));
    }
    await Promise.all(nodes.map((n) => n.start()));
  } catch (e) {
    await stopAll();
    throw e;
  }
  const r = redis;
  return {
    redis: r,
    nodes,
    node(id) {
      const n = nodes.find((x) => x.id === id);
      if (!n) throw new Error(`no node ${id}`);
      return n;
    },
    shared,
    secretFile,
    dir,
    ttlMs,
    intervalMs,
    stop: stopAll,
  };
}

function makeNode(
  id: string,
  url: string,
  port: number,
  configFile: string,
  stateDir: string,
  bundle: CliBundle,
  sim: Simulator,
  vm: Record<string, SimAgent>,
  logFile: string | undefined,
  nodeFlags: readonly string[],
): ClusterNode {
  let child: ChildProcess | undefined;
  let out = '';
  let startMs = Number.NaN;
  const readLog = (): string => (logFile ? readFileSync(logFile, 'utf8') : out);
  const running = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;
  const exited = (c: ChildProcess): Promise<void> =>
    c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', () => r()));
  return {
    id,
    url,
    port,
    configFile,
    sim,
    vm,
    get pid() {
      return child?.pid ?? -1;
    },
    get running() {
      return running();
    },
    get startMs() {
      return startMs;
    },
    log: readLog,
    async kill() {
      const c = child;
      if (!c) return;
      if (running()) {
        c.kill('SIGCONT');
        c.kill('SIGKILL');
      }
      await exited(c);
    },
    pause() {
      if (running()) child?.kill('SIGSTOP');
    },
    resume() {
      if (running()) child?.kill('SIGCONT');
    },
    async terminate() {
      const c = child;
      if (!c) return null;
      if (running()) c.kill('SIGTERM');
      await exited(c);
      return c.exitCode;
    },
    async start() {
      if (running()) throw new Error(`node ${id} is already running`);
      const t0 = performance.now();
      const fd = logFile ? openSync(logFile, 'a') : undefined;
      const c = spawn(process.execPath, [...nodeFlags, bundle.cli, 'serve', '--config', configFile], {
        cwd: ROOT,
        stdio: fd === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', fd, fd],
        env: { ...process.env, QGA_GATEWAY_CONFIG: '', HOST: '', PORT: '', REDIS_URL: '', QGA_STORE: '', LOG_LEVEL: '', QGA_GATEWAY_STATE_DIR: stateDir, STATE_DIRECTORY: '', NODE_ENV: 'production' },
      });
      if (fd !== undefined) closeSync(fd);
      child = c;
      live.add(c);
      c.once('exit', () => live.delete(c));
      const keep = (d: Buffer): void => {
        out += d.toString();
        if (out.length > LOG_CAP) out = out.slice(out.length - LOG_CAP / 2);
      };
      c.stdout?.on('data', keep);
      c.stderr?.on('data', keep);
      const deadline = Date.now() + READY_TIMEOUT_MS;
      for (;;) {
        if (!running()) throw new Error(`node ${id} exited during start-up (${c.exitCode ?? c.signalCode}):\n${readLog().slice(-4000)}`);
        const ok = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1_000) }).then(
          (r) => r.status === 200,
          () => false,
        );
        if (ok) break;
        if (Date.now() > deadline) {
          c.kill('SIGKILL');
          throw new Error(`node ${id} not ready within ${READY_TIMEOUT_MS} ms:\n${readLog().slice(-4000)}`);
        }
        await new Promise((r) => setTimeout(r, 25));
      }
      startMs = performance.now() - t0;
    },
  };
}

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  /** the parsed JSON body (undefined when not JSON) */
  json: Record<string, unknown> | undefined;
  /** round trip, ms */
  ms: number;
}

/** One HTTP request to a node, bearer token `ops` unless told otherwise; never hangs past timeoutMs. */
export async function ask(
  node: ClusterNode | string,
  method: string,
  urlPath: string,
  opts: { body?: unknown; raw?: Buffer; headers?: Record<string, string>; token?: string; timeoutMs?: number } = {},
): Promise<Answer> {
  const base = typeof node === 'string' ? node : node.url;
  const headers: Record<string, string> = { ...bearer(opts.token ?? CLUSTER_TOKENS.ops), ...(opts.headers ?? {}) };
  let body: string | Buffer | undefined;
  if (opts.raw) {
    body = opts.raw;
    headers['content-type'] ??= 'application/octet-stream';
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  const t0 = performance.now();
  const r = await fetch(base + urlPath, { method, headers, body, signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000) });
  const buf = Buffer.from(await r.arrayBuffer());
  const ms = performance.now() - t0;
  const text = buf.toString('latin1');
  let json: Record<string, unknown> | undefined;
  if (/json/.test(r.headers.get('content-type') ?? '')) {
    try {
      json = JSON.parse(buf.toString('utf8')) as Record<string, unknown>;
    } catch {
      json = undefined;
    }
  }
  return { status: r.status, headers: r.headers, text, json, ms };
}

/** Poll until `cond` holds (every 25 ms), or throw naming `what` after timeoutMs. Returns the ms waited. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await cond()) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
