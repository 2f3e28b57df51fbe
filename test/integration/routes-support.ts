/**
 * Shared by the route tests: an app with the QGA route groups (registered here too until app.ts
 * lists them), a simulator fleet in a temp dir, and lossless JSON access to response bodies.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import filesystemRoutes from '../../src/http/routes/filesystems.js';
import hardwareRoutes from '../../src/http/routes/hardware.js';
import networkRoutes from '../../src/http/routes/network.js';
import powerRoutes from '../../src/http/routes/power.js';
import rawRoutes from '../../src/http/routes/qga-raw.js';
import systemRoutes from '../../src/http/routes/system.js';
import timeRoutes from '../../src/http/routes/time.js';
import userRoutes from '../../src/http/routes/users.js';
import { Simulator, type SimAgent, type SimVmOptions } from '../../src/sim/index.js';
import type { JsonObject, JsonValue } from '../../src/qga/types.js';
import { parseJson } from '../../src/util/json.js';
import { testConfig, type TestAppOptions } from '../helpers/app.js';

/** Each group with one route that shows whether app.ts already registers it. */
const GROUPS = [
  { plugin: timeRoutes, probe: { method: 'GET', url: '/v1/vms/:vm/time' } },
  { plugin: systemRoutes, probe: { method: 'GET', url: '/v1/vms/:vm/hostname' } },
  { plugin: networkRoutes, probe: { method: 'GET', url: '/v1/vms/:vm/network/interfaces' } },
  { plugin: hardwareRoutes, probe: { method: 'GET', url: '/v1/vms/:vm/vcpus' } },
  { plugin: filesystemRoutes, probe: { method: 'GET', url: '/v1/vms/:vm/filesystems' } },
  { plugin: userRoutes, probe: { method: 'GET', url: '/v1/vms/:vm/users' } },
  { plugin: powerRoutes, probe: { method: 'POST', url: '/v1/vms/:vm/shutdown' } },
  { plugin: rawRoutes, probe: { method: 'POST', url: '/v1/vms/:vm/qga/:command' } },
] as const;

/** buildApp() plus the QGA route groups app.ts does not register (yet), not ready. */
export async function buildRoutesApp(opts: TestAppOptions = {}): Promise<FastifyInstance> {
  const config = testConfig(opts);
  const app = await buildApp({ config, logger: pino({ level: config.log.level }), env: opts.env ?? {} });
  for (const g of GROUPS) {
    if (!app.hasRoute({ method: g.probe.method, url: g.probe.url })) await app.register(g.plugin, { prefix: '/v1' });
  }
  return app;
}

export async function makeRoutesApp(opts: TestAppOptions = {}): Promise<FastifyInstance> {
  const app = await buildRoutesApp(opts);
  await app.ready();
  return app;
}

export interface SimFleet {
  sim: Simulator;
  dir: string;
  add(opts: SimVmOptions): Promise<SimAgent>;
  close(): Promise<void>;
}

export async function startSim(): Promise<SimFleet> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-routes-'));
  const sim = new Simulator({ dir });
  return {
    sim,
    dir,
    add: (o) => sim.addVm(o),
    async close() {
      await sim.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The body parsed losslessly (integers above 2^53 as bigint). */
export function body(res: LightMyRequestResponse): JsonObject {
  const v = parseJson(res.body);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`expected a JSON object, got: ${res.body.slice(0, 200)}`);
  return v;
}

export function list(v: JsonValue | undefined): JsonObject[] {
  if (!Array.isArray(v)) throw new Error(`expected a list, got ${JSON.stringify(v)}`);
  return v as JsonObject[];
}

/** Inject and assert a problem+json answer with this status and code; returns the problem. */
export async function expectProblem(
  app: FastifyInstance,
  req: InjectOptions,
  status: number,
  code: string,
): Promise<JsonObject> {
  const res = await app.inject(req);
  const where = `${String(req.method)} ${String(req.url)} → ${res.statusCode} ${res.body.slice(0, 300)}`;
  if (res.statusCode !== status) throw new Error(`expected ${status} ${code}: ${where}`);
  if (!String(res.headers['content-type']).startsWith('application/problem+json')) throw new Error(`not problem+json: ${where}`);
  const p = body(res);
  if (p.code !== code) throw new Error(`expected code ${code}: ${where}`);
  return p;
}

/** The commands the simulated agent received (the channel's own sync/info traffic left out). */
export function agentCommands(vm: SimAgent): string[] {
  return vm.stats.commandLog.map((e) => e.command).filter((c) => !/^guest-(sync|sync-delimited|info)$/.test(c));
}
