/**
 * THE composition root: every long-lived part of the gateway is built here, from the Config, in
 * one place, and started and stopped here in an order you can read off the list below.
 *
 *   config ─► store ─► registry ─► pool ─► agent ─► audit ─► freeze ─► exec ─► files ─► raw ─► metrics
 *
 * start(), in this order: freeze (reconcile the store's leases, then sweep their deadlines),
 *   exec (reaper of unpolled processes), files (reaper of idle handles).
 * stop(), in reverse: files (close API handles) → exec → freeze (stop the sweeper; with the
 *   embedded store, thaw what it holds) → pool (drain the queues, close the sockets) → store.
 * Cluster mode (cluster.enabled) adds the cluster part (src/cluster/service.ts) after the registry:
 *   its first heartbeat and directory read run before serving; it stops after the pool (ownership
 *   leases released, heartbeat deleted) and before the store. The pool connects a VM reachable
 *   from several nodes only while this node holds its ownership lease (assertMayConnect).
 *
 * app.ts decorates the Fastify instance with the finished gateway; route plugins only read it.
 * Tests build the same root, replacing parts through `overrides`.
 */
import type { Logger } from 'pino';
import type { Registry as MetricsRegistry } from 'prom-client';
import { auditAgentCommands } from './agent/audit-commands.js';
import { registerFleetMetrics } from './agent/fleet-metrics.js';
import { AgentProbe } from './agent/probe.js';
import { RawPassthrough } from './agent/raw.js';
import { AgentService } from './agent/service.js';
import type { Config } from './config/schema.js';
import { execPassthrough } from './exec/passthrough.js';
import { ExecService } from './exec/service.js';
import { closeOrphanedHandles, filesPassthrough } from './files/passthrough.js';
import { FilesService } from './files/service.js';
import { ExternalThaw } from './freeze/external-thaw.js';
import { FreezeService } from './freeze/service.js';
import { RetainedVms, holdReason } from './freeze/retained-vms.js';
import { registerFreezeMetrics } from './freeze/metrics.js';
import type { HttpServices } from './http/services.js';
import { createMetrics } from './pool/metrics.js';
import { AgentPool } from './pool/pool.js';
import { COMMANDS, DEFAULT_TIMEOUTS } from './qga/commands.js';
import type { TimeoutClass } from './qga/types.js';
import { ReplyBudget } from './qga/reply-budget.js';
import { VmRegistry } from './registry/registry.js';
import { ClusterNode } from './cluster/service.js';
import { loadHopSecret, secretTag } from './cluster/hop.js';
import { RoutingAgent, routingRegistry } from './cluster/remote-agent.js';
import { API_VERSION } from './http/plugins/swagger.js';
import { RedisStore, createStore } from './store/index.js';
import { createAuditLog, type AuditLog } from './util/audit.js';
import { vmKey, type LeaseStore } from './store/types.js';

/** A part with a life of its own: started in list order, stopped in reverse. */
export interface Part {
  readonly name: string;
  start?(): Promise<void>;
  stop(): Promise<void>;
}

export interface Gateway extends HttpServices {
  readonly audit: AuditLog;
  /** the parts in start order */
  readonly parts: readonly Part[];
  start(): Promise<void>;
  /** stop every part in reverse order; a part that fails to stop is logged, the rest still stop */
  stop(): Promise<void>;
  /**
   * Apply a reloaded config (SIGHUP) in place: the static VMs (a removed or moved VM's channel is
   * closed; the others keep theirs, and every lease stays) and the log level. The tokens are the
   * HTTP layer's (app.ts reloads them first). Other sections need a restart: named in the result.
   */
  reload(next: Config): Promise<ReloadSummary>;
}

export interface ReloadSummary {
  added: string[];
  removed: string[];
  changed: string[];
  /** configured VMs a reload removed that stay registered while a freeze lease holds them (freeze/retained-vms.ts) */
  kept: string[];
  logLevel: string;
  /** top-level sections that differ but only take effect at the next start */
  needRestart: string[];
}

/** what reload() applies; every other section is read once at start */
const RELOADABLE = new Set(['vms', 'auth', 'log']);

export interface GatewayOverrides {
  /** a lease store built elsewhere (tests sharing one store between two gateways) */
  store?: LeaseStore;
  /** this process's id in freeze sessions and logs */
  gatewayId?: string;
}

export function resolveTimeouts(config: Config): Record<TimeoutClass, number> {
  return { ...DEFAULT_TIMEOUTS, ...config.agent.timeouts };
}

export function createGateway(config: Config, logger: Logger, overrides: GatewayOverrides = {}): Gateway {
  const timeouts = resolveTimeouts(config);
  const store = overrides.store ?? createStore(config);
  const registry = new VmRegistry(config, store);
  // cluster mode: a VM reachable from several nodes is connected only by the node that owns it
  let cluster: ClusterNode | undefined;
  const pool = new AgentPool({
    resolve: (vm) => {
      const endpoint = registry.resolve(vm);
      if (endpoint && cluster) cluster.assertMayConnect(vm, endpoint);
      return endpoint;
    },
    idleReleaseOf: (vm) => registry.idleReleaseOf(vm),
    maxOpen: config.agent.maxOpen,
    logger,
    channelOptions: {
      catalog: (name: string) => COMMANDS[name],
      timeouts,
      maxQueue: config.agent.maxQueue,
      maxReplyBytes: config.agent.maxReplyBytes,
      replyBudget: new ReplyBudget(config.agent.maxBufferedBytes),
      syncTimeoutMs: config.agent.syncTimeoutMs,
      connectTimeoutMs: config.agent.connectTimeoutMs,
      idleReleaseMs: config.agent.idleReleaseMs,
      infoMaxAgeMs: config.agent.infoMaxAgeMs,
      backoff: { initialMs: config.agent.backoffInitialMs, maxMs: config.agent.backoffMaxMs },
      logger,
    },
  });
  // a lease of ours (live, or expired and not yet thawed) holds the VM; undefined: the store cannot tell
  const hasLease = (vm: string) => store.getByKey(vmKey(vm)).then((l) => l !== undefined, () => undefined);
  const agent = new AgentService(pool, registry, { hasLease, logger });
  // cluster mode: a shared VM another node owns is not probed here (the pool would refuse it anyway)
  const probe = new AgentProbe(agent, async () => (await registry.list()).flatMap((r) => (!cluster || cluster.serves(r.name) ? [r.name] : [])), {
    intervalMs: config.agent.probeIntervalMs,
    retryInitialMs: Math.min(250, config.agent.downRetryMaxMs),
    retryMaxMs: config.agent.downRetryMaxMs,
  }, logger);
  const audit = createAuditLog(logger);
  // one start and one completion record per mutating command sent to any agent (invariant 4)
  auditAgentCommands(pool, audit);
  const freeze = new FreezeService({
    store,
    // cluster mode: each agent command of a freeze runs on the node that serves the VM (a group
    // may span nodes; the deadline thaw may be claimed by any node's sweeper)
    agent: config.cluster.enabled && config.cluster.secretFile
      ? new RoutingAgent({ local: agent, cluster: () => cluster, secret: loadHopSecret(config.cluster.secretFile), defaultTimeoutMs: (c) => pool.defaultTimeoutMs(c) })
      : agent,
    registry: config.cluster.enabled ? routingRegistry(registry, () => cluster) : registry,
    // freeze and thaw run the guest's fsfreeze hooks: the catalog's `freeze` class, as configured
    settings: { ...config.freeze, freezeTimeoutMs: timeouts.freeze, thawTimeoutMs: timeouts.freeze },
    logger,
    audit,
    gatewayId: overrides.gatewayId,
    releaseChannel: (vm) => pool.remove(vm),
    // Redis: the leases this process holds, beside its state file (freeze/held-journal.ts)
    ...(config.store.type === 'redis' ? { heldJournal: `${config.freeze.stateFile}.held` } : {}),
    ...(config.cluster.enabled ? { nodeId: () => cluster?.selfId } : {}),
  });
  const externalThaw = new ExternalThaw({ agent, hasLease, audit, logger, afterMs: config.freeze.externalThawAfterMs });
  const exec = new ExecService(agent, async (vm) => (await agent.info(vm)).versionTuple, config.exec, logger);
  const files = new FilesService(agent, config.files, config.agent.maxReplyBytes, logger);
  pool.on('orphan', closeOrphanedHandles(agent, logger));
  // a late guest-exec-status carries the only copy of a final status; a late guest-exec, a process to reap
  pool.on('orphan', (e) => exec.lateReply(e));
  const raw = new RawPassthrough(agent, [execPassthrough(exec), filesPassthrough(files)], audit);
  const metrics: MetricsRegistry = createMetrics(pool);
  registerFleetMetrics(metrics, agent, config.metrics);
  registerFreezeMetrics(metrics, freeze.engine, store);
  cluster = config.cluster.enabled ? createClusterNode(config, store, registry, agent, (vm) => pool.remove(vm), logger, metrics) : undefined;
  // the VMs other nodes serve are not in this registry: a registration must not alias one of them
  if (cluster) {
    const node = cluster;
    registry.checkEndpointsElsewhere((endpoint, except) => node.publishedAt(endpoint, except));
    // a thaw that failed while its VM's node was gone is sent again when that node is back
    node.onNodeBack((n) => freeze.engine.retryBoundTo(n.id));
  }

  const parts: Part[] = [
    // wait (bounded) for Redis at start, so the first requests do not race its connection; a store
    // that is still down is reported by /readyz and retried by ioredis, not fatal
    {
      name: 'lease store',
      start: () => store.ready(config.store.commandTimeoutMs * 3).catch((err: unknown) => logger.warn({ err }, 'lease store not ready at start; retrying in the background')),
      stop: () => store.close(),
    },
    // the first scan of the discovery folders (and the store's API-registered VMs) before serving, then watches
    { name: 'registry discovery', start: () => registry.start(logger), stop: async () => registry.stop() },
    // cluster mode: the first heartbeat and directory read before serving; stopped (leases released,
    // heartbeat deleted) after the pool closed its channels and before the store
    ...(cluster ? [{ name: 'cluster membership', start: () => cluster.start(), stop: () => cluster.stop() } satisfies Part] : []),
    { name: 'agent pool', stop: () => pool.close() },
    { name: 'agent probe', start: async () => probe.start(), stop: async () => probe.stop() },
    { name: 'external-freeze thaw', start: async () => externalThaw.start(), stop: async () => externalThaw.stop() },
    { name: 'freeze sweeper', start: () => freeze.start(), stop: () => freeze.stop() },
    { name: 'exec reaper', start: async () => exec.startReaper(), stop: async () => exec.stop() },
    { name: 'file handle reaper', start: async () => files.startReaper(), stop: () => files.stop() },
  ];

  // the `vms:` entries in force: the config's, plus those a reload removed or moved while a freeze
  // lease holds them (kept until it ends: freeze/retained-vms.ts)
  const staticVms = new RetainedVms(
    config.vms,
    async (entries) => {
      const vms = registry.reloadStatic(entries);
      // a VM gone from the config, or moved to another socket, loses its channel; the rest keep theirs
      for (const vm of [...vms.removed, ...vms.changed]) if (pool.has(vm)) await pool.remove(vm);
      for (const vm of [...vms.removed, ...vms.changed]) agent.forget(vm);
      // a new VM, or one on another socket now: its agent state is unknown from now on
      for (const vm of [...vms.added, ...vms.changed]) agent.registered(vm);
      // the others keep their channel, with the idle release the reload gives them (own or default)
      for (const e of entries) pool.peek(e.name)?.setIdleReleaseMs(pool.idleReleaseMsOf(e.name));
      return vms;
    },
    (vm) => freeze.removalBlocker(vm),
    logger,
  );
  // a discovered VM whose socket goes away while a freeze lease holds it stays registered until the lease ends, as a configured one does
  registry.keepWhile(holdReason((vm) => freeze.removalBlocker(vm)));
  const reload = async (next: Config): Promise<ReloadSummary> => {
    const vms = await staticVms.reload(next.vms);
    logger.level = next.log.level;
    // the other sections still run as the process started: compared with that, not with the last
    // file read (a change reverted by a later reload needs no restart)
    const needRestart = Object.keys(next).filter((k) => !RELOADABLE.has(k) && JSON.stringify(next[k as keyof Config]) !== JSON.stringify(config[k as keyof Config]));
    return { ...vms, logLevel: next.log.level, needRestart };
  };
  parts.push({ name: 'VMs kept for their freeze leases', start: async () => staticVms.start(config.freeze.sweepIntervalMs), stop: async () => staticVms.stop() });

  return {
    config,
    store,
    registry,
    pool,
    agent,
    audit,
    freeze,
    exec,
    files,
    raw,
    metrics,
    ...(cluster ? { cluster } : {}),
    parts,
    async start() {
      for (const part of parts) await part.start?.();
    },
    reload,
    async stop() {
      for (const part of [...parts].reverse()) {
        try {
          await part.stop();
        } catch (err) {
          logger.error({ err, part: part.name }, 'error while stopping');
        }
      }
    },
  };
}

/** The cluster part (cluster.enabled): membership, directory and ownership on the store's Redis. */
function createClusterNode(config: Config, store: LeaseStore, registry: VmRegistry, agent: AgentService, release: (vm: string) => Promise<void>, logger: Logger, metrics: MetricsRegistry): ClusterNode {
  if (!(store instanceof RedisStore)) throw new Error('cluster.enabled needs store.type redis: membership lives in Redis');
  const c = config.cluster;
  if (!c.advertiseUrl || !c.id) throw new Error('cluster.enabled needs cluster.advertiseUrl and cluster.id (loadConfig fills the id)');
  const { client, keyPrefix } = store.connection;
  return new ClusterNode({
    settings: { id: c.id, advertiseUrl: c.advertiseUrl, heartbeatTtlMs: c.heartbeatTtlMs, heartbeatIntervalMs: c.heartbeatIntervalMs },
    client,
    keyPrefix,
    registry,
    summaries: {
      fleetState: (vm) => agent.fleetState(vm),
      frozen: (vm) => agent.isKnownFrozen(vm),
      externalSince: (vm) => agent.external.get(vm)?.since,
      // peek: never resolves the endpoint (the ownership guard would throw for a VM just lost)
      channel: (vm) => agent.pool.peek(vm)?.stats().state,
    },
    release,
    version: API_VERSION,
    logger,
    metrics,
    ...(c.secretFile ? { secretTag: secretTag(loadHopSecret(c.secretFile)) } : {}),
  });
}
