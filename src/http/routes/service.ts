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
import { problemResponses } from '../schemas/common.js';

export interface ReadinessCheck {
  name: string;
  check: () => Promise<void>;
}

export default async function serviceRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { services } = fastify;

  app.get(
    '/healthz',
    {
      config: { public: true },
      schema: {
        operationId: 'healthz',
        tags: ['service'],
        summary: 'Liveness',
        security: [],
        response: { 200: Type.Object({ status: Type.Literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      config: { public: true },
      schema: {
        operationId: 'readyz',
        tags: ['service'],
        summary: 'Readiness: the lease store answers and the gateway is not shutting down',
        security: [],
        response: {
          200: Type.Object({ status: Type.Literal('ready'), checks: Type.Record(Type.String(), Type.String()) }),
          ...problemResponses([503]),
        },
      },
    },
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
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'metrics',
        tags: ['service'],
        summary: 'Prometheus metrics (text exposition format)',
        produces: ['text/plain'],
        response: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: Type.String() } } } },
      },
    },
    async (_request, reply) => {
      const text = await services.metrics.metrics();
      return reply.type(services.metrics.contentType).serializer((s: unknown) => String(s)).send(text);
    },
  );
}
