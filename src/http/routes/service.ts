/**
 * Service routes outside /v1: liveness, readiness and Prometheus metrics.
 * /healthz says the process serves HTTP; /readyz also checks the lease store and that the
 * gateway is not shutting down, so a load balancer stops sending before connections are drained.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { errors } from '../../errors.js';
import { errorMessage } from '../../util/unknown.js';
import { named } from '../schemas/component.js';
import { operation } from './operation.js';

export interface ReadinessCheck {
  name: string;
  check: () => Promise<void>;
}

export default async function serviceRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { services } = fastify;

  app.get(
    '/healthz',
    operation('service', 'healthz', {
      public: true,
      summary: 'Liveness',
      ok: { 200: named('Health', Type.Object({ status: Type.Literal('ok') }), 'The process serves HTTP') },
      errors: [],
    }),
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    operation('service', 'readyz', {
      public: true,
      summary: 'Readiness: the lease store answers and the gateway is not shutting down',
      ok: {
        200: named(
          'Readiness',
          Type.Object({ status: Type.Literal('ready'), checks: Type.Record(Type.String(), Type.String()) }),
          'Ready: every check answered (`checks` names each with "ok")',
        ),
      },
      errors: [503],
    }),
    async () => {
      const checks: Record<string, string> = {};
      let ok = !fastify.shuttingDown;
      if (fastify.shuttingDown) checks.shutdown = 'shutting down';
      for (const c of fastify.readinessChecks) {
        try {
          await c.check();
          checks[c.name] = 'ok';
        } catch (e) {
          ok = false;
          checks[c.name] = errorMessage(e);
        }
      }
      if (!ok) {
        throw (fastify.shuttingDown ? errors.shuttingDown : errors.storeUnavailable)('not ready', { extra: { checks } });
      }
      return { status: 'ready' as const, checks };
    },
  );

  app.get(
    '/metrics',
    operation('service', 'metrics', {
      scope: 'read',
      summary: 'Prometheus metrics (text exposition format)',
      description:
        'Needs a token with the read scope when the gateway has tokens (401 without one, 403 without the scope), and not limited to some VMs ' +
        '(auth.tokens[].vms): the metrics name every VM, which such a token may not list (403).',
      ok: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: named('MetricsText', Type.String(), 'Prometheus text exposition format 0.0.4') } } } },
      errors: [401, 403],
    }),
    async (request, reply) => {
      if (request.principal.vms) {
        throw errors.forbidden(`the metrics name every VM, and token ${request.principal.name} is limited to some (auth.tokens[].vms): scrape with a token for every VM`);
      }
      const text = await services.metrics.metrics();
      return reply.type(services.metrics.contentType).serializer((s: unknown) => String(s)).send(text);
    },
  );
}
