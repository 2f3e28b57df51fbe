/**
 * Builds the gateway as a Fastify instance without listening: server.ts listens, tests use
 * app.inject() or listen on 127.0.0.1:0 themselves.
 */
import { statSync } from 'node:fs';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import { Ajv, type Options as AjvOptions } from 'ajv';
import addFormats from 'ajv-formats';
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler';
import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import { trackReplies } from './http/abort.js';
import { clientErrorHandler, frameworkErrors, registerErrorHandling } from './http/error-handler.js';
import { registerJsonBody } from './http/json-body.js';
import { registerAuditContext } from './http/plugins/audit-context.js';
import { registerAuth } from './http/plugins/auth.js';
import { registerLimits } from './http/plugins/limits.js';
import { registerForward } from './http/plugins/forward.js';
import { allowedHostNames, registerOriginChecks } from './http/plugins/origin.js';
import { createLogger, flushLogs } from './http/logger.js';
import { createHttpMetrics } from './http/plugins/metrics.js';
import { registerRequestLog, requestId } from './http/plugins/request-log.js';
import { registerSwagger } from './http/plugins/swagger.js';
import { serverOptions } from './http/tls.js';
import clusterInternalRoutes from './http/routes/cluster-internal.js';
import execRoutes from './http/routes/exec.js';
import fileRoutes from './http/routes/files.js';
import filesystemRoutes from './http/routes/filesystems.js';
import freezeGroupRoutes from './http/routes/freeze-groups.js';
import freezeListRoutes from './http/routes/freezes.js';
import fsfreezeRoutes from './http/routes/fsfreeze.js';
import hardwareRoutes from './http/routes/hardware.js';
import networkRoutes from './http/routes/network.js';
import powerRoutes from './http/routes/power.js';
import rawRoutes from './http/routes/qga-raw.js';
import serviceRoutes, { type ReadinessCheck } from './http/routes/service.js';
import uiRoutes from './http/ui/routes.js';
import systemRoutes from './http/routes/system.js';
import timeRoutes from './http/routes/time.js';
import userRoutes from './http/routes/users.js';
import vmListRoutes from './http/routes/vm-list.js';
import nodeRoutes from './http/routes/nodes.js';
import vmRoutes from './http/routes/vms.js';
import { registerQgaSchemas } from './http/schemas/qga.js';
import type { HttpServices } from './http/services.js';
import { createGateway, type Gateway } from './gateway.js';
import { stringifyJson } from './util/json.js';
import { errors } from './errors.js';
import { closeAfterAnswer } from './http/linger.js';
import { decimalParams } from './http/decimal-params.js';
import { registerBodyCoding } from './http/body-coding.js';
import { registerQueryEncoding } from './http/query-encoding.js';

declare module 'fastify' {
  interface FastifyInstance {
    services: HttpServices;
    readinessChecks: ReadinessCheck[];
    shuttingDown: boolean;
  }
  interface FastifySchema {
    /** the QGA command(s) an operation maps to, exported into OpenAPI as an extension */
    'x-qga-command'?: string | string[];
  }
}

export interface BuildOptions {
  config: Config;
  logger?: Logger;
  /** a gateway built elsewhere (tests); by default one is built from config, started when the app is ready */
  gateway?: Gateway;
  env?: Record<string, string | undefined>;
}

/** Route groups under /v1, one file per resource group. */
const V1_ROUTES = [
  vmListRoutes,
  nodeRoutes,
  vmRoutes,
  systemRoutes,
  timeRoutes,
  powerRoutes,
  fsfreezeRoutes,
  freezeGroupRoutes,
  freezeListRoutes,
  filesystemRoutes,
  networkRoutes,
  hardwareRoutes,
  userRoutes,
  execRoutes,
  fileRoutes,
  rawRoutes,
];

/**
 * Every reply is written by stringifyJson (setReplySerializer below takes precedence over the
 * response schemas): it writes bigints exactly wherever they are, while fast-json-stringify does so
 * only in fields typed integer and throws inside open objects. The response schemas therefore
 * document the API and drive OpenAPI; the serializers Fastify would compile from them (≈5 s at
 * every start for ~60 routes with the shared QGA components) are compiled only if ever called.
 */
type SerializerFactory = ReturnType<typeof SerializerSelector>;
function lazySerializers(): SerializerFactory {
  const eager = SerializerSelector();
  return (externalSchemas, options) => {
    const compile = eager(externalSchemas, options);
    return (route) => {
      let fn: ((data: unknown) => string) | undefined;
      return (data: unknown) => (fn ??= compile(route))(data);
    };
  };
}

function makeAjv(opts: AjvOptions): Ajv {
  const ajv = new Ajv({ allErrors: false, strict: false, useDefaults: true, removeAdditional: false, ...opts });
  addFormats.default(ajv);
  // OpenAPI's unsigned 64-bit format (src/http/schemas/scalars.ts); the range is checked by min/max
  ajv.addFormat('uint64', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= 0 });
  // base64 (schemas/scalars.ts) checked by a loop: ajv-formats' `byte` regex recurses once per 4
  // characters in V8 and overflows the stack on ~3.4 MB (stdin, handle writes: a 500 INTERNAL)
  ajv.addFormat('byte', { type: 'string', validate: isBase64 });
  return ajv;
}

/** RFC 4648 base64, padded to a multiple of 4 (what ajv-formats' `byte` accepts), without a regex. */
export function isBase64(s: string): boolean {
  const n = s.length;
  if (n % 4 !== 0) return false;
  const pad = n > 0 && s.charCodeAt(n - 1) === 61 ? (s.charCodeAt(n - 2) === 61 ? 2 : 1) : 0;
  for (let i = 0; i < n - pad; i++) {
    const c = s.charCodeAt(i);
    // A-Z a-z 0-9 + /
    if (!((c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47)) return false;
  }
  return true;
}

export async function buildApp(opts: BuildOptions): Promise<FastifyInstance> {
  const { config } = opts;
  // JSON lines (asynchronous writes, flushed at exit) or pino-pretty on a terminal: http/logger.ts
  const logger = opts.logger ?? createLogger(config.log);
  // typed as Fastify's logger interface, so the instance is a plain FastifyInstance (not one over pino's Logger)
  const loggerInstance: FastifyBaseLogger = logger;
  const app = Fastify({
    loggerInstance,
    // one line per request, written by http/plugins/request-log.ts when the answer is sent (not
    // Fastify's two); requestId: the field every line logged for a request carries, as in the audit records
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    // the caller's X-Request-Id when valid, else a cheap process-unique one
    genReqId: requestId,
    bodyLimit: config.server.bodyLimitBytes,
    trustProxy: config.server.trustProxy,
    // server.requestTimeoutMs is applied per request (registerHttpLimits), so that it can spare
    // streamed uploads; Node's own timer covers the whole request body and would cut them
    requestTimeout: 0,
    keepAliveTimeout: config.server.keepAliveTimeoutMs,
    // a VM name is up to 128 characters (API.md); Fastify's default (100) would make such a VM unreachable
    routerOptions: { maxParamLength: 256 },
    frameworkErrors,
    clientErrorHandler,
    // Node's server options (Host not required, header timeouts), and HTTPS when server.tls is set
    ...serverOptions(config.server),
    // requests that arrive while closing get the problem+json 503 SHUTTING_DOWN of the hook below
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { removeAdditional: false } },
    schemaController: { compilersFactory: { buildSerializer: lazySerializers() } },
  });

  // Bodies are validated exactly as sent (no type coercion: "5" is not 5); path and query strings
  // are strings on the wire, so those are coerced, numbers only from decimal digits (decimal-params.ts).
  const bodyAjv = makeAjv({ coerceTypes: false });
  const paramAjv = makeAjv({ coerceTypes: 'array' });
  app.setValidatorCompiler(({ schema, httpPart }) =>
    httpPart === 'body' ? bodyAjv.compile(schema) : httpPart === 'headers' ? paramAjv.compile(schema) : decimalParams(schema, paramAjv.compile(schema)),
  );
  app.setReplySerializer((payload) => stringifyJson(payload));

  const services = opts.gateway ?? createGateway(config, logger);
  app.decorate('services', services);
  const readinessChecks: ReadinessCheck[] = [
    {
      name: 'store',
      check: async () => {
        const h = await services.store.health();
        if (!h.ok) throw new Error(h.detail ?? `${h.kind} store unavailable`);
      },
    },
  ];
  app.decorate('readinessChecks', readinessChecks);
  app.decorate('shuttingDown', false);

  registerErrorHandling(app, { refusalHoldMs: config.limits.refusalHoldMs });
  // before every other hook and route: the request id header on every answer, the per-route log hooks
  registerRequestLog(app, createHttpMetrics(services.metrics, services.files.guest.transferred));
  // callback style (an async hook costs a promise per request)
  app.addHook('onRequest', (_request, _reply, done) => {
    if (app.shuttingDown) done(errors.shuttingDown('the gateway is shutting down and takes no new requests'));
    else done();
  });
  registerHttpLimits(app, config);
  registerJsonBody(app);
  const shutdown = new AbortController();
  trackReplies(app, shutdown.signal);
  registerOriginChecks(app, config.server, config.cluster.advertiseUrl);
  const auth = registerAuth(app, config, opts.env);
  // a body in a content coding (gzip…): 415 before it is read, once the caller is known
  registerBodyCoding(app);
  // a query string that is not valid percent-encoding: 400 (on the routes that take one)
  registerQueryEncoding(app);
  app.decorate('reloadConfig', async (next: Config) => {
    auth.reload(next, opts.env);
    return services.reload(next);
  });
  warnAboutOpenDoors(app, config);
  warnAboutSmallReplies(app, config);
  // fair admission per principal (after auth, which names it; before every route it limits)
  await registerLimits(app, config, services.store);
  // cluster mode: a {vm} route for a VM another node serves is forwarded there (after auth and
  // admission, before the body is read: the last onRequest hook of each such route)
  await registerForward(app, config);
  // who each handler acts for, for the audit trail of mutating agent commands
  registerAuditContext(app);
  // shared QGA schemas at the root, so every route group and the OpenAPI components see one copy
  registerQgaSchemas(app);
  await registerSwagger(app);

  await app.register(serviceRoutes);
  // node-to-node agent calls of the freeze service (cluster mode; hop-signed, hidden from OpenAPI)
  if (config.cluster.enabled) await app.register(clusterInternalRoutes, {});
  await app.register(uiRoutes);
  await app.register(
    async (v1) => {
      for (const routes of V1_ROUTES) await v1.register(routes);
    },
    { prefix: '/v1' },
  );

  app.addHook('onReady', () => services.start());
  // Phased shutdown: stop accepting (Fastify answers 503 meanwhile) → let requests in flight finish
  // for server.shutdownGraceMs → abort the rest (their agent commands leave the queues) → onClose:
  // services stop in reverse order, the freeze service thawing what it holds.
  let graceTimer: NodeJS.Timeout | undefined;
  app.addHook('preClose', async () => {
    app.shuttingDown = true;
    // cluster mode: the others route around this node at once, not after the drain
    void services.cluster?.leave?.();
    graceTimer = setTimeout(() => {
      shutdown.abort();
      // a keep-alive connection that a late answer left idle would hold close() open for the
      // keep-alive timeout (72 s); give the aborted answers a moment to go out, then cut them all
      setTimeout(() => app.server.closeAllConnections(), 1_000).unref();
    }, config.server.shutdownGraceMs);
    graceTimer.unref();
  });
  // answers given while shutting down end their connection, so close() does not wait on it
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (app.shuttingDown) reply.header('connection', 'close');
    done(null, payload);
  });
  app.addHook('onClose', async () => {
    clearTimeout(graceTimer);
    await services.stop();
    // the last lines (thaws at shutdown) are out before server.ts exits
    await flushLogs(logger);
  });
  return app;
}

/** Settings that open the gateway wider than its defaults, said once at start-up. */
function warnAboutOpenDoors(app: FastifyInstance, config: Config): void {
  const wide = config.auth.anonymousScopes.filter((s) => s !== 'read');
  if (config.auth.tokens.length === 0 && wide.length > 0) {
    app.log.warn({ anonymousScopes: config.auth.anonymousScopes }, `no tokens configured and anonymous callers get ${wide.join(' and ')}: any local process can change guests`);
  }
  if (!allowedHostNames(config.server, config.cluster.advertiseUrl)) {
    app.log.warn({ host: config.server.host }, 'wildcard bind without server.allowedHosts: requests are accepted for any Host name');
  }
  for (const loose of looseSecretFiles(config)) {
    app.log.warn(loose, `${loose.setting} can be read by other users than its owner (mode ${loose.mode}): whoever reads it ${loose.setting === 'cluster.secretFile' ? 'can send this cluster requests as any principal, admin included' : "can use the lease store's Redis"}; chmod 600 it`);
  }
  if (config.cluster.enabled && plainNodeTraffic(config.cluster.advertiseUrl)) {
    app.log.warn(
      { advertiseUrl: config.cluster.advertiseUrl },
      'cluster.advertiseUrl is http:// on a non-loopback address: the other nodes send this one signed but unencrypted requests (the carried principal, bodies, file contents); use https://',
    );
  }
}

/**
 * The largest guest-exec-status reply: stdout and stderr each cut by the agent at 16 MiB, as base64
 * (4/3), plus the JSON around them.
 */
export const LARGEST_EXEC_STATUS_REPLY = 2 * Math.ceil((16 * 1024 * 1024) / 3) * 4 + 4096;

/**
 * agent.maxReplyBytes below the largest exec-status reply is allowed (a host bounding its memory),
 * but a process with that much output then loses its result (502 REPLY_TOO_LARGE, and the agent
 * deleted its record with the reply): said once at start.
 */
function warnAboutSmallReplies(app: FastifyInstance, config: Config): void {
  if (config.agent.maxReplyBytes >= LARGEST_EXEC_STATUS_REPLY) return;
  app.log.warn(
    { maxReplyBytes: config.agent.maxReplyBytes, largestExecStatus: LARGEST_EXEC_STATUS_REPLY },
    'agent.maxReplyBytes is below the largest guest-exec-status reply (16 MiB of stdout and of stderr, as base64): the result of a process with that much output is lost (502 REPLY_TOO_LARGE)',
  );
}

/**
 * Files of secrets the configuration names that users other than the owner may read (mode & 0o077):
 * cluster.secretFile (its holder can sign node-to-node calls carrying any principal, admin
 * included) and store.passwordFile (the Redis that holds the leases). A file that cannot be
 * stat'ed is left to the checks that read it.
 */
export function looseSecretFiles(config: Config): Array<{ setting: string; file: string; mode: string }> {
  const named = [
    ...(config.cluster.enabled && config.cluster.secretFile !== undefined ? [{ setting: 'cluster.secretFile', file: config.cluster.secretFile }] : []),
    ...(config.store.passwordFile !== undefined ? [{ setting: 'store.passwordFile', file: config.store.passwordFile }] : []),
  ];
  return named.flatMap(({ setting, file }) => {
    try {
      const mode = statSync(file).mode & 0o777;
      return (mode & 0o077) !== 0 ? [{ setting, file, mode: mode.toString(8).padStart(4, '0') }] : [];
    } catch {
      return [];
    }
  });
}

/** An http:// URL whose host is not a loopback address (node-to-node traffic in clear over a network). */
export function plainNodeTraffic(url: string | undefined): boolean {
  if (url === undefined) return false;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (u.protocol !== 'http:') return false;
  const host = u.hostname.toLowerCase();
  return !(host === 'localhost' || host.endsWith('.localhost') || /^127(\.\d{1,3}){3}$/.test(host) || host === '[::1]');
}

/** Refusals answered without reading the body: the connection is closed after the answer (http/linger.ts). */
const REFUSED_UNREAD = new Set([401, 403, 413]);

/**
 * HTTP server limits (issue 12 item 7) beyond Fastify's options: the connection cap; the request
 * timeout per request, from the headers to the end of the body, for every route but the streamed
 * uploads (route config `streaming`), whose bound is files.noProgressTimeoutMs; and a 401/403/413
 * that closes the connection instead of reading (or draining) the body the client still sends.
 */
function registerHttpLimits(app: FastifyInstance, config: Config): void {
  const { maxConnections, requestTimeoutMs } = config.server;
  if (maxConnections > 0) app.server.maxConnections = maxConnections;
  // callback-style hooks: an async one costs a promise per request (issue 14)
  app.addHook('onSend', (request, reply, payload, done) => {
    // Node would otherwise read the rest of the body to reuse the connection
    if (REFUSED_UNREAD.has(reply.statusCode) && !request.raw.complete) closeAfterAnswer(request, reply);
    done(null, payload);
  });
  if (requestTimeoutMs <= 0) return;
  // the body timers; looked up only while one is armed (most requests arrive with their body)
  const timers = new WeakMap<FastifyRequest, NodeJS.Timeout>();
  let armed = 0;
  const clear = (request: FastifyRequest): void => {
    if (armed === 0) return;
    const timer = timers.get(request);
    if (timer === undefined) return;
    clearTimeout(timer);
    timers.delete(request);
    armed--;
  };
  app.addHook('onRequest', (request, _reply, done) => {
    // a request with neither Content-Length (other than 0) nor Transfer-Encoding has no body to wait
    // for (RFC 9112 6.3): no timer (issue 14: a GET armed and cleared one, ~1.2 µs)
    const length = request.headers['content-length'];
    const hasBody = (length !== undefined && length !== '0') || request.headers['transfer-encoding'] !== undefined;
    if (hasBody && !request.raw.complete && !request.routeOptions.config?.streaming) {
      const timer = setTimeout(() => {
        // the body did not arrive in time: cut the connection, as Node does with its own timeout
        timers.delete(request);
        armed--;
        request.log.warn({ requestTimeoutMs }, 'request body not received within server.requestTimeoutMs: connection closed');
        request.raw.socket?.destroy();
      }, requestTimeoutMs);
      timer.unref();
      timers.set(request, timer);
      armed++;
      // the body is in: also for a request forwarded to another node (cluster mode), whose body is
      // piped there and which never reaches preValidation here
      request.raw.once('end', () => clear(request));
    }
    done();
  });
  // the body is in (preValidation follows parsing) or the request ended otherwise
  app.addHook('preValidation', (request, _reply, done) => {
    clear(request);
    done();
  });
  app.addHook('onResponse', (request, _reply, done) => {
    clear(request);
    done();
  });
}
