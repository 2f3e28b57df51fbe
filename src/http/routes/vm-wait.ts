/**
 * GET /v1/vms/{vm}/wait?for=agent|ip&timeout=S — a long poll instead of a client's own loop:
 * answers as soon as the agent answers a sync (`for=agent`) or an address passing the filter
 * appears (`for=ip`: `family`, `scope=global`, `exclude` interface globs; interfaces are read at
 * most once a second), or 408 WAIT_TIMEOUT with what was last seen (WaitTimeoutProblem). The
 * caller going away ends the wait (and takes its agent command out of the VM's queue).
 * `timeout=0` is one immediate check, bounded by agent.timeouts.fast.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { waitForAgent, waitForIp } from '../../agent/wait.js';
import { errors } from '../../errors.js';
import { requestSignal } from '../abort.js';
import { AGENT_ERRORS, Problem, VmParams } from '../schemas/common.js';
import { StringEnum, named } from '../schemas/component.js';
import { operation } from './operation.js';
import { AgentStatus } from './vm-fleet.js';

/** a wait's length when the request gives none (capped by agent.waitMaxSeconds) */
const DEFAULT_WAIT_S = 30;

const GLOB_LIST = '^[A-Za-z0-9._*?@:-]+(,[A-Za-z0-9._*?@:-]+)*$';

const WaitQuery = Type.Object(
  {
    for: StringEnum(['agent', 'ip'] as const, {
      description: 'agent: until the agent answers a sync; ip: until the guest reports an address that passes the filter (never a loopback or unspecified one)',
    }),
    // no schema default: it is 30 s or agent.waitMaxSeconds when that is lower (a default above the
    // configured maximum would refuse every request that leaves it out)
    timeout: Type.Optional(
      Type.Integer({
        format: 'int32',
        minimum: 0,
        maximum: 3_600,
        // the served document states the configured maximum (schemas/document.ts: servedDocument)
        'x-max-from': 'agent.waitMaxSeconds',
        description:
          `seconds to wait at most: default ${DEFAULT_WAIT_S}, or agent.waitMaxSeconds when that is lower; at most agent.waitMaxSeconds (default 300); ` +
          '0 = no wait, one immediate check (one sync, or one interface read, bounded by agent.timeouts.fast): 200 when it passes, else 408',
      }),
    ),
    family: Type.Optional(StringEnum(['ipv4', 'ipv6'] as const, { description: 'for=ip: only addresses of this family' })),
    scope: Type.Optional(StringEnum(['global'] as const, { description: 'for=ip: global = no link-local address either (loopback and unspecified never pass)' })),
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
    prefix: Type.Optional(Type.Integer({ format: 'int32' })),
  },
  { title: 'WaitAddress', description: 'An address the guest reported, with its interface' },
);

const WaitResult = Type.Object(
  {
    for: StringEnum(['agent', 'ip'] as const),
    agent: AgentStatus,
    addresses: Type.Optional(Type.Array(WaitAddress, { description: 'for=ip: every address that passes the filter' })),
    waitedMs: Type.Integer({ format: 'int64', description: 'how long the gateway waited' }),
  },
  { title: 'VmWaitResult', description: 'What was waited for has happened' },
);

const WaitTimeoutState = named(
  'VmWaitState',
  Type.Object({
    agent: AgentStatus,
    addresses: Type.Optional(Type.Array(WaitAddress, { description: 'for=ip: every address the guest reported in the last interface read (none passed the filter)' })),
    lastError: Type.Optional(Type.String({ description: 'for=ip: why the last interface read failed, if it did' })),
  }),
  'What the gateway last saw of the VM when the wait ended',
);

const WaitTimeoutProblem = named(
  'WaitTimeoutProblem',
  Type.Intersect([Problem, Type.Object({ state: WaitTimeoutState })]),
  'The 408 WAIT_TIMEOUT problem of GET /v1/vms/{vm}/wait: the problem details plus `state`, what was last seen',
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
        'seen: the agent state and, for ip, the addresses the guest reported. `timeout=0` does not wait: one immediate check ' +
        '(one sync for agent, one interface read for ip, bounded by agent.timeouts.fast) answers 200 when it passes, else 408. ' +
        'Closing the connection ends the wait.',
      command: ['guest-sync-delimited', 'guest-network-get-interfaces'],
      params: VmParams,
      querystring: WaitQuery,
      ok: { 200: WaitResult },
      errors: [...AGENT_ERRORS, 408],
      problems: { 408: WaitTimeoutProblem },
    }),
    async (request) => {
      const { vm } = request.params;
      const q = request.query;
      const max = services.config.agent.waitMaxSeconds;
      const timeout = q.timeout ?? Math.min(DEFAULT_WAIT_S, max);
      if (timeout > max) throw errors.validation(`timeout must be at most ${max} seconds (agent.waitMaxSeconds)`);
      await services.registry.require(vm);
      const signal = requestSignal(request);
      const t0 = performance.now();
      const timeoutMs = timeout * 1000;
      // timeout=0: one check, bounded by the fast class (agent.timeouts.fast)
      const onceMs = services.agent.pool.defaultTimeoutMs('guest-sync-delimited');
      const within = timeout > 0 ? `within ${timeout} s` : `in one immediate check (at most ${onceMs} ms)`;
      if (q.for === 'agent') {
        const r = await waitForAgent(services.agent, vm, timeoutMs, signal, onceMs);
        if (!r.done) throw errors.waitTimeout(vm, `the agent of ${vm} did not answer ${within}`, { ...r.last });
        return { for: 'agent' as const, agent: r.value.agent, waitedMs: Math.round(performance.now() - t0) };
      }
      const filter = {
        ...(q.family ? { family: q.family } : {}),
        ...(q.scope ? { scope: q.scope } : {}),
        ...(q.exclude ? { exclude: q.exclude.split(',') } : {}),
      };
      const r = await waitForIp(services.agent, vm, filter, timeoutMs, signal, onceMs);
      if (!r.done) throw errors.waitTimeout(vm, `no address of ${vm} passed the filter ${within}`, { ...r.last });
      return { for: 'ip' as const, agent: r.value.agent, addresses: r.value.addresses, waitedMs: Math.round(performance.now() - t0) };
    },
  );
}
