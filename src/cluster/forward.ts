/**
 * Forwarding of a request to the node that serves its VM (cluster mode), the parts that know
 * nothing of Fastify: the connection pools, the time bounds, the headers that cross (and those that
 * do not), and what a failure is answered with. src/http/plugins/forward.ts drives it with
 * @fastify/reply-from.
 *
 *  - One undici Pool per node (by origin), keep-alive, at most FORWARD_CONNECTIONS connections and
 *    one request per connection, and two small ones for its lanes (thaws and renewals; freezes:
 *    Lane): a node never has more than that many requests in flight from one entry node (the
 *    serving node does not count forwarded requests in its admission limits; this is their bound).
 *    Connect timeout short (CONNECT_TIMEOUT_MS).
 *  - Headers bound: max(cluster.forwardTimeoutMs, the longest agent timeout of the route's
 *    commands) plus the request's own wait (a `wait`/`timeout` parameter whose schema names its
 *    configured maximum with x-max-from: the query's value, or that maximum for a body member that
 *    is not read before forwarding). While an upload's body is still being written undici does not
 *    fire it (unless the node stops reading). Body bound (a download's stall): forwardTimeoutMs.
 *  - Every failure to get an answer (refused, reset, timed out, node died mid-way) is 503
 *    NODE_UNAVAILABLE naming the node; a failure after the answer's headers cuts the connection.
 */
import { Pool, type Dispatcher } from 'undici';
import { ForwardAnswer, type ForwardCallback } from './forward-answer.js';
import type { Config } from '../config/schema.js';
import { errors, type GatewayError } from '../errors.js';
import { DEFAULT_TIMEOUTS, UNKNOWN_COMMAND_TIMEOUT, commandSpec } from '../qga/commands.js';
import type { NodeInfo } from './directory.js';
import { FORWARD_CONNECTIONS, HOP_HEADER, NODE_HEADER, PRINCIPAL_HEADER, SIGNATURE_HEADER } from './hop.js';

/** a node that does not accept a connection within this is unreachable */
export const CONNECT_TIMEOUT_MS = 3_000;
/**
 * The lanes of a node's connections besides its pool (FORWARD_CONNECTIONS, for everything else):
 *  - `thaw`: thaws and renewals (DELETE /fsfreeze, POST /fsfreeze/renew), THAW_LANE_CONNECTIONS;
 *  - `freeze`: freezes (POST /fsfreeze), FREEZE_LANE_CONNECTIONS.
 * So that no other request waits ahead of a thaw in undici's queue: not long requests filling the
 * pool (long polls, exec waits, slow downloads), not status reads of a VM whose agent is slow
 * (GET /fsfreeze is an ordinary read, in the pool: it shared the lane once, and 40 clients polling
 * one hung agent's status held every thaw to that node back 21 s), and not freezes, each of which
 * may take the freeze timeout on a slow guest (a Windows guest's VSS freeze takes seconds: with 8
 * freeze connections, a backup freezing many VMs of one host through another node waited a whole
 * freeze for every 8). A thaw waits only behind other thaws and renewals.
 */
export type Lane = 'thaw' | 'freeze';
export const THAW_LANE_CONNECTIONS = 32;
export const FREEZE_LANE_CONNECTIONS = 32;
const LANE_CONNECTIONS: Record<Lane, number> = { thaw: THAW_LANE_CONNECTIONS, freeze: FREEZE_LANE_CONNECTIONS };
const LANES: readonly Lane[] = ['thaw', 'freeze'];

/** The lane of a forwarded route (method and route URL), or undefined for the node's pool. */
export function laneOf(method: string, url: string): Lane | undefined {
  if (!/\/fsfreeze(\/|$)/.test(url)) return undefined;
  if (method === 'DELETE' || url.endsWith('/fsfreeze/renew')) return 'thaw';
  if (method === 'POST') return 'freeze';
  return undefined;
}
/** at most this many node pools are kept (nodes come and go; the oldest pool is closed) */
const MAX_POOLS = 64;

/** Per-request options carried to NodePools.request through reply-from (a symbol key of the headers object survives its copy). */
export const FORWARD_CONTEXT = Symbol('qga.forward.context');
export interface ForwardContext {
  signal: AbortSignal;
  headersTimeout: number;
  /** a thaw or renewal, or a freeze: over connections of their own (Lane) */
  lane?: Lane;
  /** the node's id, named by X-Qga-Node on its answers when it did not name itself */
  nodeId?: string;
  /** called (as a method of the context) when the request fails without an answer, before reply-from hears of it */
  failing?(): void;
}

type RequestOptions = Dispatcher.DispatchOptions & { headers?: Record<string | symbol, unknown> };

/**
 * The dispatcher handed to reply-from (its `undici` option takes any object with request()): picks
 * the node's pool by origin and applies the request's own signal and headers bound. It dispatches
 * with a lean handler of its own (cluster/forward-answer.ts) rather than undici's request():
 * reply-from gets the same {statusCode, headers, body} (body: a stream, or a WholeBody for a small
 * answer read whole), headers already without the hop-by-hop ones and with X-Qga-Node.
 */
export class NodePools {
  private readonly pools = new Map<string, Pool>();

  constructor(private readonly forwardTimeoutMs: number) {}

  request(opts: RequestOptions, cb: ForwardCallback): void {
    // undici reads only the string keys of headers: the context's symbol key can stay
    const ctx = opts.headers?.[FORWARD_CONTEXT] as ForwardContext | undefined;
    opts.headersTimeout = ctx?.headersTimeout ?? this.forwardTimeoutMs;
    opts.bodyTimeout = this.forwardTimeoutMs;
    const origin = String(opts.origin);
    this.pool(origin, ctx?.lane).dispatch(opts, new ForwardAnswer(opts.method, opts.body, ctx?.nodeId ?? origin, ctx?.signal, cb, ctx));
  }

  private pool(origin: string, lane?: Lane): Pool {
    const key = poolKey(origin, lane);
    let pool = this.pools.get(key);
    if (pool === undefined) {
      if (this.pools.size >= MAX_POOLS) {
        const [oldest, p] = this.pools.entries().next().value as [string, Pool];
        this.pools.delete(oldest);
        void p.close().catch(() => undefined);
      }
      pool = new Pool(origin, {
        connections: lane === undefined ? FORWARD_CONNECTIONS : LANE_CONNECTIONS[lane],
        pipelining: 1,
        connect: { timeout: Math.min(CONNECT_TIMEOUT_MS, this.forwardTimeoutMs) },
        headersTimeout: this.forwardTimeoutMs,
        bodyTimeout: this.forwardTimeoutMs,
      });
      this.pools.set(key, pool);
    }
    return pool;
  }

  /**
   * A node stopped heartbeating: what is still waited for from it (a hung node answers nothing
   * until cluster.forwardTimeoutMs) fails now, as 503 NODE_UNAVAILABLE; its pools go.
   */
  dropNode(origin: string): void {
    for (const key of [poolKey(origin), ...LANES.map((lane) => poolKey(origin, lane))]) {
      const pool = this.pools.get(key);
      if (pool === undefined) continue;
      this.pools.delete(key);
      void pool.destroy(new NodeGoneError(origin)).catch(() => undefined);
    }
  }

  /** connections in use or open per origin (tests, diagnostics) */
  stats(): Record<string, { connected: number; running: number; pending: number }> {
    const out: Record<string, { connected: number; running: number; pending: number }> = {};
    for (const [origin, p] of this.pools) out[origin] = { connected: p.stats.connected, running: p.stats.running, pending: p.stats.pending };
    return out;
  }

  async close(): Promise<void> {
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map((p) => p.destroy().catch(() => undefined)));
  }
}

/** a node's pool, or one of its lanes' */
function poolKey(origin: string, lane?: Lane): string {
  return lane === undefined ? origin : `${origin}#${lane}`;
}

/** What a forwarded request fails with when its node is declared gone while it waits (NodePools.dropNode). */
export class NodeGoneError extends Error {
  readonly code = 'NODE_GONE';
  constructor(origin: string) {
    super(`${origin} stopped heartbeating while this request waited for its answer`);
    this.name = 'NodeGoneError';
  }
}

/** What a route needs to bound a forwarded request: computed once per route. */
export interface RouteBound {
  /** the headers bound of one request, from its params and query */
  (params: Record<string, unknown>, query: Record<string, unknown>): number;
}

interface SchemaLike {
  'x-qga-command'?: string | string[];
  querystring?: unknown;
  body?: unknown;
}

function timeoutMsOf(command: string, config: Config): number {
  const cls = commandSpec(command)?.timeout ?? UNKNOWN_COMMAND_TIMEOUT;
  return config.agent.timeouts[cls] ?? DEFAULT_TIMEOUTS[cls];
}

function settingOf(config: Config, path: string): number | undefined {
  let v: unknown = config;
  for (const key of path.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
  return typeof v === 'number' ? v : undefined;
}

/** the wait parameter of a schema part: a `wait` or `timeout` member naming its configured maximum */
function waitMember(part: unknown, config: Config): { name: string; maxSeconds: number; defaultSeconds?: number } | undefined {
  const props = part !== null && typeof part === 'object' ? (part as { properties?: Record<string, Record<string, unknown>> }).properties : undefined;
  if (!props) return undefined;
  for (const name of ['wait', 'timeout']) {
    const p = props[name];
    const from = p?.['x-max-from'];
    if (typeof from !== 'string') continue;
    const maxSeconds = settingOf(config, from);
    if (maxSeconds === undefined) continue;
    return { name, maxSeconds, ...(typeof p.default === 'number' ? { defaultSeconds: p.default } : {}) };
  }
  return undefined;
}

/**
 * The headers bound of a route's forwarded requests: max(forwardTimeoutMs, its commands' longest
 * agent timeout) + its wait (the query's value up to the configured maximum; a body's wait, not read
 * here, counts as the maximum). `guest-*` (raw passthrough): the command in the path.
 */
export function routeBound(schema: SchemaLike | undefined, config: Config): RouteBound {
  const forwardMs = config.cluster.forwardTimeoutMs;
  const cmd = schema?.['x-qga-command'];
  const commands = cmd === undefined ? [] : [cmd].flat();
  const wildcard = commands.includes('guest-*');
  const agentMs = Math.max(0, ...commands.filter((c) => c !== 'guest-*').map((c) => timeoutMsOf(c, config)));
  const base = Math.max(forwardMs, agentMs);
  const inQuery = waitMember(schema?.querystring, config);
  const inBody = waitMember(schema?.body, config);
  const bodyWaitMs = inBody ? inBody.maxSeconds * 1000 : 0;
  return (params, query) => {
    let ms = base + bodyWaitMs;
    if (wildcard && typeof params.command === 'string') ms = Math.max(ms, timeoutMsOf(params.command, config) + bodyWaitMs);
    if (inQuery) {
      const given = Number(query[inQuery.name] ?? inQuery.defaultSeconds ?? 0);
      const seconds = Number.isFinite(given) && given > 0 ? Math.min(given, inQuery.maxSeconds) : 0;
      ms += seconds * 1000;
    }
    return ms;
  };
}

/** Request headers that do not cross to the other node (hop-by-hop, the client's credentials, our own hop headers, Origin: checked here). */
const DROPPED_REQUEST = new Set(['authorization', 'proxy-authorization', 'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'transfer-encoding', 'expect', 'origin', HOP_HEADER, PRINCIPAL_HEADER, SIGNATURE_HEADER, NODE_HEADER]);

/** a copy without the dropped names (copying is cheaper than `delete`, which turns an object into a slow dictionary) */
function without(headers: HeaderMap, dropped: ReadonlySet<string>): HeaderMap {
  const out: HeaderMap = {};
  for (const name in headers) if (!dropped.has(name)) out[name] = headers[name];
  return out;
}

type HeaderMap = Record<string, unknown>;

/** The request headers sent to the node: the client's minus DROPPED_REQUEST, plus `extra`. */
export function outgoingHeaders(headers: HeaderMap, extra: Record<string, string>, ctx: ForwardContext): HeaderMap {
  const out = without(headers, DROPPED_REQUEST);
  for (const name in extra) out[name] = extra[name];
  (out as Record<symbol, unknown>)[FORWARD_CONTEXT] = ctx;
  return out;
}

const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** the error undici raised, under reply-from's wrapper */
export function rootCause(err: unknown): Error & { code?: string } {
  let e = err as Error & { code?: string; cause?: unknown };
  for (let i = 0; i < 4 && e.cause instanceof Error && (e.code === undefined || e.code.startsWith('FST_') || e.code === 'ECONNRESET' || e.code === 'UND_ERR_SOCKET'); i++) {
    e = e.cause as Error & { code?: string; cause?: unknown };
  }
  return e;
}

/**
 * How a node's 401 to this node's signed request is answered (a forwarded request, or a freeze's
 * agent call): the other node refused the signature, never the client's credentials, which do
 * not cross. 503 NODE_UNAVAILABLE naming the misconfiguration, `sent: false` (it refuses before
 * doing anything).
 */
export function hopRefused(vm: string, node: Pick<NodeInfo, 'id' | 'url'>, command?: string): GatewayError {
  return errors.nodeUnavailable(
    vm,
    node.id,
    `node ${node.id} (${node.url}), which serves VM ${vm}, refused this node's signed request (401): cluster.secretFile differs between the two nodes, ` +
      'or their clocks are more than 60 s apart (see its hop-refused audit record); nothing was carried out there',
    { ...(command !== undefined ? { command } : {}), extra: { sent: false } },
  );
}

/** How a forwarded request that got no answer is answered: 503 NODE_UNAVAILABLE naming the node and why. */
export function forwardFailure(err: unknown, vm: string, node: NodeInfo, boundMs: number, retryAfter?: number): GatewayError {
  const cause = rootCause(err);
  const code = cause.code ?? cause.name;
  const who = `node ${node.id} (${node.url}), which serves VM ${vm},`;
  const detail = CONNECT_CODES.has(code)
    ? `${who} did not accept the connection (${code}); it may be down: retry, or wait until it is gone from GET /v1/nodes`
    : code === 'NODE_GONE'
      ? `${who} stopped heartbeating while this request waited for its answer; the request may or may not have been carried out there`
      : TIMEOUT_CODES.has(code)
        ? `${who} sent no answer within ${boundMs} ms (cluster.forwardTimeoutMs and the request's own wait)`
        : `${who} broke the connection before answering (${code}); the request may or may not have been carried out there`;
  return errors.nodeUnavailable(vm, node.id, detail, { cause, ...(retryAfter === undefined ? {} : { retryAfter }) });
}
