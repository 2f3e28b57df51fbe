/**
 * Who every route handler acts for, for the audit trail of mutating agent commands
 * (src/agent/audit-commands.ts): the principal auth named and the request id, held in
 * `auditContext` (src/util/audit.ts) for the handler and everything it starts. A callback-style
 * preHandler (after auth, validation and the limits) runs the rest of the request inside it.
 * Services that act on their own later (deadline thaws, reapers) pass `actor: 'gateway'` or run
 * outside any request.
 */
import type { FastifyInstance } from 'fastify';
import { auditContext } from '../../util/audit.js';

export function registerAuditContext(app: FastifyInstance): void {
  app.addHook('preHandler', (request, _reply, done) => {
    auditContext.run({ by: request.principal.name, requestId: String(request.id) }, done);
  });
}
