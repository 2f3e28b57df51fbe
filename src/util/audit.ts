/**
 * The audit trail: actions a security review asks about, one structured log line each with
 * `audit: true`, whoever did them. Built once by the composition root and handed to the services
 * that act on a principal's behalf. Two kinds of record:
 *  - actions of the gateway's own services (force-thaw, thaw on an unverified lease, raw
 *    passthrough calls), written where they happen, at warn;
 *  - every mutating agent command actually sent (src/agent/audit-commands.ts): one `start` and one
 *    completion record, at info. Never arguments (passwords, file content, exec input).
 * Who acts is carried by `auditContext` (set around each HTTP request's handler): the principal
 * and the request id. Work with no request around it (deadline sweeps, timers, shutdown) is the
 * gateway's own, recorded as `by: "gateway"`.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export interface AuditEvent {
  /** what was done, e.g. force-thaw */
  action: string;
  /** the principal (token name) that did it, or `gateway` for the gateway's own actions */
  by: string;
  [field: string]: unknown;
}

export interface AuditLog {
  record(event: AuditEvent, message: string, level?: 'info' | 'warn'): void;
}

export interface AuditLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export function createAuditLog(logger: AuditLogger): AuditLog {
  return {
    record: (event, message, level = 'warn') => (level === 'info' ? logger.info({ audit: true, ...event }, message) : logger.warn({ audit: true, ...event }, message)),
  };
}

/** Who a piece of work is done for: the HTTP request's principal and its request id. */
export interface AuditContext {
  by: string;
  requestId?: string;
  /** the request's principal: cluster mode carries it to the node serving a VM, which checks its scopes and VM globs again */
  principal?: AuditPrincipal;
}

/** What the audit context holds of a principal (http/plugins/auth.ts Principal). */
export interface AuditPrincipal {
  readonly name: string;
  readonly scopes: ReadonlySet<string>;
  /** the VM globs as written; undefined = every VM */
  readonly globs?: readonly string[];
}

/** The principal of the work running now (set around every HTTP request's handler). */
export const auditContext = new AsyncLocalStorage<AuditContext>();

/** The name the trail gives the gateway's own actions. */
export const GATEWAY_ACTOR = 'gateway';

/** Who the work running now is done for: an explicit actor, else the request's principal, else the gateway. */
export function currentActor(actor?: string): AuditContext {
  // an explicit actor is the gateway acting on its own, even from a timer armed during a request
  // (a deadline thaw): no request id then
  if (actor !== undefined) return { by: actor };
  return auditContext.getStore() ?? { by: GATEWAY_ACTOR };
}
