/**
 * guest-shutdown and guest-suspend-disk/-ram/-hybrid. These send no reply on success: the channel
 * writes a guest-sync-delimited right behind the command (the sync fence). An error line before
 * the sync reply is the command's failure (→ 422 etc.); the sync reply alone, or the channel
 * closing because the guest went down, means the agent accepted it. Hence 202: the guest has
 * taken the request, and whether it actually powers off or sleeps is seen from outside (QMP).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { inline } from '../schemas/component.js';
import { VmParams } from '../schemas/common.js';
import { GuestShutdownMode, GuestSuspendMode } from '../schemas/qga.js';
import { callAgent, emptyBodyIsObject } from './agent-reply.js';
import { operation } from './operation.js';

const SUSPEND_COMMAND = {
  disk: 'guest-suspend-disk',
  ram: 'guest-suspend-ram',
  hybrid: 'guest-suspend-hybrid',
} as const;

const Accepted = (what: string) =>
  Type.Object(
    {
      accepted: Type.Literal(true),
      command: Type.String({ description: 'the QGA command that was sent' }),
      mode: Type.String({ description: what }),
    },
    { description: 'The agent took the request (no error came back before the sync fence)' },
  );

export default async function powerRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  app.post(
    '/vms/:vm/shutdown',
    operation('power', 'shutdown', {
      summary: 'Ask the guest to halt, power down or reboot',
      description:
        'Asynchronous: 202 means the agent accepted the request, not that the guest is down. Success is seen as the ' +
        'VM exiting (or, with --no-shutdown, QMP query-status reporting "shutdown"). The body may be omitted.',
      command: 'guest-shutdown',
      params: VmParams,
      body: Type.Object(
        { mode: Type.Optional(inline(GuestShutdownMode)) },
        { additionalProperties: false },
      ),
      ok: { 202: Accepted('the mode sent, or "powerdown" (the agent default) when none was given') },
      preValidation: emptyBodyIsObject,
    }),
    async (request, reply) => {
      const { vm } = request.params;
      const { mode } = request.body;
      await callAgent(fastify, request, vm, 'guest-shutdown', mode === undefined ? undefined : { mode });
      return reply.code(202).send({ accepted: true as const, command: 'guest-shutdown', mode: mode ?? 'powerdown' });
    },
  );

  app.post(
    '/vms/:vm/suspend',
    operation('power', 'suspend', {
      summary: 'Suspend the guest to disk, to RAM, or both (hybrid)',
      description:
        'ram and hybrid need wakeup support in QEMU (QMP query-current-machine: wakeup-suspend-support), or the ' +
        'guest cannot be woken. Issue POST /agent/sync after the guest resumes. 422 with class Unsupported when the ' +
        'guest cannot suspend that way.',
      command: ['guest-suspend-disk', 'guest-suspend-ram', 'guest-suspend-hybrid'],
      params: VmParams,
      body: Type.Object({ mode: inline(GuestSuspendMode) }, { additionalProperties: false }),
      ok: { 202: Accepted('the suspend mode') },
    }),
    async (request, reply) => {
      const { vm } = request.params;
      const { mode } = request.body;
      const command = SUSPEND_COMMAND[mode];
      await callAgent(fastify, request, vm, command);
      return reply.code(202).send({ accepted: true as const, command, mode });
    },
  );
}
