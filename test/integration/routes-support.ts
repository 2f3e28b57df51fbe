/**
 * Shared by the route tests: the app, a simulator fleet in a temp dir, lossless JSON access to
 * response bodies, and problem+json assertions.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { Simulator, type SimAgent, type SimVmOptions } from '../../sim/index.js';
import type { JsonObject, JsonValue } from '../../src/qga/types.js';
import { parseJson } from '../../src/util/json.js';
import { makeApp, type TestAppOptions } from '../helpers/app.js';

/** The real app (src/app.ts registers every route group), ready, not listening. */
export function makeRoutesApp(opts: TestAppOptions = {}): Promise<FastifyInstance> {
  return makeApp(opts);
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
