/**
 * The guest clock: guest-get-time and guest-set-time. Times are nanoseconds since the epoch
 * (≈1.7e18, far above 2^53): they travel as bigint from the agent's reply to the JSON text we
 * send, and from the request body (parsed losslessly, see json-body.ts) to the agent.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { errors } from '../../errors.js';
import type { JsonObject } from '../../qga/types.js';
import { VmParams } from '../schemas/common.js';
import { Int64 } from '../schemas/scalars.js';
import { callAgent, expectInteger } from './agent-reply.js';
import { operation } from './operation.js';

// times are not negative (1970 is the floor); the example is a string so that it stays exact (scalars.ts)
const TimeNs = (description: string) => Int64({ description, minimum: 0, examples: ['1732000000123456789'] });

const GuestTime = Type.Object(
  { time: TimeNs('guest System Time in nanoseconds since 1970-01-01 UTC (guest-get-time)') },
  { title: 'GuestTime', description: 'guest-get-time, wrapped' },
);

const SetTimeBody = Type.Object(
  {
    time: Type.Optional(
      TimeNs('time to set, in nanoseconds since 1970-01-01 UTC; exact to the nanosecond even above 2^53'),
    ),
    useHostClock: Type.Optional(
      Type.Boolean({
        description:
          "true: set the guest to the gateway host's clock, read when the request is handled (queue wait adds " +
          'that much lag). Not combinable with `time`.',
      }),
    ),
  },
  {
    additionalProperties: false,
    // the cross-field rule, for the document and the validator (its description is the 400's detail)
    not: {
      required: ['time', 'useHostClock'],
      properties: { time: {}, useHostClock: { const: true } },
      description: 'must not have both time and useHostClock: true (they are mutually exclusive)',
    },
    description:
      'guest-set-time. `{time}` sets that time; `{useHostClock: true}` sets the gateway host\'s time; `{}` makes the ' +
      'guest read its hardware clock (RTC), which not every guest supports (Windows does not).',
  },
);

const SetTimeResult = Type.Object(
  {
    source: Type.Union([Type.Literal('request'), Type.Literal('host'), Type.Literal('rtc')], {
      description: 'where the time came from: the request body, the gateway host clock, or the guest RTC',
    }),
    time: Type.Optional(TimeNs('the time sent to the agent (absent when the guest read its RTC)')),
  },
  { title: 'SetTimeResult', description: 'What was set' },
);

/** Wall-clock nanoseconds, exact to the microsecond the platform offers, as bigint. */
export function hostTimeNs(): bigint {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1e6));
}

export default async function timeRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  app.get(
    '/vms/:vm/time',
    operation('system', 'getTime', {
      summary: "The guest's System Time in nanoseconds since the epoch",
      command: 'guest-get-time',
      params: VmParams,
      ok: { 200: GuestTime },
    }),
    async (request) => {
      const { vm } = request.params;
      const value = await callAgent(fastify, request, vm, 'guest-get-time');
      return { time: expectInteger(vm, 'guest-get-time', value) };
    },
  );

  app.put(
    '/vms/:vm/time',
    operation('system', 'setTime', {
      summary: "Set the guest's System Time (and RTC): to a given time, to the gateway host's clock, or from the RTC",
      description:
        'Useful after a pause or a restore from a file, when the gap is too large for NTP. The agent sets the ' +
        'System Time, then the hardware clock to it.',
      command: 'guest-set-time',
      params: VmParams,
      body: SetTimeBody,
      ok: { 200: SetTimeResult },
    }),
    async (request) => {
      const { vm } = request.params;
      const { time, useHostClock } = request.body;
      if (time !== undefined && useHostClock) {
        throw errors.validation('body.time and body.useHostClock=true are mutually exclusive', { vm });
      }
      const value = useHostClock ? hostTimeNs() : time;
      const args: JsonObject | undefined = value === undefined ? undefined : { time: value };
      await callAgent(fastify, request, vm, 'guest-set-time', args);
      if (value === undefined) return { source: 'rtc' as const };
      return { source: useHostClock ? ('host' as const) : ('request' as const), time: value };
    },
  );
}
