/**
 * POST /v1/vms/{vm}/exec and GET /v1/vms/{vm}/exec/{pid}: guest-exec and guest-exec-status made
 * usable — stdin as text or base64, a `wait` that returns the finished status, output decoded
 * when it is text, and final statuses kept on the gateway (src/exec).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Static } from 'typebox';
import { errors } from '../../errors.js';
import { decodeStdin } from '../../exec/input.js';
import { utf8TextOf } from '../../exec/output.js';
import type { ExecStatusRecord } from '../../exec/types.js';
import { requestSignal } from '../abort.js';
import { AGENT_ERRORS, VmParams } from '../schemas/common.js';
import { ExecBody, ExecParams, ExecResult, ExecStarted, ExecStatusQuery } from '../schemas/exec.js';
import { operation } from './operation.js';
import { base64BodyLimit } from '../json-body.js';

/** Room in the JSON body for path, args and env besides the base64 stdin. */

export function execView(rec: ExecStatusRecord): Static<typeof ExecResult> {
  const s = rec.status;
  const view: Static<typeof ExecResult> = { pid: rec.pid, ...s };
  if (s['out-data'] !== undefined) {
    const t = utf8TextOf(s['out-data'], s['out-truncated'] === true);
    if (t !== undefined) view.outText = t;
  }
  if (s['err-data'] !== undefined) {
    const t = utf8TextOf(s['err-data'], s['err-truncated'] === true);
    if (t !== undefined) view.errText = t;
  }
  if (rec.collectedAt !== undefined) view.collectedAt = new Date(rec.collectedAt).toISOString();
  return view;
}

export default async function execRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { exec } = fastify.services;
  const { maxWaitSeconds, maxInputBytes } = exec.settings;

  const checkWait = (wait: number | undefined): void => {
    if (wait !== undefined && wait > maxWaitSeconds) {
      throw errors.validation(`wait ${wait} s is above the configured maximum of ${maxWaitSeconds} s (exec.maxWaitSeconds)`, {
        extra: { maxWaitSeconds },
      });
    }
  };

  app.post(
    '/vms/:vm/exec',
    operation('exec', 'execCommand', {
      scope: 'admin',
      summary: 'Run a program in the guest; with `wait`, return its exit status and output',
      description:
        'Without `wait`: 202 {pid} at once. With `wait` (seconds): polls guest-exec-status with backoff and returns the ' +
        'finished status (200), or 202 {pid, exited: false} if the process is still running when `wait` runs out. A process nobody ' +
        'polls is reaped by the gateway, which keeps its final status for exec.resultTtlSeconds.',
      command: ['guest-exec', 'guest-exec-status'],
      params: VmParams,
      body: ExecBody,
      ok: { 200: ExecResult, 202: ExecStarted },
      okHeaders: { 202: { Location: { description: "the process's status: GET /v1/vms/{vm}/exec/{pid}", schema: { type: 'string' } } } },
      errors: [...AGENT_ERRORS, 413],
      bodyLimit: base64BodyLimit(maxInputBytes, fastify.services.config.server.bodyLimitBytes),
      bodyLimitFrom: 'exec.maxInputBytes as base64 + server.bodyLimitBytes',
    }),
    async (request, reply) => {
      const { vm } = request.params;
      const body = request.body;
      checkWait(body.wait);
      const input = decodeStdin(body, maxInputBytes);
      const pid = await exec.start(vm, {
        path: body.path,
        arg: body.arg,
        env: body.env,
        input,
        capture: body['capture-output'],
      });
      reply.header('location', `/v1/vms/${vm}/exec/${pid}`);
      if (body.wait === undefined) return reply.code(202).send({ pid });
      const signal = requestSignal(request);
      let rec: ExecStatusRecord;
      try {
        rec = await exec.wait(vm, pid, body.wait * 1000, signal);
      } catch (e) {
        // The caller left (nobody reads this answer), or the gateway is stopping (the grace ran out):
        // the process still runs as far as anyone knows (its result: GET …/exec/{pid}, Location)
        if (signal.aborted) return reply.code(202).send({ pid, exited: false });
        throw e;
      }
      // `wait` ran out: say so (exited: false), so that a 202 is not taken for a result
      if (!rec.status.exited) return reply.code(202).send({ pid, exited: false });
      return reply.code(200).send(execView(rec));
    },
  );

  app.get(
    '/vms/:vm/exec/:pid',
    operation('exec', 'getExecStatus', {
      scope: 'admin',
      summary: 'Status of a process started by POST /exec; its final status stays readable after exit',
      description:
        '`exited: false` while it runs. Once exited, the result (exit code, output) is kept on the gateway for ' +
        'exec.resultTtlSeconds, so repeating this GET returns it again although the agent hands it out only once. ' +
        'A pid the agent does not know (never started, or collected elsewhere) → 404 with the agent error in `qga`.',
      command: 'guest-exec-status',
      params: ExecParams,
      querystring: ExecStatusQuery,
      ok: { 200: ExecResult },
    }),
    async (request) => {
      const { vm, pid } = request.params;
      const { wait } = request.query;
      checkWait(wait);
      const signal = requestSignal(request);
      const rec = wait === undefined ? await exec.status(vm, pid, signal) : await exec.wait(vm, pid, wait * 1000, signal);
      return execView(rec);
    },
  );
}
