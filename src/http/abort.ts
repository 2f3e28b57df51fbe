/**
 * The HTTP request's abort signal, so that a caller who goes away takes its command out of the
 * VM's queue (or has its in-flight reply discarded) instead of holding the agent for nobody. The
 * same signal fires when a shutdown's grace time runs out, so no request can hold the process
 * (and the thaw of frozen VMs that runs after the last request) hostage.
 * `trackReplies` (an onRequest hook registered by app.ts) remembers each request's reply; the
 * signal itself is made only for the requests that ask for it.
 */
import { setMaxListeners } from 'node:events';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

// on the request object itself (two WeakMap entries per request cost more)
const REPLY = Symbol('qga.reply');
const SIGNAL = Symbol('qga.signal');
type Tracked = FastifyRequest & { [REPLY]?: FastifyReply; [SIGNAL]?: AbortSignal };
let shutdownSignal: AbortSignal | undefined;
/**
 * Per shutdown signal, the controllers of the requests in flight that asked for a signal: ONE
 * listener on the shutdown signal aborts them all, instead of a listener added and removed per
 * request (issue 14).
 */
const LIVE = new WeakMap<AbortSignal, Set<AbortController>>();

export function trackReplies(app: FastifyInstance, shutdown: AbortSignal): void {
  shutdownSignal = shutdown;
  const live = new Set<AbortController>();
  LIVE.set(shutdown, live);
  const onShutdown = (): void => {
    for (const ac of live) ac.abort(new DOMException('the gateway is shutting down', 'AbortError'));
    live.clear();
  };
  if (shutdown.aborted) onShutdown();
  else shutdown.addEventListener('abort', onShutdown, { once: true });
  app.addHook('onRequest', (request, reply, done) => {
    (request as Tracked)[REPLY] = reply;
    done();
  });
}

export function requestSignal(request: FastifyRequest): AbortSignal {
  const r = request as Tracked;
  const existing = r[SIGNAL];
  if (existing) return existing;
  const ac = new AbortController();
  r[SIGNAL] = ac.signal;
  const reply = r[REPLY];
  if (!reply) return ac.signal;
  const res = reply.raw;
  // The response closing before it finished means the client disconnected.
  return arm(ac, res.destroyed && !res.writableFinished, (fn) => res.once('close', fn), () => !res.writableFinished);
}

/**
 * Aborts `ac` at once when its client is already gone or the gateway is shutting down; else when
 * `onClose` fires and `abandoned()` says so, or at the end of the shutdown grace time.
 */
function arm(ac: AbortController, gone: boolean, onClose: (fn: () => void) => void, abandoned: () => boolean): AbortSignal {
  if (gone) {
    ac.abort(new DOMException('the HTTP client went away', 'AbortError'));
    return ac.signal;
  }
  if (shutdownSignal?.aborted) {
    ac.abort(new DOMException('the gateway is shutting down', 'AbortError'));
    return ac.signal;
  }
  const live = shutdownSignal ? LIVE.get(shutdownSignal) : undefined;
  live?.add(ac);
  onClose(() => {
    live?.delete(ac);
    if (abandoned()) ac.abort(new DOMException('the HTTP client went away', 'AbortError'));
  });
  return ac.signal;
}

/**
 * Call options for one agent call (AgentService.call) whose `signal` is that of the request's
 * CONNECTION: made by the first call on a connection and shared by every later call on that
 * keep-alive connection (issue 14: no AbortController, listener and closure per request; a
 * refused request on a connection seen before makes nothing). It aborts when the connection
 * closes — the client went away — or at the end of the shutdown grace time. Only for calls whose
 * use of the signal ends when they settle (the queue and the read coalescer remove their
 * listeners then): a connection closing after the answer aborts nothing that is still running.
 * Work that outlives the answer, or must not be aborted by a later request's client, takes
 * requestSignal(). A plain data object: the call spreads it once per step.
 */
export function signalOptions(request: FastifyRequest): { readonly signal: AbortSignal } {
  return { signal: connectionSignal(request) };
}

const CONN_SIGNAL = Symbol('qga.connectionSignal');
type TrackedSocket = Socket & { [CONN_SIGNAL]?: AbortSignal };

function connectionSignal(request: FastifyRequest): AbortSignal {
  const socket = request.raw.socket as TrackedSocket | null;
  // no socket (an injected request without one): the request's own signal
  if (!socket) return requestSignal(request);
  const existing = socket[CONN_SIGNAL];
  if (existing) return existing;
  const ac = new AbortController();
  // one listener per call in flight on the connection (pipelined requests): removed as each settles
  setMaxListeners(0, ac.signal);
  socket[CONN_SIGNAL] = ac.signal;
  return arm(ac, socket.destroyed, (fn) => socket.once('close', fn), () => true);
}
