import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { mayMutate, registerAuditContext } from '../../src/http/plugins/audit-context.js';
import { auditContext, type AuditContext } from '../../src/util/audit.js';

describe('audit context only around handlers that may send a mutating command', () => {
  it('mayMutate: GET/HEAD routes of read commands (or none) do not; other methods, mutating or unknown commands do', () => {
    expect(mayMutate({ method: 'GET', schema: { 'x-qga-command': 'guest-ping' } as never })).toBe(false);
    expect(mayMutate({ method: ['GET', 'HEAD'], schema: { 'x-qga-command': ['guest-info', 'guest-get-time'] } as never })).toBe(false);
    expect(mayMutate({ method: 'GET', schema: {} })).toBe(false);
    expect(mayMutate({ method: 'GET', schema: { 'x-qga-command': ['guest-file-open', 'guest-file-read'] } as never })).toBe(true);
    expect(mayMutate({ method: 'GET', schema: { 'x-qga-command': 'guest-no-such-command' } as never })).toBe(true);
    expect(mayMutate({ method: 'POST', schema: { 'x-qga-command': 'guest-ping' } as never })).toBe(true);
    expect(mayMutate({ method: 'DELETE' })).toBe(true);
  });

  it('a POST handler sees its principal and request id across awaits; a read GET sees none; the storage is off again afterwards', async () => {
    const app = Fastify({ genReqId: () => 'req-1' });
    app.decorateRequest('principal', {
      getter() {
        return { name: 'alice', scopes: new Set<'read'>() };
      },
    });
    registerAuditContext(app);
    const seen: Array<AuditContext | undefined> = [];
    app.get('/read', { schema: { 'x-qga-command': 'guest-ping' } as never }, async () => {
      await new Promise((r) => setImmediate(r));
      seen.push(auditContext.getStore());
      return { ok: true };
    });
    app.post('/write', async () => {
      await new Promise((r) => setImmediate(r));
      seen.push(auditContext.getStore());
      return { ok: true };
    });
    try {
      expect((await app.inject({ method: 'POST', url: '/write' })).statusCode).toBe(200);
      expect(seen).toEqual([{ by: 'alice', requestId: 'req-1', principal: { name: 'alice', scopes: new Set() } }]);
      // disabled: async hooks are off while no such handler runs
      expect((auditContext as unknown as { enabled: boolean }).enabled).toBe(false);
      expect((await app.inject({ method: 'GET', url: '/read' })).statusCode).toBe(200);
      expect(seen).toEqual([{ by: 'alice', requestId: 'req-1', principal: { name: 'alice', scopes: new Set() } }, undefined]);
      expect((auditContext as unknown as { enabled: boolean }).enabled).toBe(false);
    } finally {
      await app.close();
    }
  });
});
