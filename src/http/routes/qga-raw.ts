/**
 * POST /v1/vms/{vm}/qga/{command}: any QGA command, verbatim — for commands newer than our
 * schemas, or arguments we do not model. Admin only: it reaches everything the agent can do.
 *
 * It still goes through the agent service, so the capability (501/403) and frozen (409) checks
 * apply, and through the channel, so no-response commands get the sync fence (answered 202) and
 * timeouts resync. The two sync commands are refused: they are the channel's own handshake, and
 * a caller's sync id would confuse the resync logic (POST /agent/sync is the way to force one).
 * The reply is serialized losslessly (integers above 2^53 stay exact) with no schema in between.
 * What may be sent, and the bookkeeping of the handles and pids it creates, is the raw service's
 * business (agent/raw.ts); this file only speaks HTTP.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { COMMAND_NAME_PATTERN } from '../../qga/commands.js';
import type { JsonObject } from '../../qga/types.js';
import { stringifyJson } from '../../util/json.js';
import { requestSignal } from '../abort.js';
import { VmName } from '../schemas/common.js';
import { emptyBodyIsObject } from './agent-reply.js';
import { operation } from './operation.js';

const RawParams = Type.Object(
  {
    vm: VmName,
    command: Type.String({
      pattern: COMMAND_NAME_PATTERN,
      maxLength: 128,
      description: 'the QGA command name, e.g. guest-get-host-name',
      examples: ['guest-get-host-name'],
    }),
  },
  { additionalProperties: false },
);

const RawArguments = Type.Object(
  {},
  {
    additionalProperties: true,
    description: "The command's `arguments` object, verbatim (may be omitted for commands without arguments)",
    examples: [{}],
  },
);

export default async function rawRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { raw } = fastify.services;

  app.post(
    '/vms/:vm/qga/:command',
    operation('raw', 'qgaPassthrough', {
      scope: 'admin',
      summary: 'Send any QGA command verbatim (admin)',
      description:
        'The body is the command\'s `arguments`. 200 carries the agent\'s `return` value unchanged; commands that ' +
        'answer nothing on success (guest-shutdown, guest-suspend-*, and any the agent lists with ' +
        'success-response=false) get 202 once the sync fence shows the agent accepted them. Agent errors map as on ' +
        'every route (422 AGENT_ERROR with qga.class/qga.desc). Refused with 400: guest-sync and guest-sync-delimited ' +
        '(use POST /agent/sync). Refused with 409 USE_FREEZE_API: guest-fsfreeze-freeze, -freeze-list and -thaw (freezes need a lease, thaws a lease check: use the fsfreeze routes). Every call is audited.',
      command: 'guest-*',
      params: RawParams,
      body: RawArguments,
      ok: {
        200: Type.Object(
          { return: Type.Unknown({ description: "the agent's return value, verbatim" }) },
          { description: 'The command answered' },
        ),
        202: Type.Object(
          { accepted: Type.Literal(true) },
          { description: 'A no-response command was accepted (no error before the sync fence)' },
        ),
      },
      preValidation: emptyBodyIsObject,
    }),
    async (request, reply) => {
      const { vm, command } = request.params;
      const body = request.body as JsonObject;
      const args = Object.keys(body).length > 0 ? body : undefined;
      const { value, noResponse } = await raw.run(vm, command, args, { by: request.principal.name, requestId: String(request.id) }, requestSignal(request));
      reply.type('application/json; charset=utf-8').serializer(stringifyJson);
      if (noResponse) return reply.code(202).send({ accepted: true as const });
      return reply.code(200).send({ return: value });
    },
  );
}
