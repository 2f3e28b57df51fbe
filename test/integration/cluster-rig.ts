/**
 * In-process cluster for integration tests: gateways in cluster mode on ONE real redis-server, each
 * with its own simulated VMs, listening on 127.0.0.1, sharing a secret file and a fresh key prefix.
 * Started once per file; resolves when every node locates every other node's VMs as remote.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import type { TokenConfig } from '../../src/config/schema.js';
import type { SimAgent } from '../../sim/agent.js';
import { Simulator } from '../../sim/simulator.js';
import { testConfig } from '../helpers/app.js';
import { freePort, startRedis, type TestRedis } from '../helpers/redis.js';
import { until } from './files-support.js';

export interface RigNode {
  id: string;
  url: string;
  port: number;
  vm: Record<string, SimAgent>;
  app: FastifyInstance;
  /** the node's audit records (log lines with audit: true), whatever the log level */
  audits: Array<Record<string, unknown>>;
  /** every record at warn or above (whatever the level shown) */
  warnings: Array<Record<string, unknown>>;
}

export interface ClusterRigOptions {
  /** names the temporary directory and the key prefix */
  tag: string;
  secret: string;
  tokens: TokenConfig[];
  /** node id → its VM names */
  nodes: Record<string, string[]>;
  /** merged over the rig's cluster section (short heartbeats) */
  cluster?: Record<string, unknown>;
  /** merged over the rig's server section (127.0.0.1 and the node's port) */
  server?: Record<string, unknown>;
  /** further config sections */
  config?: Record<string, unknown>;
  /** environment variable naming the nodes' log level (silent by default) */
  logEnv?: string;
  /** commands the guest admin disabled (qemu-ga -b), by VM name */
  disabled?: Record<string, string[]>;
  /** node id → a secret of its own (not the others'): a misconfigured node */
  ownSecret?: Record<string, string>;
}

export interface ClusterRig {
  redis: TestRedis;
  secretFile: string;
  nodes: Record<string, RigNode>;
  close(): Promise<void>;
}

export async function startClusterRig(opts: ClusterRigOptions): Promise<ClusterRig> {
  const redis = await startRedis();
  const dir = await mkdtemp(path.join(os.tmpdir(), `qga-${opts.tag}-`));
  const secretFile = path.join(dir, 'secret');
  await writeFile(secretFile, opts.secret, { mode: 0o600 });
  const prefix = `${opts.tag}${randomUUID().slice(0, 6)}:`;
  const secretOf: Record<string, string> = {};
  for (const [id, secret] of Object.entries(opts.ownSecret ?? {})) {
    secretOf[id] = path.join(dir, `secret-${id}`);
    await writeFile(secretOf[id], secret, { mode: 0o600 });
  }
  const sims: Simulator[] = [];
  const nodes: Record<string, RigNode> = {};

  const startNode = async (id: string, names: string[]): Promise<RigNode> => {
    const simDir = path.join(dir, `sim-${id}`);
    await mkdir(simDir);
    const sim = new Simulator({ dir: simDir });
    sims.push(sim);
    const vm: Record<string, SimAgent> = {};
    for (const name of names) vm[name] = await sim.addVm({ name, disabled: opts.disabled?.[name] ?? [] });
    const port = await freePort();
    const config = testConfig({
      vms: names.map((name) => ({ name, endpoint: vm[name].endpoint })),
      config: {
        ...opts.config,
        auth: { tokens: opts.tokens },
        store: { type: 'redis', redisUrl: redis.url, keyPrefix: prefix, commandTimeoutMs: 1_000 },
        cluster: { enabled: true, id, advertiseUrl: `http://127.0.0.1:${port}`, secretFile: secretOf[id] ?? secretFile, heartbeatTtlMs: 1_000, heartbeatIntervalMs: 150, ...opts.cluster },
        server: { host: '127.0.0.1', port, ...opts.server },
      },
    });
    const level = (opts.logEnv ? process.env[opts.logEnv] : undefined) ?? 'silent';
    // audit records (warn) are kept whatever the level; the rest is printed at the level asked for
    const audits: Array<Record<string, unknown>> = [];
    const warnings: Array<Record<string, unknown>> = [];
    const shown = pino.levels.values[level] ?? Infinity;
    const sink = {
      write(line: string): void {
        const rec = JSON.parse(line) as Record<string, unknown>;
        if (rec.audit === true) audits.push(rec);
        if (typeof rec.level === 'number' && rec.level >= 40 && warnings.length < 10_000) warnings.push(rec);
        if (typeof rec.level === 'number' && rec.level >= shown) process.stdout.write(line);
      },
    };
    const app = await buildApp({ config, logger: pino({ level: level === 'silent' || (pino.levels.values[level] ?? 0) > 40 ? 'warn' : level }, sink), env: {} });
    await app.listen({ host: '127.0.0.1', port });
    return { id, url: `http://127.0.0.1:${port}`, port, vm, app, audits, warnings };
  };

  const close = async (): Promise<void> => {
    for (const n of Object.values(nodes)) await n.app.close().catch(() => undefined);
    for (const s of sims) await s.close();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const started = await Promise.all(Object.entries(opts.nodes).map(([id, names]) => startNode(id, names)));
    for (const n of started) nodes[n.id] = n;
    await until(() => started.every((n) => started.every((m) => m === n || Object.keys(m.vm).every((v) => n.app.services.cluster?.locate(v).kind === 'remote'))), 5_000, 'directory filled');
  } catch (err) {
    await close();
    throw err;
  }
  return { redis, secretFile, nodes, close };
}
