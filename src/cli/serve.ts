/**
 * `qga-gateway serve` (the default command): loads the config (--config FILE, else
 * QGA_GATEWAY_CONFIG, else config/default.yaml if present, else built-in defaults; then the
 * environment), refuses to start on a bad one in one line (exit 2), and listens; a port in use or
 * not allowed is one line and exit 1. Shuts down in phases on SIGTERM/SIGINT: stop accepting →
 * finish in-flight requests (server.shutdownGraceMs) → stop services (the freeze service thaws what
 * this process froze, unless handed over; channels) → exit 0.
 * SIGHUP reloads the same config file in place (tokens, static VMs, log level, the TLS certificate)
 * without dropping channels or leases; a file that does not load is reported in one log line and
 * the old config kept.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { CLUSTER_ID_IN_USE } from '../cluster/service.js';
import { ConfigError, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { ReloadSummary } from '../gateway.js';
import { reloadTls } from '../http/tls.js';
import { describeRedisTarget, redisTarget } from '../store/index.js';
import { lockStateFile, stateFileProblems } from '../store/memory-file.js';
import { errorMessage } from '../util/unknown.js';
import { configUsageError, errnoCode, parseOptions, runtimeError, usageError } from './common.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** decorated by app.ts: tokens, static VMs and log level from a new config, in place; throws and keeps the old config when a token cannot be read */
    reloadConfig(config: Config): Promise<ReloadSummary>;
  }
}

export const SERVE_HELP = `Usage: qga-gateway [serve] [--config FILE] [--pretty]

Run the gateway (the default command).
  -c, --config FILE   configuration file (default: $QGA_GATEWAY_CONFIG, else config/default.yaml
                      next to the installation when present, else built-in defaults)
      --pretty        human-readable log lines instead of JSON (log.pretty: true)
  -h, --help          this help
The environment overrides the file: HOST, PORT, LOG_LEVEL, REDIS_URL, QGA_STORE.
Signals: SIGTERM/SIGINT shut down gracefully (thawing what this process froze); SIGHUP reloads
the configuration file (tokens, static VMs, log level, TLS certificate).
Exit codes: 2 usage or configuration error; 1 cannot listen (port in use, permission denied),
the embedded store's freeze.stateFile cannot be written, or another failure at start-up.`;

function defaultConfigFile(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidate = join(here, '..', '..', 'config', 'default.yaml');
  return existsSync(candidate) ? candidate : undefined;
}

/** after the request grace time: for thawing frozen VMs (agent timeouts) and closing channels */
const SHUTDOWN_SERVICES_MS = 60_000;

function loadOrFail(file: string | undefined): Config {
  try {
    return loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) throw configUsageError(e, file);
    throw e;
  }
}

/** listen's failures as the one line an operator needs */
export function listenFailure(e: unknown, config: Pick<Config, 'server'>): Error {
  const where = `${config.server.host}:${config.server.port}`;
  const code = errnoCode(e);
  // a refusal of the start-up that listen runs, not of the address (h12 F6)
  if (code === CLUSTER_ID_IN_USE) return runtimeError(errorMessage(e));
  if (code === 'EADDRINUSE') return runtimeError(`cannot listen on ${where}: the address is already in use (EADDRINUSE); stop the other process or set server.port / PORT`);
  if (code === 'EACCES') return runtimeError(`cannot listen on ${where}: permission denied (EACCES); ports below 1024 need root or CAP_NET_BIND_SERVICE`);
  if (code === 'EADDRNOTAVAIL') return runtimeError(`cannot listen on ${where}: no such local address (EADDRNOTAVAIL); check server.host / HOST`);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return runtimeError(`cannot listen on ${where}: the host name does not resolve (${code}); check server.host / HOST`);
  return runtimeError(`cannot listen on ${where}: ${errorMessage(e)}`);
}

/** Starts the gateway; resolves once it listens (the process then lives until a signal). */
export async function serve(args: string[]): Promise<void> {
  // A SIGHUP (systemctl reload) before the handlers below are in place would end the process
  // (Node's default) with no line and an exit that systemd counts as clean: held until then, and
  // applied as one reload once the gateway listens.
  let hupWhileStarting = false;
  const earlyHup = (): void => {
    hupWhileStarting = true;
  };
  process.on('SIGHUP', earlyHup);
  const { values } = parseOptions('serve', args, {
    config: { type: 'string', short: 'c' },
    pretty: { type: 'boolean' },
  });
  const file = values.config ?? (process.env.QGA_GATEWAY_CONFIG || undefined) ?? defaultConfigFile();
  let config = loadOrFail(file);
  if (values.pretty) config = { ...config, log: { ...config.log, pretty: true } };
  // the embedded store writes its leases there at every freeze: refuse to start rather than 503 each one
  const stateProblem = stateFileProblems(config);
  if (stateProblem) throw runtimeError(stateProblem);
  // one gateway process per state file (released at exit)
  if (config.store.type === 'memory') {
    try {
      lockStateFile(config.freeze.stateFile as string);
    } catch (e) {
      throw runtimeError(errorMessage(e));
    }
  }
  // imported only now, so a bad config fails fast without loading the whole gateway
  const { buildApp } = await import('../app.js');
  let app: FastifyInstance;
  try {
    app = await buildApp({ config });
  } catch (e) {
    // the TLS files are read here (http/tls.ts): a pair that does not load is a configuration error
    if (e instanceof ConfigError) throw configUsageError(e, file);
    throw runtimeError(`failed to start: ${errorMessage(e)}`);
  }
  try {
    await app.listen({ host: config.server.host, port: config.server.port });
  } catch (e) {
    // services may have started with ready(): stop them (bounded) before reporting
    await Promise.race([app.close().catch(() => undefined), new Promise((r) => setTimeout(r, 5_000).unref())]);
    throw listenFailure(e, config);
  }
  const reload = handleSignals(app, config, file);
  process.off('SIGHUP', earlyHup);
  if (hupWhileStarting) {
    app.log.info('SIGHUP received while starting: reloading the configuration now');
    reload();
  }
  app.log.info(
    {
      // after the registry's first scan (discovery folders, presets, API-registered VMs)
      vms: app.services.registry.size,
      store: config.store.type,
      auth: config.auth.tokens.length > 0,
      tls: config.server.tls !== undefined,
      ...(config.store.type === 'memory' ? { stateFile: config.freeze.stateFile } : {}),
      // where the Redis store connects, without its password (store/redis-connect.ts)
      ...(config.store.type === 'redis' ? { redis: describeRedisTarget(redisTarget(config.store)) } : {}),
    },
    'qga-gateway ready',
  );
}

/** Installs the signal handlers; returns the SIGHUP reload (queued behind one in progress). */
function handleSignals(app: FastifyInstance, config: Config, file: string | undefined): () => void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      app.log.warn({ signal }, 'second signal: exiting now, without waiting for thaws');
      process.exit(1);
    }
    stopping = true;
    app.log.info({ signal, graceMs: config.server.shutdownGraceMs }, 'shutting down');
    // requests get shutdownGraceMs, then thawing frozen VMs and closing channels get their own time
    const force = setTimeout(() => {
      // name the guests whose thaw did not finish: their leases end at their deadlines (another
      // replica's sweeper, or this gateway restarted, thaws them), or an operator thaws them now
      const unthawed = app.services.freeze.unthawedAtShutdown();
      app.log.error(
        unthawed.length > 0 ? { unthawed } : {},
        unthawed.length > 0
          ? 'graceful shutdown took too long; exiting with these frozen sessions not thawed (thawed at their deadlines by another gateway or this one restarted, or thaw them with force=true)'
          : 'graceful shutdown took too long; exiting',
      );
      process.exit(1);
    }, config.server.shutdownGraceMs + SHUTDOWN_SERVICES_MS);
    force.unref();
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        app.log.error({ err }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  let reloading = Promise.resolve();
  const reload = async (): Promise<void> => {
    if (stopping) return;
    try {
      const next = loadConfig(file);
      // the certificate first: a file that cannot be read (or a key that does not match) changes nothing
      const tls = next.server.tls && reloadTls(app.server, next.server.tls) ? 'reloaded' : 'unchanged';
      const summary = await app.reloadConfig(next);
      app.log.info({ file, ...summary, tls }, 'configuration reloaded (SIGHUP)');
      if (summary.needRestart.length > 0) app.log.warn({ sections: summary.needRestart }, 'changed configuration sections take effect only after a restart');
    } catch (e) {
      const problems = e instanceof ConfigError ? e.problems : [errorMessage(e)];
      app.log.error({ file, problems }, 'configuration reload (SIGHUP) failed: the running configuration is kept');
    }
  };
  // one reload at a time, in signal order
  const queueReload = (): void => {
    reloading = reloading.then(reload);
  };
  process.on('SIGHUP', queueReload);
  process.on('unhandledRejection', (err) => app.log.error({ err }, 'unhandled rejection'));
  return queueReload;
}
