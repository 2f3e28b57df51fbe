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
import { AGENT_ERRORS, VmParams } from '../schemas/common.js';
import { HandleList, HandleParams, OpenBody, OpenResult, ReadBody, SeekBody, WriteBody } from '../schemas/files.js';
import { GuestFileRead, GuestFileSeek, GuestFileWrite } from '../schemas/qga.js';
import { operation } from './operation.js';
import { base64BodyLimit } from '../json-body.js';

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
      operation('files', 'listFileHandles', {
        scope: 'admin',
        summary: 'File handles open through the handle API on this VM, with their idle expiry',
        params: VmParams,
        ok: { 200: HandleList },
        errors: [400, 401, 403, 404],
        // cluster mode: the VM's node is gone or unreachable (plugins/forward.ts)
        codes: ['NODE_UNAVAILABLE'],
      }),
      async (request) => {
        // a VM that is not registered is 404 VM_NOT_FOUND, as on every other VM route (not an empty list)
        await fastify.services.registry.require(request.params.vm);
        return {
          handles: raw.list(request.params.vm).map((t) => ({
            handle: t.handle,
            ...(t.path !== undefined ? { path: t.path } : {}),
            ...(t.mode !== undefined ? { mode: t.mode } : {}),
            openedAt: iso(t.openedAt),
            lastUsedAt: iso(t.lastUsedAt),
            expiresAt: iso(t.expiresAt),
          })),
        };
      },
    );

    app.post(
      '/vms/:vm/files/handles',
      operation('files', 'openFile', {
        scope: 'admin',
        summary: 'Open a guest file; the handle is closed by the gateway after files.handleIdleSeconds unused',
        command: 'guest-file-open',
        params: VmParams,
        body: OpenBody,
        ok: { 201: OpenResult },
      }),
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
      operation('files', 'readFile', {
        scope: 'admin',
        summary: 'Read from an open handle (base64), at most files.maxRawReadBytes per call',
        command: 'guest-file-read',
        params: HandleParams,
        body: ReadBody,
        ok: { 200: GuestFileRead },
      }),
      async (request) => {
        const { vm, handle } = request.params;
        const r = await raw.read(vm, handle, request.body.count, requestSignal(request));
        return { count: r.count, 'buf-b64': r.b64, eof: r.eof };
      },
    );

    app.post(
      '/vms/:vm/files/handles/:handle/write',
      operation('files', 'writeFile', {
        scope: 'admin',
        summary: 'Write base64 data to an open handle, at most files.maxRawWriteBytes per call',
        command: 'guest-file-write',
        params: HandleParams,
        body: WriteBody,
        ok: { 200: GuestFileWrite },
        errors: [...AGENT_ERRORS, 413],
        bodyLimit: base64BodyLimit(maxWrite, fastify.services.config.server.bodyLimitBytes),
        bodyLimitFrom: 'files.maxRawWriteBytes as base64 + server.bodyLimitBytes',
      }),
      async (request) => {
        const { vm, handle } = request.params;
        const b64 = request.body['buf-b64'];
        const length = base64DecodedLength(b64);
        if (length > maxWrite) {
          throw errors.tooLarge('buf-b64 (use PUT …/files/content for more)', maxWrite, 'files.maxRawWriteBytes', { vm });
        }
        // the agent refuses it too, as an error of its own (422): said here as what it is
        const count = request.body.count;
        if (count !== undefined && count > length) throw errors.validation(`count ${count} is more than the ${length} bytes of buf-b64`, { vm });
        return raw.write(vm, handle, b64, request.body.count, requestSignal(request));
      },
    );

    app.post(
      '/vms/:vm/files/handles/:handle/seek',
      operation('files', 'seekFile', {
        scope: 'admin',
        summary: 'Seek in an open handle; returns the new position',
        command: 'guest-file-seek',
        params: HandleParams,
        body: SeekBody,
        ok: { 200: GuestFileSeek },
      }),
      async (request) => {
        const { vm, handle } = request.params;
        return raw.seek(vm, handle, request.body.offset, toWhence(request.body.whence), requestSignal(request));
      },
    );

    app.post(
      '/vms/:vm/files/handles/:handle/flush',
      operation('files', 'flushFile', {
        scope: 'admin',
        summary: 'Flush buffered writes of an open handle',
        command: 'guest-file-flush',
        params: HandleParams,
        ok: { 204: Type.Null({ description: 'flushed' }) },
      }),
      async (request, reply) => {
        await raw.flush(request.params.vm, request.params.handle, requestSignal(request));
        return reply.code(204).send(null);
      },
    );

    app.delete(
      '/vms/:vm/files/handles/:handle',
      operation('files', 'closeFile', {
        scope: 'admin',
        summary: 'Close an open handle',
        command: 'guest-file-close',
        params: HandleParams,
        ok: { 204: Type.Null({ description: 'closed' }) },
      }),
      async (request, reply) => {
        await raw.close(request.params.vm, request.params.handle);
        return reply.code(204).send(null);
      },
    );
  };
}
