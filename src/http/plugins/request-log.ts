/**
 * Request logging and request ids (issue 16 item 2): ONE line per request, written when the
 * answer has been sent, with what people join on: method, route pattern, vm, status, ms, reqId,
 * principal. Fastify's own two lines per request are off (disableRequestLogging in app.ts).
 *
 * - Request id: the client's `X-Request-Id` when it is 1–128 characters of [A-Za-z0-9._:-], else
 *   one made here (a per-process random prefix and a counter: no randomness per request). It is
 *   `request.id`, the `reqId` of every line logged through `request.log`, and the `X-Request-Id`
 *   of the answer. Services that log on a request's behalf (audit records) take it explicitly.
 * - Health and metrics scrapes (/healthz, /readyz, /metrics) are logged at `debug` only, except a
 *   401 or 403 (audited, below).
 * - Rejections (404, 409, 429) are counted (qga_rejections_total{code}) and their lines sampled: at
 *   most one a second per status; a line says how many were left out before it (`suppressed`), and
 *   a burst's remainder is reported one second after its first line.
 * - 401 and 403 are never sampled: each is an audit record (`audit: true`, action `denied`, warn).
 *
 * Cost: the hooks are attached per route when routes are declared (onRoute), with the route
 * pattern, its metric children and its log policy in the closure: nothing is looked up per request.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, onResponseHookHandler } from 'fastify';
import { REJECTION_STATUSES, type HttpMetrics, type RouteMetrics } from './metrics.js';
import { isNotDenial } from '../error-handler.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** the request line and metrics of an answer Fastify's router gave (frameworkErrors): no hook runs for it */
    answeredByRouter?: (request: FastifyRequest, reply: FastifyReply) => void;
  }
}

const VALID_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const PREFIX = randomBytes(4).toString('hex');
let counter = 0;

/** Fastify's genReqId: the caller's X-Request-Id when valid, else `<process prefix>-<counter>`. */
export function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  if (typeof given === 'string' && given.length <= 128 && VALID_ID.test(given)) return given;
  counter = counter === Number.MAX_SAFE_INTEGER ? 1 : counter + 1;
  return `${PREFIX}-${counter.toString(36)}`;
}

/** scrapes and probes: debug only */
const QUIET_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);
/** sampled: at most one line a second per status */
const SAMPLED = [404, 409, 429];
const AUDITED = new Set([401, 403]);
const SAMPLE_MS = 1_000;

interface Sampler {
  status: number;
  /** when the last line was written (ms, monotonic) */
  last: number;
  suppressed: number;
  timer: NodeJS.Timeout | undefined;
}

export function registerRequestLog(app: FastifyInstance, metrics: HttpMetrics): void {
  const rejection = new Set(REJECTION_STATUSES);
  const samplers = new Map<number, Sampler>(SAMPLED.map((status) => [status, { status, last: -Infinity, suppressed: 0, timer: undefined }]));

  const reportSuppressed = (s: Sampler): void => {
    s.timer = undefined;
    if (s.suppressed === 0) return;
    app.log.info({ status: s.status, suppressed: s.suppressed }, `${s.suppressed} more ${s.status} answers not logged in the last second`);
    s.suppressed = 0;
    s.last = performance.now();
  };
  app.addHook('onClose', (_app, done) => {
    for (const s of samplers.values()) {
      clearTimeout(s.timer);
      reportSuppressed(s);
    }
    done();
  });

  const logLine = (request: FastifyRequest, reply: FastifyReply, route: string, quiet: boolean): void => {
    const status = reply.statusCode;
    // a refused scrape or probe (401, 403) is audited and counted as any other
    if (quiet && !AUDITED.has(status)) {
      request.log.debug(fields(request, reply, route, status), `${request.method} ${route} ${status}`);
      return;
    }
    if (rejection.has(status)) metrics.rejected(status);
    if (AUDITED.has(status) && !isNotDenial(reply)) {
      request.log.warn({ audit: true, action: 'denied', by: request.principal.name, ...fields(request, reply, route, status) }, `${request.method} ${route} ${status} denied`);
      return;
    }
    const s = samplers.get(status);
    if (s !== undefined) {
      const now = performance.now();
      if (now - s.last < SAMPLE_MS) {
        s.suppressed++;
        s.timer ??= setTimeout(reportSuppressed, SAMPLE_MS - (now - s.last), s).unref();
        return;
      }
      s.last = now;
      const suppressed = s.suppressed;
      s.suppressed = 0;
      request.log.info({ ...fields(request, reply, route, status), sampled: true, suppressed }, `${request.method} ${route} ${status}`);
      return;
    }
    request.log.info(fields(request, reply, route, status), `${request.method} ${route} ${status}`);
  };

  const hookFor = (route: string, quiet: boolean, m: RouteMetrics): onResponseHookHandler =>
    function logResponse(request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
      m.observe(reply.statusCode, reply.elapsedTime / 1000);
      logLine(request, reply, route, quiet);
      done();
    };

  // every declared route gets its own hook, with its pattern and metric children in the closure
  app.addHook('onRoute', (routeOptions) => {
    const methods = [routeOptions.method].flat();
    const route = routeOptions.url ?? routeOptions.path;
    const hook = hookFor(route, QUIET_ROUTES.has(route), metrics.forRoute(methods.join(','), route));
    const existing = routeOptions.onResponse;
    routeOptions.onResponse = existing === undefined ? [hook] : [...[existing].flat(), hook];
  });

  // the metric children of answers counted outside the per-route hooks (no route matched, a client
  // gone before its answer), by method and route: bounded by the methods Node parses × the routes
  const lateMetrics = new Map<string, RouteMetrics>();
  const observe = (request: FastifyRequest, route: string, status: number, seconds: number): void => {
    const key = `${request.method} ${route}`;
    let m = lateMetrics.get(key);
    if (m === undefined) {
      m = metrics.forRoute(request.method, route);
      lateMetrics.set(key, m);
    }
    m.observe(status, seconds);
  };

  // answers given without a declared route (no route matched: 404, 405; router errors)
  const unmatched = (request: FastifyRequest, reply: FastifyReply): void => {
    observe(request, 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
    logLine(request, reply, 'unmatched', false);
  };
  app.addHook('onResponse', (request, reply, done) => {
    const socket = request.raw.socket as TrackedSocket | null;
    if (socket !== null && socket[UNANSWERED] === reply) socket[UNANSWERED] = undefined;
    if (request.is404) unmatched(request, reply);
    done();
  });
  // a router error (a path parameter too long: 414) runs no hook: its answer is told here
  app.decorate('answeredByRouter', (request: FastifyRequest, reply: FastifyReply) => {
    reply.raw.once('finish', () => {
      try {
        unmatched(request, reply);
      } catch (err) {
        request.log.error({ err }, 'request line of a router error not written');
      }
    });
  });

  // A request whose client goes away before its answer is written gets no onResponse: its line
  // is written when its connection closes (status 499, `aborted: true`), by one listener per
  // connection, for the request the connection was waiting on.
  // and it is counted, status 499, in its route's histogram
  const onConnectionClose = function (this: TrackedSocket): void {
    const reply = this[UNANSWERED];
    if (reply === undefined) return;
    this[UNANSWERED] = undefined;
    const request = reply.request;
    const route = request.routeOptions.url ?? 'unmatched';
    if (QUIET_ROUTES.has(route)) return;
    observe(request, route, 499, reply.elapsedTime / 1000);
    request.log.info({ ...fields(request, reply, route, 499), aborted: true }, `${request.method} ${route} 499 client went away before the answer`);
  };

  // every answer names its request id (set first, so that refusals by later hooks carry it too)
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    const socket = request.raw.socket as TrackedSocket | null;
    if (socket !== null) {
      if (!socket[WATCHED]) {
        socket[WATCHED] = true;
        socket.once('close', onConnectionClose);
      }
      socket[UNANSWERED] = reply;
    }
    done();
  });
}

/** on a connection: the reply it has yet to send (the latest request's), and whether its close is watched */
const UNANSWERED = Symbol('qga.unanswered');
const WATCHED = Symbol('qga.closeWatched');
type TrackedSocket = Socket & { [UNANSWERED]?: FastifyReply; [WATCHED]?: boolean };

function fields(request: FastifyRequest, reply: FastifyReply, route: string, status: number): Record<string, unknown> {
  const params = request.params as Record<string, unknown> | undefined;
  const vm = params !== null && typeof params === 'object' && typeof params.vm === 'string' ? params.vm : undefined;
  return {
    method: request.method,
    route,
    ...(vm !== undefined ? { vm } : {}),
    status,
    ms: Math.round(reply.elapsedTime * 100) / 100,
    // none when no hook ran (a router error: authentication never looked at the request)
    ...(request.principal ? { principal: request.principal.name } : {}),
  };
}
