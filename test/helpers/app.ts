/**
 * Build a gateway app for tests from a partial config (validated exactly as a config file is),
 * optionally listening on 127.0.0.1:0 for tests that need a real HTTP socket.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import { buildConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { Endpoint } from '../../src/qga/types.js';

export interface TestAppOptions {
  vms?: Array<{ name: string; endpoint: Endpoint; idleReleaseMs?: number; labels?: Record<string, string> }>;
  /** any other config keys, merged over the test defaults */
  config?: Record<string, unknown>;
  env?: Record<string, string | undefined>;
  logLevel?: string;
}

let stateRoot: string | undefined;
let stateFiles = 0;

/**
 * A state file of its own for one test gateway's embedded store. Test configs always name one
 * explicitly: many gateways run in one process and in parallel workers, and a shared default
 * state file (loadConfig's) would hand one test's leases and registrations to another.
 */
export function freshStateFile(): string {
  if (!stateRoot) {
    const root = mkdtempSync(join(tmpdir(), 'qga-state-'));
    stateRoot = root;
    process.once('exit', () => rmSync(root, { recursive: true, force: true }));
  }
  return join(stateRoot, `gateway-${++stateFiles}`, 'freeze-leases.json');
}

export function testConfig(opts: TestAppOptions = {}): Config {
  const base: Record<string, unknown> = {
    log: { level: opts.logLevel ?? process.env.TEST_LOG_LEVEL ?? 'silent' },
    freeze: { stateFile: freshStateFile() },
    // no background probe unless a test asks for one (its first sweep runs at start: extra agent calls)
    agent: { idleReleaseMs: 0, probeIntervalMs: 0 },
    // tests drive every route without tokens; the shipped default is read only (test/security/safe-defaults)
    auth: { anonymousScopes: ['read', 'write', 'admin'] },
    vms: opts.vms ?? [],
  };
  const merged: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(opts.config ?? {})) {
    const b = merged[k];
    merged[k] =
      b && typeof b === 'object' && !Array.isArray(b) && v && typeof v === 'object' && !Array.isArray(v)
        ? { ...(b as Record<string, unknown>), ...(v as Record<string, unknown>) }
        : v;
  }
  return buildConfig(merged, opts.env ?? {}, 'test');
}

export async function makeApp(opts: TestAppOptions = {}): Promise<FastifyInstance> {
  const config = testConfig(opts);
  const app = await buildApp({ config, logger: pino({ level: config.log.level }), env: opts.env ?? {} });
  await app.ready();
  return app;
}

/** Listen on an ephemeral loopback port; returns the base URL. */
export async function listen(app: FastifyInstance): Promise<string> {
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  return address;
}
