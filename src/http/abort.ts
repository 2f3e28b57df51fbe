/**
 * The HTTP request's abort signal, so that a caller who goes away takes its command out of the
 * VM's queue (or has its in-flight reply discarded) instead of holding the agent for nobody. The
 * same signal fires when a shutdown's grace time runs out, so no request can hold the process
 * (and the thaw of frozen VMs that runs after the last request) hostage.
 * `trackReplies` (an onRequest hook registered by app.ts) remembers each request's reply; the
 * signal itself is made only for the requests that ask for it.
 */
import { setMaxListeners } from 'node:events';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

const REPLIES = new WeakMap<FastifyRequest, FastifyReply>();
const SIGNALS = new WeakMap<FastifyRequest, AbortSignal>();
let shutdownSignal: AbortSignal | undefined;

export function trackReplies(app: FastifyInstance, shutdown: AbortSignal): void {
  shutdownSignal = shutdown;
  // one listener per request in flight: not a leak, so no MaxListeners warning
  setMaxListeners(0, shutdown);
  app.addHook('onRequest', (request, reply, done) => {
    REPLIES.set(request, reply);
    done();
  });
}

export function requestSignal(request: FastifyRequest): AbortSignal {
  const existing = SIGNALS.get(request);
  if (existing) return existing;
  const ac = new AbortController();
  SIGNALS.set(request, ac.signal);
  const reply = REPLIES.get(request);
  if (!reply) return ac.signal;
  const res = reply.raw;
  if (res.destroyed && !res.writableFinished) {
    ac.abort(new DOMException('the HTTP client went away', 'AbortError'));
    return ac.signal;
  }
  const shutdown = shutdownSignal;
  const onShutdown = (): void => ac.abort(new DOMException('the gateway is shutting down', 'AbortError'));
  if (shutdown?.aborted) onShutdown();
  else shutdown?.addEventListener('abort', onShutdown, { once: true });
  // The response closing before it finished means the client disconnected.
  res.once('close', () => {
    shutdown?.removeEventListener('abort', onShutdown);
    if (!res.writableFinished) ac.abort(new DOMException('the HTTP client went away', 'AbortError'));
  });
  return ac.signal;
}
