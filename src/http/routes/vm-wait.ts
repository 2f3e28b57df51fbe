/**
 * GET /v1/vms/{vm}/wait?for=agent|ip&timeout=S — a long poll instead of a client's own loop:
 * answers as soon as the agent answers a sync (`for=agent`) or an address passing the filter
 * appears (`for=ip`: `family`, `scope=global`, `exclude` interface globs; interfaces are read at
 * most once a second), or 408 WAIT_TIMEOUT with what was last seen. The caller going away ends
 * the wait (and takes its agent command out of the VM's queue).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { waitForAgent, waitForIp } from '../../agent/wait.js';
import { errors } from '../../errors.js';
import { requestSignal } from '../abort.js';
import { AGENT_ERRORS, VmParams } from '../schemas/common.js';
import { StringEnum } from '../schemas/component.js';
import { operation } from './operation.js';
import { AgentStatus } from './vm-fleet.js';

const GLOB_LIST = '^[A-Za-z0-9._*?@:-]+(,[A-Za-z0-9._*?@:-]+)*$';

const WaitQuery = Type.Object(
  {
    for: StringEnum(['agent', 'ip'] as const, { description: 'agent: until the agent answers a sync; ip: until the guest reports an address that passes the filter' }),
    timeout: Type.Integer({ minimum: 0, maximum: 3_600, default: 30, description: 'seconds to wait at most (the gateway caps it at agent.waitMaxSeconds, default 300)' }),
    family: Type.Optional(StringEnum(['ipv4', 'ipv6'] as const, { description: 'for=ip: only addresses of this family' })),
    scope: Type.Optional(StringEnum(['global'] as const, { description: 'for=ip: global = no loopback, link-local or unspecified address' })),
    exclude: Type.Optional(
      Type.String({ maxLength: 1024, pattern: GLOB_LIST, description: 'for=ip: comma-separated interface-name globs to ignore (`docker*,veth*`; `*` any run, `?` one character)' }),
    ),
  },
  { additionalProperties: false },
);

const WaitAddress = Type.Object(
  {
    interface: Type.String({ description: 'the interface name in the guest' }),
    'ip-address': Type.String(),
    'ip-address-type': Type.String({ description: 'ipv4 or ipv6' }),
    prefix: Type.Optional(Type.Integer()),
  },
  { title: 'WaitAddress', description: 'An address the guest reported, with its interface' },
);

const WaitResult = Type.Object(
  {
    for: StringEnum(['agent', 'ip'] as const),
    agent: AgentStatus,
    addresses: Type.Optional(Type.Array(WaitAddress, { description: 'for=ip: every address that passes the filter' })),
    waitedMs: Type.Integer({ description: 'how long the gateway waited' }),
  },
  { title: 'VmWaitResult', description: 'What was waited for has happened' },
);

export function waitRoute(fastify: FastifyInstance): void {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { services } = fastify;
  app.get(
    '/vms/:vm/wait',
    operation('vms', 'waitForVm', {
      summary: 'Wait until the agent answers or the guest has an IP address (long poll)',
      description:
        'Answers 200 as soon as the agent answers a sync (`for=agent`) or the guest reports an address that passes `family`, ' +
        '`scope` and `exclude` (`for=ip`; interfaces are read at most once a second, so within a second of it appearing). ' +
        'After `timeout` seconds (at most agent.waitMaxSeconds) the answer is 408 WAIT_TIMEOUT, whose `state` holds what was last ' +
        'seen: the agent state and, for ip, the addresses the guest reported. Closing the connection ends the wait.',
      command: ['guest-sync-delimited', 'guest-network-get-interfaces'],
      params: VmParams,
      querystring: WaitQuery,
      ok: { 200: WaitResult },
      errors: [...AGENT_ERRORS, 408],
    }),
    async (request) => {
      const { vm } = request.params;
      const q = request.query;
      const max = services.config.agent.waitMaxSeconds;
      if (q.timeout > max) throw errors.validation(`timeout must be at most ${max} seconds (agent.waitMaxSeconds)`);
      await services.registry.require(vm);
      const signal = requestSignal(request);
      const t0 = performance.now();
      const timeoutMs = q.timeout * 1000;
      if (q.for === 'agent') {
        const r = await waitForAgent(services.agent, vm, timeoutMs, signal);
        if (!r.done) throw errors.waitTimeout(vm, `the agent of ${vm} did not answer within ${q.timeout} s`, { ...r.last });
        return { for: 'agent' as const, agent: r.value.agent, waitedMs: Math.round(performance.now() - t0) };
      }
      const filter = {
        ...(q.family ? { family: q.family } : {}),
        ...(q.scope ? { scope: q.scope } : {}),
        ...(q.exclude ? { exclude: q.exclude.split(',') } : {}),
      };
      const r = await waitForIp(services.agent, vm, filter, timeoutMs, signal);
      if (!r.done) throw errors.waitTimeout(vm, `no address of ${vm} passed the filter within ${q.timeout} s`, { ...r.last });
      return { for: 'ip' as const, agent: r.value.agent, addresses: r.value.addresses, waitedMs: Math.round(performance.now() - t0) };
    },
  );
}
