/**
 * The raw handle routes, /v1/vms/{vm}/files/handles…: the guest-file-* commands verbatim, with
 * every handle tracked per VM and closed by a reaper when idle (src/files/raw.ts). Registered by
 * ./files.ts.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { errors } from '../../errors.js';
import { base64DecodedLength } from '../../exec/output.js';
import type { FilesService } from '../../files/service.js';
import type { Whence } from '../../files/guest.js';
import { requestSignal } from '../abort.js';
import { AGENT_ERRORS, VmParams, problemResponses } from '../schemas/common.js';
import { HandleList, HandleParams, OpenBody, OpenResult, ReadBody, SeekBody, WriteBody } from '../schemas/files.js';
import { GuestFileRead, GuestFileSeek, GuestFileWrite } from '../schemas/qga.js';

const BODY_SLACK = 64 * 1024;
const WHENCE: Record<string, Whence> = { set: 0, cur: 1, end: 2 };

function toWhence(w: number | string): Whence {
  const n = typeof w === 'string' ? WHENCE[w] : w;
  if (n !== 0 && n !== 1 && n !== 2) throw errors.validation(`whence must be set, cur, end or 0, 1, 2 (got ${String(w)})`);
  return n;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function handleRoutes(files: FilesService) {
  return async function (fastify: FastifyInstance): Promise<void> {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    const { raw } = files;
    const idleMs = files.settings.handleIdleSeconds * 1000;
    const maxWrite = files.settings.maxRawWriteBytes;

    app.get(
      '/vms/:vm/files/handles',
      {
        config: { scope: 'admin' },
        schema: {
          operationId: 'listFileHandles',
          tags: ['files'],
          summary: 'File handles open through the handle API on this VM, with their idle expiry',
          params: VmParams,
          response: { 200: HandleList, ...problemResponses([400, 401, 403]) },
        },
      },
      async (request) => ({
        handles: raw.list(request.params.vm).map((t) => ({
          handle: t.handle,
          ...(t.path !== undefined ? { path: t.path } : {}),
          ...(t.mode !== undefined ? { mode: t.mode } : {}),
          openedAt: iso(t.openedAt),
          lastUsedAt: iso(t.lastUsedAt),
          expiresAt: iso(t.expiresAt),
        })),
      }),
    );

    app.post(
      '/vms/:vm/files/handles',
      {
        config: { scope: 'admin' },
        schema: {
          operationId: 'openFile',
          tags: ['files'],
          summary: 'Open a guest file; the handle is closed by the gateway after files.handleIdleSeconds unused',
          'x-qga-command': 'guest-file-open',
          params: VmParams,
          body: OpenBody,
          response: { 201: OpenResult, ...problemResponses(AGENT_ERRORS) },
        },
      },
      async (request, reply) => {
        const handle = await raw.open(request.params.vm, request.body.path, request.body.mode ?? 'r');
        return reply
          .code(201)
          .header('location', `/v1/vms/${request.params.vm}/files/handles/${handle}`)
          .send({ handle, expiresAt: iso(Date.now() + idleMs) });
      },
    );

    app.post(
      '/vms/:vm/files/handles/:handle/read',
      {
        config: { scope: 'admin' },
        schema: {
          operationId: 'readFile',
          tags: ['files'],
          summary: 'Read from an open handle (base64), at most files.maxRawReadBytes per call',
          'x-qga-command': 'guest-file-read',
          params: HandleParams,
          body: ReadBody,
          response: { 200: GuestFileRead, ...problemResponses(AGENT_ERRORS) },
        },
      },
      async (request) => {
        const { vm, handle } = request.params;
        const r = await raw.read(vm, handle, request.body.count, requestSignal(request));
        return { count: r.count, 'buf-b64': r.b64, eof: r.eof };
      },
    );

    app.post(
      '/vms/:vm/files/handles/:handle/write',
      {
        config: { scope: 'admin' },
        bodyLimit: Math.ceil((maxWrite * 4) / 3) + BODY_SLACK,
        schema: {
          operationId: 'writeFile',
          tags: ['files'],
          summary: 'Write base64 data to an open handle, at most files.maxRawWriteBytes per call',
          'x-qga-command': 'guest-file-write',
          params: HandleParams,
          body: WriteBody,
          response: { 200: GuestFileWrite, ...problemResponses([...AGENT_ERRORS, 413]) },
        },
      },
      async (request) => {
        const { vm, handle } = request.params;
        const b64 = request.body['buf-b64'];
        if (base64DecodedLength(b64) > maxWrite) {
          throw errors.tooLarge('buf-b64 (use PUT …/files/content for more)', maxWrite, 'files.maxRawWriteBytes', { vm });
        }
        return raw.write(vm, handle, b64, request.body.count, requestSignal(request));
      },
    );

    app.post(
      '/vms/:vm/files/handles/:handle/seek',
      {
        config: { scope: 'admin' },
        schema: {
          operationId: 'seekFile',
          tags: ['files'],
          summary: 'Seek in an open handle; returns the new position',
          'x-qga-command': 'guest-file-seek',
          params: HandleParams,
          body: SeekBody,
          response: { 200: GuestFileSeek, ...problemResponses(AGENT_ERRORS) },
        },
      },
      async (request) => {
        const { vm, handle } = request.params;
        return raw.seek(vm, handle, request.body.offset, toWhence(request.body.whence), requestSignal(request));
      },
    );

    app.post(
      '/vms/:vm/files/handles/:handle/flush',
      {
        config: { scope: 'admin' },
        schema: {
          operationId: 'flushFile',
          tags: ['files'],
          summary: 'Flush buffered writes of an open handle',
          'x-qga-command': 'guest-file-flush',
          params: HandleParams,
          response: { 204: Type.Null({ description: 'flushed' }), ...problemResponses(AGENT_ERRORS) },
        },
      },
      async (request, reply) => {
        await raw.flush(request.params.vm, request.params.handle, requestSignal(request));
        return reply.code(204).send(null);
      },
    );

    app.delete(
      '/vms/:vm/files/handles/:handle',
      {
        config: { scope: 'admin' },
        schema: {
          operationId: 'closeFile',
          tags: ['files'],
          summary: 'Close an open handle',
          'x-qga-command': 'guest-file-close',
          params: HandleParams,
          response: { 204: Type.Null({ description: 'closed' }), ...problemResponses(AGENT_ERRORS) },
        },
      },
      async (request, reply) => {
        await raw.close(request.params.vm, request.params.handle);
        return reply.code(204).send(null);
      },
    );
  };
}
