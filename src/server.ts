/**
 * The only file that listens. Loads the config (file from --config or QGA_GATEWAY_CONFIG, else
 * config/default.yaml if present, else built-in defaults; then the environment), refuses to start
 * on a bad one with every problem listed, and shuts down in phases on SIGTERM/SIGINT:
 * stop accepting → finish in-flight requests (server.shutdownGraceMs) → stop services (the freeze
 * service thaws what this process froze, unless handed over; channels) → exit 0.
 * SIGHUP reloads the same config file in place (tokens, static VMs, log level) without dropping
 * channels or leases; a file that does not load is reported in one log line and the old config kept.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import type { ReloadSummary } from './gateway.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** decorated by app.ts: tokens, static VMs and log level from a new config, in place; throws and keeps the old config when a token cannot be read */
    reloadConfig(config: Config): Promise<ReloadSummary>;
  }
}

function defaultConfigFile(): string | undefined {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidate = join(here, '..', 'config', 'default.yaml');
  return existsSync(candidate) ? candidate : undefined;
}

/** after the request grace time: for thawing frozen VMs (agent timeouts) and closing channels */
const SHUTDOWN_SERVICES_MS = 60_000;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string', short: 'c' } }, strict: true });
  const file = values.config ?? process.env.QGA_GATEWAY_CONFIG ?? defaultConfigFile();
  let config;
  try {
    config = loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`qga-gateway: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  // imported only now, so a bad config fails fast without loading the whole gateway
  const { buildApp } = await import('./app.js');
  const app = await buildApp({ config });
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
      app.log.error('graceful shutdown took too long; exiting');
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
    let next;
    try {
      next = loadConfig(file);
      const summary = await app.reloadConfig(next);
      app.log.info({ file, ...summary }, 'configuration reloaded (SIGHUP)');
      if (summary.needRestart.length > 0) app.log.warn({ sections: summary.needRestart }, 'changed configuration sections take effect only after a restart');
    } catch (e) {
      const problems = e instanceof ConfigError ? e.problems : [e instanceof Error ? e.message : String(e)];
      app.log.error({ file, problems }, 'configuration reload (SIGHUP) failed: the running configuration is kept');
    }
  };
  // one reload at a time, in signal order
  process.on('SIGHUP', () => {
    reloading = reloading.then(reload);
  });
  process.on('unhandledRejection', (err) => app.log.error({ err }, 'unhandled rejection'));
  await app.listen({ host: config.server.host, port: config.server.port });
  app.log.info(
    { vms: config.vms.length, store: config.store.type, auth: config.auth.tokens.length > 0, ...(config.store.type === 'memory' ? { stateFile: config.freeze.stateFile } : {}) },
    'qga-gateway ready',
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`qga-gateway: failed to start: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
