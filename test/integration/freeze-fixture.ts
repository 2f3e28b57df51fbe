/**
 * A gateway without HTTP for freeze tests: the real registry → pool → agent service → store chain
 * built by the composition root (createGateway), simulated VMs on unix sockets in a temp dir, and the FreezeService.
 * Two rigs sharing one Redis behave like two gateway processes sharing a lease store.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { randomUUID } from 'node:crypto';
import { buildConfig } from '../../src/config/load.js';
import { GatewayError } from '../../src/errors.js';
import type { FreezeService } from '../../src/freeze/service.js';
import type { Caller } from '../../src/freeze/types.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import type { LeaseStore } from '../../src/store/types.js';
import type { SimAgent } from '../../sim/agent.js';
import { Simulator } from '../../sim/simulator.js';
import { freshStateFile } from '../helpers/app.js';

export const BACKUP: Caller = { name: 'backup', admin: false };
export const OTHER: Caller = { name: 'other-backup', admin: false };
export const ADMIN: Caller = { name: 'ops', admin: true };

export interface SimFleet {
  sim: Simulator;
  dir: string;
  vm: Record<string, SimAgent>;
  close(): Promise<void>;
}

export async function simFleet(names: string[], opts: { frozen?: string[] } = {}): Promise<SimFleet> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-freeze-'));
  const sim = new Simulator({ dir });
  const vm: Record<string, SimAgent> = {};
  for (const name of names) vm[name] = await sim.addVm({ name, frozen: opts.frozen?.includes(name) ?? false });
  return {
    sim,
    dir,
    vm,
    async close() {
      await sim.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface Rig {
  services: Gateway;
  freeze: FreezeService;
  /** stop timers and close the pool and the store, as a graceful shutdown does */
  close(): Promise<void>;
  /** stop timers only, leaving every lease in the store: a process that died */
  crash(): Promise<void>;
}

export async function rig(
  fleet: SimFleet,
  opts: { redisUrl?: string; keyPrefix?: string; freeze?: Record<string, number | boolean | string>; agent?: Record<string, number>; start?: boolean; store?: LeaseStore; logger?: pino.Logger } = {},
): Promise<Rig> {
  const config = buildConfig(
    {
      log: { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
      // let go of the socket soon: several rigs (processes) share each simulated agent, which
      // serves one client at a time like a real QEMU chardev
      // no background probe unless asked (its first sweep at start would add agent calls)
      agent: { idleReleaseMs: 100, probeIntervalMs: 0, ...(opts.agent ?? {}) },
      store: opts.redisUrl ? { type: 'redis', redisUrl: opts.redisUrl, keyPrefix: opts.keyPrefix ?? 'qga:', commandTimeoutMs: 500 } : { type: 'memory' },
      // a state file of its own (never loadConfig's shared default)
      freeze: { sweepIntervalMs: 200, stateFile: freshStateFile(), ...(opts.freeze ?? {}) },
      vms: Object.values(fleet.vm).map((a) => ({ name: a.name, endpoint: a.endpoint })),
    },
    {},
    'freeze test',
  );
  const logger = opts.logger ?? pino({ level: config.log.level });
  const services = createGateway(config, logger, opts.store ? { store: opts.store } : {});
  await services.store.ready(5_000);
  const { freeze } = services;
  if (opts.start !== false) await freeze.start();
  let closed = false;
  return {
    services,
    freeze,
    async close() {
      if (closed) return;
      closed = true;
      await services.stop();
    },
    async crash() {
      if (closed) return;
      closed = true;
      // timers only: freeze.stop() is a shutdown, which thaws what this process froze
      await freeze.sweeper.stop();
      freeze.engine.stop();
      services.pool.destroy();
      await services.store.close().catch(() => undefined);
    },
  };
}

/** Commands the agent received, without the channel's own handshakes. */
export function agentCommands(a: SimAgent, since = 0): string[] {
  return a.stats.commandLog.filter((e) => e.at >= since && !e.command.startsWith('guest-sync') && e.command !== 'guest-info').map((e) => e.command);
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The GatewayError a promise rejects with (anything else fails the test). */
export async function rejection(p: Promise<unknown>): Promise<GatewayError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof GatewayError)) throw new Error(`expected a GatewayError, got ${String(e)}`);
  return e;
}

/** Both lease stores for describe.each: memory, and the real redis-server with a fresh key prefix. */
export function storeVariants(redisUrl: () => string, prefix: string): Array<[string, () => { redisUrl?: string; keyPrefix?: string }]> {
  return [
    ['memory', () => ({})],
    ['redis', () => ({ redisUrl: redisUrl(), keyPrefix: `${prefix}${randomUUID().slice(0, 8)}:` })],
  ];
}
