/**
 * The gateway's long-lived parts, built once from the Config and shared by every route:
 * registry → pool → agent service, plus the lease store and the services on top of them.
 * app.ts decorates the Fastify instance with these; tests may inject replacements.
 */
import type { Logger } from 'pino';
import type { Registry as MetricsRegistry } from 'prom-client';
import type { Config } from './config/schema.js';
import { AgentService } from './agent/service.js';
import { AgentPool } from './pool/pool.js';
import { COMMANDS, DEFAULT_TIMEOUTS } from './qga/commands.js';
import type { TimeoutClass } from './qga/types.js';
import { VmRegistry } from './registry/registry.js';
import { createMetrics } from './http/plugins/metrics.js';
import { createStore } from './store/index.js';
import type { LeaseStore } from './store/types.js';

export interface Services {
  config: Config;
  registry: VmRegistry;
  pool: AgentPool;
  agent: AgentService;
  store: LeaseStore;
  metrics: MetricsRegistry;
  /** started by app.ts onReady, stopped onClose, in reverse order */
  lifecycle: Array<{ name: string; start?: () => Promise<void>; stop: () => Promise<void> }>;
}

export function resolveTimeouts(config: Config): Record<TimeoutClass, number> {
  return { ...DEFAULT_TIMEOUTS, ...config.agent.timeouts } as Record<TimeoutClass, number>;
}

export function createServices(config: Config, logger: Logger): Services {
  const store = createStore(config);
  const registry = new VmRegistry(config, store);
  const pool = new AgentPool({
    resolve: (vm) => registry.resolve(vm),
    maxOpen: config.agent.maxOpen,
    logger,
    channelOptions: {
      catalog: (name: string) => COMMANDS[name],
      timeouts: resolveTimeouts(config),
      maxQueue: config.agent.maxQueue,
      maxReplyBytes: config.agent.maxReplyBytes,
      syncTimeoutMs: config.agent.syncTimeoutMs,
      connectTimeoutMs: config.agent.connectTimeoutMs,
      idleReleaseMs: config.agent.idleReleaseMs,
      backoff: { initialMs: config.agent.backoffInitialMs, maxMs: config.agent.backoffMaxMs },
      logger,
    },
  });
  const agent = new AgentService(pool, registry);
  const metrics = createMetrics(pool);
  return {
    config,
    registry,
    pool,
    agent,
    store,
    metrics,
    // stopped in reverse: the pool drains first, then the store closes
    lifecycle: [
      { name: 'lease store', stop: () => store.close() },
      { name: 'agent pool', stop: () => pool.close() },
    ],
  };
}
