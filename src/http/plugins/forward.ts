/**
 * Cluster mode: any node answers for any VM (issue 17 item 2). Every /v1 route with a `{vm}` path
 * parameter gets one more onRequest hook, the last: after authentication (auth.ts) and admission
 * (limits.ts), before the body is read. By where the directory says the VM is served
 * (ClusterService.locate):
 *  - local, or unknown (nobody serves it: 404 VM_NOT_FOUND as on one gateway) → served here;
 *  - remote → forwarded to its node with @fastify/reply-from over a per-node undici Pool
 *    (cluster/forward.ts) and answered as the node answered: status, headers, problem bodies and
 *    streamed file bodies both ways (the request body is piped, never parsed or buffered here);
 *    X-Qga-Node names the node. The call carries the hop signature and the principal authenticated
 *    here, not the client's Authorization; the node checks scopes and VM globs again;
 *  - gone (its node stopped heartbeating) or conflict (claimed by 2+ live nodes) → 503
 *    NODE_UNAVAILABLE at once, naming the node(s); except that a route with `config.answersGone`
 *    (GET /v1/vms/{vm}) answers a gone node's VM here, from the directory.
 * A forwarded request (valid hop signature) is never forwarded again: not served here → 503
 * NODE_UNAVAILABLE (the VM moved), never a loop. Its answers carry X-Qga-Node: this node.
 * A route can opt out with `config: { forward: false }`.
 */
import replyFrom from '@fastify/reply-from';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, RouteOptions } from 'fastify';
import type { NodeInfo } from '../../cluster/directory.js';
import { FORWARD_CONTEXT, NodePools, forwardFailure, hopRefused, laneOf, outgoingHeaders, routeBound, type ForwardContext, type Lane } from '../../cluster/forward.js';
import { WholeBody, forwardsOpen } from '../../cluster/forward-answer.js';
import { NODE_HEADER, loadHopSecret, signForward, unforwardablePath, type HopPrincipal } from '../../cluster/hop.js';
import type { Config } from '../../config/schema.js';
import { errors } from '../../errors.js';
import { signalOptions } from '../abort.js';
import { answerInTurn } from '../../util/turn-end.js';
import { hopOf, hopPrincipal, type Principal } from './auth.js';
import { closeAfterAnswer } from '../linger.js';
import { hasBody } from '../body-coding.js';
import { markNotDenial } from '../error-handler.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: never forwarded to another node, even with a {vm} parameter */
    forward?: boolean;
    /** true: a VM whose node is gone is answered by the route here (GET /v1/vms/{vm}: from the directory), not 503 */
    answersGone?: boolean;
  }
  interface FastifyRequest {
    /** a request this node forwards: what reply.from's callbacks need of it (null otherwise) */
    forwarding: Forwarding | null;
  }
}

/** What one forwarded request's reply.from callbacks need; also its ForwardContext (NodePools). */
interface Forwarding extends ForwardContext {
  nodeId: string;
  origin: string;
  query: string;
  hop: Record<string, string>;
  node: NodeInfo;
  vm: string;
  /** its one retry was taken */
  retried: boolean;
  request: FastifyRequest;
}

const VM_PARAM = /\/:vm(\/|$)/;
const COMMAND_DISABLED_MEMBER = Buffer.from('"code":"COMMAND_DISABLED"');

/** the path and query of a request URL, sent and signed exactly as received (the hook refused any path URL parsing would rewrite: hop.ts unforwardablePath) */
function splitUrl(url: string): { path: string; query: string; signed: string } {
  const q = url.indexOf('?');
  const raw = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? '' : url.slice(q + 1);
  return { path: raw, query, signed: query ? `${raw}?${query}` : raw };
}

/** origins of node URLs (a handful) */
const origins = new Map<string, string>();
function originOf(url: string): string {
  let o = origins.get(url);
  if (o === undefined) {
    if (origins.size >= 256) origins.clear();
    o = new URL(url).origin;
    origins.set(url, o);
  }
  return o;
}

/** the principal as carried, once per Principal object (tokens' principals are long-lived) */
const carried = new WeakMap<Principal, HopPrincipal>();
function carriedOf(p: Principal): HopPrincipal {
  let h = carried.get(p);
  if (h === undefined) {
    h = hopPrincipal(p);
    carried.set(p, h);
  }
  return h;
}

const QUIET = Symbol('qga.forward.quiet-log');

/** ForwardContext.failing of a forwarded request (a method, not a closure per request): its logger goes quiet first (withoutReplyFromWarning) */
function quietFailure(this: Forwarding): void {
  this.request.log = withoutReplyFromWarning(this.request.log);
}

/**
 * Only when a forward fails (its ForwardContext.failing), the request's logger without reply-from's own warning of a failed forward ("response errored",
 * with the error's stack, written unconditionally for every one): the failure is answered (503
 * NODE_UNAVAILABLE naming the node, or 499 for a client gone) and logged in the request's line like
 * any other, so under a node's outage the log got one stack per request on top (h12 F5: 784 in 40 s
 * of one node's outage at 10 requests a second). Everything else goes to the logger as it was.
 */
function withoutReplyFromWarning(log: FastifyBaseLogger): FastifyBaseLogger {
  if ((log as { [QUIET]?: true })[QUIET] === true) return log;
  const quiet = Object.create(log) as FastifyBaseLogger & { [QUIET]?: true };
  quiet[QUIET] = true;
  quiet.warn = function (this: unknown, ...args: unknown[]): void {
    if (args[1] === 'response errored') return;
    (log.warn as (...a: unknown[]) => void).apply(log, args);
  } as FastifyBaseLogger['warn'];
  return quiet;
}

function sendBytes(reply: FastifyReply, bytes: Buffer): void {
  reply.send(bytes);
}

export async function registerForward(app: FastifyInstance, config: Config): Promise<void> {
  const maybe = app.services.cluster;
  if (maybe === undefined) return;
  const cluster = maybe;
  const file = config.cluster.secretFile;
  if (file === undefined) throw new Error('cluster mode needs cluster.secretFile (the secret the nodes share)');
  const secret = loadHopSecret(file);
  const pools = new NodePools(config.cluster.forwardTimeoutMs);
  // a 503 for a node gone or unreachable: worth a retry once the directory was read again (a
  // conflict is not: it lasts until a VM is renamed)
  const retryAfter = Math.max(1, Math.ceil(config.cluster.heartbeatIntervalMs / 1000));
  await app.register(replyFrom, { undici: pools as never, disableRequestLogging: true });
  // a decoration (null until forwarded), so every request object keeps one shape
  app.decorateRequest('forwarding', null);
  app.addHook('onClose', async () => pools.close());
  // a node declared gone: its forwarded requests still waiting fail now (503), not at forwardTimeoutMs
  const unsubscribe = cluster.onNodeGone?.((node) => pools.dropNode(originOf(node.url)));
  if (unsubscribe) app.addHook('onClose', async () => void unsubscribe());

  // the serving node names itself on every answer of a forwarded request; it sends no Date there
  // (the entry node's server writes its own: cluster/forward-answer.ts drops the header anyway)
  app.addHook('onSend', (request, reply, payload, done) => {
    if (hopOf(request) !== undefined) {
      reply.header(NODE_HEADER, cluster.selfId);
      reply.raw.sendDate = false;
    }
    done(null, payload);
  });

  /**
   * reply.from's options, made once: everything per request is in the request's Forwarding (its
   * `forwarding` decoration), which reaches the callbacks through the request, or through the
   * outgoing headers' FORWARD_CONTEXT (retryDelay gets the undici request options only). Issue 17
   * item 6: no options object and closures per forwarded request.
   */
  const fromOptions = {
    getUpstream: (request: FastifyRequest) => (request.forwarding as Forwarding).origin,
    queryString: (_search: unknown, _url: unknown, request: FastifyRequest) => (request.forwarding as Forwarding).query,
    rewriteRequestHeaders: (request: FastifyRequest, headers: Record<string, unknown>) => {
      const f = request.forwarding as Forwarding;
      const out = outgoingHeaders(headers, f.hop, f);
      out['x-request-id'] = request.id;
      return out as never;
    },
    // the answer's headers come without the hop-by-hop ones and with X-Qga-Node (NodePools)
    // one retry, at once, of a GET/HEAD whose pooled connection the node had just closed
    retryDelay: ({ err, req, attempt }: { err: unknown; req: { method: string; headers: Record<symbol, unknown> }; attempt: number }) => {
      const f = req.headers[FORWARD_CONTEXT] as Forwarding | undefined;
      const code = (err as { code?: string } | null)?.code;
      if (f === undefined || attempt !== 0 || f.retried || (code !== 'UND_ERR_SOCKET' && code !== 'ECONNRESET')) return null;
      f.retried = true;
      return (req.method === 'GET' || req.method === 'HEAD') && !f.signal.aborted ? 1 : null;
    },
    // a small answer was read whole before this (a failure meanwhile went to onError); a larger
    // one is streamed: a failure after its headers cuts the connection
    onResponse: (_req: FastifyRequest, r: FastifyReply, res: { stream: unknown }) => {
      const body = res.stream;
      if (!(body instanceof WholeBody)) {
        r.send(body);
        return;
      }
      // The serving node never sees the client's credentials, only this node's signature: its 401
      // is a refused signature (cluster.secretFile differs, clocks apart), not the client's fault.
      // Answered as the node being unusable, not as UNAUTHENTICATED (h12 F2: a client re-authenticated
      // or rotated a valid token, and this node audited it as denied).
      if (r.statusCode === 401) {
        const f = r.request.forwarding as Forwarding;
        r.removeHeader('www-authenticate');
        r.send(hopRefused(f.vm, f.node));
        return;
      }
      // an overload refusal (429) of the serving node, which answers a forwarded request's at once:
      // held here, where the client is, as this node holds its own (limits.refusalHoldMs)
      if (r.statusCode === 429 && r.server.refusals.holdRelayed(r, body.bytes)) return;
      // the guest admin's refusal, not an access denial: not audited as one here either (request-log)
      if (r.statusCode === 403 && body.bytes.includes(COMMAND_DISABLED_MEMBER)) markNotDenial(r);
      // while other forwards are out, sent with the other answers of this turn (util/turn-end.ts)
      answerInTurn(forwardsOpen() > 0, sendBytes, r, body.bytes);
    },
    onError: (r: FastifyReply, { error }: { error: unknown }) => {
      const request = r.request;
      const f = request.forwarding as Forwarding;
      if (f.signal.aborted) {
        // the client went away (499) or the shutdown grace ran out (503 SHUTTING_DOWN): app's error handler
        r.send(f.signal.reason as Error);
        return;
      }
      r.header(NODE_HEADER, f.node.id);
      if (!request.raw.complete) {
        // the body still coming is not read: the connection ends after this answer
        closeAfterAnswer(request, r);
      }
      r.send(forwardFailure(error, f.vm, f.node, f.headersTimeout, retryAfter));
    },
  };

  function forwardTo(request: FastifyRequest, reply: FastifyReply, vm: string, node: NodeInfo, boundMs: number, lane: Lane | undefined): void {
    const { path, query, signed } = splitUrl(request.url);
    // the connection's signal (client gone, or the shutdown grace over): the forward's use of it
    // ends when its answer is complete, so a signal per request is not needed
    const { signal } = signalOptions(request);
    const hop = signForward(secret, { method: request.method, url: signed, entryNode: cluster.selfId, principal: carriedOf(request.principal) });
    request.forwarding = { signal, headersTimeout: boundMs, nodeId: node.id, origin: originOf(node.url), query, hop, node, vm, retried: false, request, failing: quietFailure, ...(lane ? { lane } : {}) };
    // reply-from pipes request.body when it is a stream: the raw request, unread
    if (request.method !== 'GET' && request.method !== 'HEAD' && hasBody(request)) (request as { body: unknown }).body = request.raw;
    void reply.from(path, fromOptions as never);
  }

  app.addHook('onRoute', (route: RouteOptions) => {
    if (!route.url.startsWith('/v1/') || !VM_PARAM.test(route.url) || route.config?.public || route.config?.forward === false) return;
    const bound = routeBound(route.schema as never, config);
    // thaws and renewals, and freezes, cross on connections of their own (cluster/forward.ts);
    // a route with several methods has one lane per method
    const lanes = new Map([route.method].flat().map((m) => [m, laneOf(m, route.url)]));
    const selfId = cluster.selfId;
    const answersGone = route.config?.answersGone === true;
    // A declared body over the limit is refused here, as the serving node would refuse it: that
    // node answers before reading it and closes, which the entry node, still sending, may only see
    // as a reset (a 503 instead of the 413). A chunked body over the limit is still refused there.
    const streaming = route.config?.streaming === true;
    const maxBody = streaming ? (config.files.maxUploadBytes > 0 ? config.files.maxUploadBytes : Infinity) : (route.bodyLimit ?? config.server.bodyLimitBytes);
    const tooLarge = (vm: string, declared: number) =>
      streaming ? errors.tooLarge(`upload of ${declared} bytes`, maxBody, 'files.maxUploadBytes', { vm }) : errors.tooLarge('the request body', maxBody, route.config?.bodyLimitFrom ?? 'server.bodyLimitBytes');
    const hook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
      const vm = (request.params as { vm?: unknown }).vm;
      if (typeof vm !== 'string') {
        done();
        return;
      }
      // a path is forwarded exactly as received: one URL parsing would rewrite (a backslash, a dot
      // segment, %2e/%2f/%5c, control characters) is refused on every node, forwarded or not
      const q = request.url.indexOf('?');
      const bad = unforwardablePath(q < 0 ? request.url : request.url.slice(0, q), vm);
      if (bad !== undefined) {
        done(errors.validation(`${bad}: refused`, { vm }));
        return;
      }
      const where = cluster.locate(vm);
      if (where.kind === 'local') {
        done();
        return;
      }
      if (hopOf(request) !== undefined) {
        const stale = cluster.staleSince;
        const why = stale === undefined ? 'it moved or is gone' : `this node has not read Redis since ${new Date(stale).toISOString()}: a VM reachable from several nodes is not connected meanwhile`;
        done(errors.nodeUnavailable(vm, selfId, `VM ${vm} is not served by node ${selfId}, to which another node forwarded this request (${why}); a forwarded request is not forwarded again: retry`, { retryAfter }));
        return;
      }
      switch (where.kind) {
        case 'unknown':
          done();
          return;
        case 'gone':
          if (answersGone) {
            done();
            return;
          }
          // named as every answer about a forwarded request names its node (h12 F3); nothing left this
          // node, so nothing was carried out (h12 F4: a thaw's caller may retry it as it is)
          reply.header(NODE_HEADER, where.node.id);
          done(errors.nodeUnavailable(vm, where.node.id, `node ${where.node.id}, which serves VM ${vm}, stopped heartbeating (last seen ${new Date(where.node.lastSeen).toISOString()}); nothing was sent to it`, { retryAfter, extra: { sent: false } }));
          return;
        case 'conflict':
          // no `node`: several serve the name (h12 F8: it was their ids joined by a comma)
          done(errors.nodeUnavailable(vm, undefined, `VM ${vm} is served by ${where.nodes.length} nodes at once (${where.nodes.join(', ')}): a name conflict; rename one of them; nothing was sent to them`, { extra: { nodes: where.nodes, sent: false } }));
          return;
        case 'remote': {
          const declared = Number(request.headers['content-length'] ?? 0);
          if (declared > maxBody) {
            done(tooLarge(vm, declared));
            return;
          }
          // answered by reply.from: done() is not called, so nothing of this request runs here
          forwardTo(request, reply, vm, where.node, bound(request.params as Record<string, unknown>, request.query as Record<string, unknown>), lanes.get(request.method));
          return;
        }
      }
    };
    route.onRequest = route.onRequest === undefined ? [hook] : [...[route.onRequest].flat(), hook];
  });
}
