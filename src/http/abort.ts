/**
 * The HTTP request's abort signal, so that a caller who goes away takes its command out of the
 * VM's queue (or has its in-flight reply discarded) instead of holding the agent for nobody.
 * `trackReplies` (an onRequest hook registered by app.ts) remembers each request's reply; the
 * signal itself is made only for the requests that ask for it.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

const REPLIES = new WeakMap<FastifyRequest, FastifyReply>();
const SIGNALS = new WeakMap<FastifyRequest, AbortSignal>();

export function trackReplies(app: FastifyInstance): void {
  app.addHook('onRequest', (request, reply, done) => {
    REPLIES.set(request, reply);
    done();
  });
}

export function requestSignal(request: FastifyRequest): AbortSignal {
  const existing = SIGNALS.get(request);
  if (existing) return existing;
  const ac = new AbortController();
  const reply = REPLIES.get(request);
  if (reply) {
    const res = reply.raw;
    if (res.destroyed && !res.writableFinished) {
      ac.abort(new DOMException('the HTTP client went away', 'AbortError'));
    } else {
      // The response closing before it finished means the client disconnected.
      res.once('close', () => {
        if (!res.writableFinished) ac.abort(new DOMException('the HTTP client went away', 'AbortError'));
      });
    }
  }
  SIGNALS.set(request, ac.signal);
  return ac.signal;
}
