/**
 * Fair admission, the gateway's one admission mechanism (issue 12 item 2): per principal (the
 * token's name, or the client address for anonymous callers) at most
 * `limits.perPrincipalConcurrency` requests in flight, and optionally at most `limits.rate.max`
 * requests per `limits.rate.timeWindowMs` (@fastify/rate-limit; its counters in the lease store's
 * Redis when the store is Redis). Over either → 429 RATE_LIMITED with Retry-After. A full VM
 * queue stays the channel's business (429 QUEUE_FULL). Both 429s are answered limits.refusalHoldMs
 * after the refusal (http/refusal-hold.ts, from the error handler), so clients that retry at once
 * come back paced.
 *
 * With Redis as the store the rate counters live there, and a Redis outage refuses limited routes
 * with 503 STORE_UNAVAILABLE (no silent bypass, fault matrix C8): at once when the connection is
 * down, after store.commandTimeoutMs when Redis hangs. Thaws and probes are never counted, so they
 * still go through.
 *
 * Never refused here: thaws (DELETE /v1/vms/{vm}/fsfreeze, DELETE /v1/freeze-groups/{id}, and the
 * node-to-node agent calls of cluster mode, counted at the entry node) — a
 * frozen VM must always be thawable, however busy its owner is — and the /healthz and /readyz
 * probes (a refused probe would take a healthy gateway out of rotation). Not counted by
 * limits.rate (but held to the concurrency limit): /metrics, /openapi.json, /ui and /docs.
 *
 * Cost per request: the hooks are attached per route when the routes are declared (onRoute), so
 * exempt routes carry none and an unset limit adds none. With the concurrency limit on, a limited
 * route runs one synchronous onRequest hook (after auth, so the principal is known): a Map lookup
 * and set, one symbol-keyed property and one 'close' listener (a shared function, no closure) on
 * the response. The slot is released on the response's 'close', which Node emits exactly once
 * whether the answer was sent or the client went away: Fastify's onResponse and onRequestAbort
 * both stay silent when a client disconnects after its body was read (a POST waiting on the
 * agent), which would leak the slot.
 *
 * Cluster mode: a request is counted at the node it entered (its entry node), which forwards it
 * after admission. The node serving it (a request with a valid hop signature, auth.ts) counts it
 * neither against the principal's concurrency nor its rate; it is bounded instead per entry node:
 * at most FORWARD_CONNECTIONS + FREEZE_LANE_CONNECTIONS in flight from one node (the size of that
 * node's connection pool to this one and of its freeze lane, cluster/forward.ts, so never reached by
 * a well-behaved node; thaws and renewals, over their own lane, are never refused), beyond → 429.
 */
import type { ServerResponse } from 'node:http';
import rateLimit, { type FastifyRateLimitStore, type FastifyRateLimitStoreCtor } from '@fastify/rate-limit';
import type { Cluster, Redis } from 'ioredis';
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, RouteOptions } from 'fastify';
import { FORWARD_CONNECTIONS } from '../../cluster/hop.js';
import { FREEZE_LANE_CONNECTIONS } from '../../cluster/forward.js';
import type { Config } from '../../config/schema.js';
import { errors } from '../../errors.js';
import { RedisStore } from '../../store/redis.js';
import type { LeaseStore } from '../../store/types.js';
import { hopOf } from './auth.js';

/** Read-only view of the concurrency counters (tests, diagnostics). */
export interface Admission {
  /** requests in flight of a token principal, or of the anonymous callers from one address */
  inFlight(who: { token: string } | { address: string } | { node: string }): number;
  /** how many principals have a request in flight (entries in the counters) */
  readonly principals: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    admission: Admission;
  }
}

const ANONYMOUS = 'anonymous';

/**
 * The operations these limits never refuse, by operationId: the thaws (DELETE
 * /v1/vms/{vm}/fsfreeze, DELETE /v1/freeze-groups/{id}), the renewals of a lease already granted
 * (a refused renewal could end a backup's lease in the middle of its snapshot) and the probes.
 * A new freeze is admitted like any other request. Their OpenAPI entries document no 429
 * (routes/operation.ts).
 */
export const NEVER_REFUSED: ReadonlySet<string> = new Set(['thawFilesystems', 'thawFreezeGroup', 'renewFreezeLease', 'renewFreezeGroup', 'healthz', 'readyz', 'clusterAgentCall']);

function isExempt(route: RouteOptions): boolean {
  const id = route.schema?.operationId;
  return typeof id === 'string' && NEVER_REFUSED.has(id);
}

/**
 * Routes limits.rate does not count (they keep the concurrency limit): the metrics scrape (a
 * scraper must not eat the budget of the token it shares, nor lose its samples) and the static
 * documents (the /ui shell and its assets, /docs, /openapi.json).
 */
export function rateExempt(url: string): boolean {
  return url === '/metrics' || url === '/openapi.json' || url === '/ui' || url.startsWith('/ui/') || url === '/docs' || url.startsWith('/docs/');
}

/** The request's rate-limit key: `t:<token name>` or `a:<client address>`. */
function rateKey(request: FastifyRequest): string {
  const name = request.principal.name;
  return name === ANONYMOUS ? `a:${request.ip}` : `t:${name}`;
}

/** Counters of requests in flight: token principals by name, anonymous callers by address (two maps: no key can collide). */
const kKey = Symbol('qga.admission.key');
type HeldResponse = ServerResponse & { [kKey]?: string };

class ConcurrencyLimit implements Admission {
  readonly byToken = new Map<string, number>();
  readonly byAddress = new Map<string, number>();
  /** requests other nodes forwarded here, by entry node (counted at their entry node) */
  readonly byNode = new Map<string, number>();

  constructor(readonly max: number) {}

  inFlight(who: { token: string } | { address: string } | { node: string }): number {
    return ('token' in who ? this.byToken.get(who.token) : 'node' in who ? this.byNode.get(who.node) : this.byAddress.get(who.address)) ?? 0;
  }

  get principals(): number {
    return this.byToken.size + this.byAddress.size;
  }
}

function release(map: Map<string, number>, res: HeldResponse): void {
  const key = res[kKey];
  if (key === undefined) return;
  res[kKey] = undefined;
  const n = (map.get(key) ?? 1) - 1;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}

export async function registerLimits(app: FastifyInstance, config: Config, store: LeaseStore): Promise<void> {
  const { perPrincipalConcurrency: max, rate } = config.limits;
  const limit = new ConcurrencyLimit(max);
  app.decorate('admission', limit);

  // 'close' listeners: `this` is the response; shared, so nothing is allocated per request
  function releaseToken(this: HeldResponse): void {
    release(limit.byToken, this);
  }
  function releaseAddress(this: HeldResponse): void {
    release(limit.byAddress, this);
  }
  function releaseNode(this: HeldResponse): void {
    release(limit.byNode, this);
  }

  /** a forwarded request: counted at its entry node; here only bounded per entry node */
  function admitForwarded(node: string, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const n = limit.byNode.get(node) ?? 0;
    if (n >= FORWARD_CONNECTIONS + FREEZE_LANE_CONNECTIONS) {
      done(errors.rateLimited(`node ${node} has ${n} forwarded requests in flight here, the most one node may have (its connection pool and freeze lane)`, 1));
      return;
    }
    limit.byNode.set(node, n + 1);
    const res: HeldResponse = reply.raw;
    res[kKey] = node;
    res.on('close', releaseNode);
    done();
  }

  function admit(request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const hop = hopOf(request);
    if (hop !== undefined) {
      admitForwarded(hop.entryNode, reply, done);
      return;
    }
    const name = request.principal.name;
    const anonymous = name === ANONYMOUS;
    const map = anonymous ? limit.byAddress : limit.byToken;
    const key = anonymous ? request.ip : name;
    const n = map.get(key) ?? 0;
    if (n >= max) {
      done(
        errors.rateLimited(
          `${anonymous ? `anonymous callers from ${key} have` : `"${name}" has`} ${n} requests in flight, the limit (limits.perPrincipalConcurrency); retry when one has finished`,
          1,
        ),
      );
      return;
    }
    map.set(key, n + 1);
    const res: HeldResponse = reply.raw;
    res[kKey] = key;
    res.on('close', anonymous ? releaseAddress : releaseToken);
    done();
  }

  // Runs for every route declared after this (all of /v1 and the service routes): limited routes
  // get the hooks, exempt ones are marked so that @fastify/rate-limit (whose onRoute comes after
  // this one) leaves them alone too.
  app.addHook('onRoute', (route) => {
    if (isExempt(route)) {
      if (rate) route.config = { ...route.config, rateLimit: false };
      return;
    }
    if (rate && rateExempt(route.url)) route.config = { ...route.config, rateLimit: false };
    if (max > 0) route.onRequest = route.onRequest === undefined ? [admit] : [...[route.onRequest].flat(), admit];
  });

  if (rate) {
    const redis = store instanceof RedisStore ? store.connection : undefined;
    await app.register(rateLimit, {
      max: rate.max,
      timeWindow: rate.timeWindowMs,
      keyGenerator: rateKey,
      // forwarded by another node: counted there
      allowList: (request) => hopOf(request) !== undefined,
      // the same lease-store connection (fail-fast: no offline queue, store.commandTimeoutMs per command)
      ...(redis ? { store: failClosedCounters(redis.client, `${redis.keyPrefix}ratelimit:`) } : {}),
      // Redis down: refuse (503 STORE_UNAVAILABLE from the counters), never serve uncounted
      skipOnError: false,
      // Retry-After comes with the problem (sendProblem); no X-RateLimit-* headers on every answer
      addHeaders: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false, 'retry-after': false },
      addHeadersOnExceeding: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false },
      errorResponseBuilder: (request, ctx) =>
        errors.rateLimited(
          `${request.principal.name === ANONYMOUS ? `anonymous callers from ${request.ip} have` : `"${request.principal.name}" has`} made more than ${ctx.max} requests in ${rate.timeWindowMs} ms (limits.rate); retry in ${ctx.after}`,
          Math.max(1, Math.ceil(ctx.ttl / 1000)),
        ),
    });
  }
}

/** INCR the window's counter, starting its expiry with the window; the count and what is left of the window. */
const RATE_INCR = `local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) ttl = tonumber(ARGV[1]) end
return {n, ttl}`;

type RateIncr = (key: string, windowMs: number, cb: (err: Error | null, res?: [number, number]) => void) => void;

/**
 * @fastify/rate-limit's store for counters in Redis that fails closed: an error of the count
 * (connection down, command timed out) is 503 STORE_UNAVAILABLE, never a request let through
 * uncounted. One counter per key (principal) across routes: the limit is per principal.
 */
function failClosedCounters(client: Redis | Cluster, prefix: string): FastifyRateLimitStoreCtor {
  if (!(client as unknown as { qgaRateIncr?: RateIncr }).qgaRateIncr) client.defineCommand('qgaRateIncr', { numberOfKeys: 1, lua: RATE_INCR });
  const incr = (client as unknown as { qgaRateIncr: RateIncr }).qgaRateIncr.bind(client);
  return class FailClosedCounters implements FastifyRateLimitStore {
    incr(key: string, cb: Parameters<FastifyRateLimitStore['incr']>[1], windowMs: number): void {
      incr(prefix + key, windowMs, (err, res) => {
        if (err || !res) {
          const why = err ? err.message : 'no reply';
          cb(errors.storeUnavailable(`the rate limit's counters (limits.rate) are in Redis, which did not answer (${why}); refused rather than served uncounted`, { cause: err ?? undefined }));
          return;
        }
        cb(null, { current: Number(res[0]), ttl: Number(res[1]) });
      });
    }

    child(): FastifyRateLimitStore {
      return this;
    }
  };
}
