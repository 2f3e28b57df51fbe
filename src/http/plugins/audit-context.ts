/**
 * Who a route handler acts for, for the audit trail of mutating agent commands
 * (src/agent/audit-commands.ts): the principal auth named and the request id, held in
 * `auditContext` (src/util/audit.ts) for the handler and everything it starts. Services that act
 * on their own later (deadline thaws, reapers) pass `actor: 'gateway'` or run outside any request.
 *
 * Cost (issue 14): on Node 20 an AsyncLocalStorage in use turns on async hooks for EVERY promise
 * of the process (about a third of the gateway's CPU per request under GET …/ping load). So the
 * context is entered only by the handlers that can send a mutating command — every route that is
 * not a GET/HEAD, and the GET/HEAD routes that declare a mutating command (`x-qga-command`, e.g.
 * the download's guest-file-open) — and the storage is disabled again (the hooks off) whenever no
 * such handler is running. A read-only GET never pays for it. Work a handler leaves running after
 * it returned is the gateway's own from then on.
 */
import type { FastifyInstance, RouteHandlerMethod, RouteOptions } from 'fastify';
import { commandSpec } from '../../qga/commands.js';
import { auditContext } from '../../util/audit.js';

/** Whether a route's handler may send a mutating agent command. */
export function mayMutate(route: Pick<RouteOptions, 'method' | 'schema'>): boolean {
  const methods = Array.isArray(route.method) ? route.method : [route.method];
  if (methods.some((m) => m !== 'GET' && m !== 'HEAD')) return true;
  const declared = (route.schema as Record<string, unknown> | undefined)?.['x-qga-command'];
  const commands = typeof declared === 'string' ? [declared] : Array.isArray(declared) ? declared : [];
  // an unknown command counts as mutating (as in the catalog)
  return commands.some((c) => {
    const spec = typeof c === 'string' ? commandSpec(c) : undefined;
    return spec === undefined || spec.mutating === true;
  });
}

export function registerAuditContext(app: FastifyInstance): void {
  /** handlers inside the context now; at 0 the storage is disabled (no async hooks) */
  let running = 0;
  const leave = (): void => {
    if (--running === 0) auditContext.disable();
  };
  app.addHook('onRoute', (route) => {
    if (!mayMutate(route)) return;
    const handler = route.handler as (...args: Parameters<RouteHandlerMethod>) => unknown;
    route.handler = function auditedHandler(request, reply) {
      running++;
      let out: unknown;
      try {
        const principal = request.principal;
        out = auditContext.run({ by: principal.name, requestId: String(request.id), principal }, () => handler.call(this, request, reply));
      } catch (e) {
        leave();
        throw e;
      }
      if (out instanceof Promise) return out.finally(leave);
      leave();
      return out;
    } as RouteHandlerMethod;
  });
}
