/**
 * Guest files over HTTP:
 *  - GET/HEAD/PUT /v1/vms/{vm}/files/content?path= — whole files of any size, streamed in chunks
 *    (Range and resumable uploads), every handle closed on every path (src/files);
 *  - /v1/vms/{vm}/files/handles… — the guest-file-* commands verbatim, with handles tracked per VM
 *    and closed by a reaper when idle.
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { GatewayError } from '../../errors.js';
import { base64DecodedLength } from '../../exec/output.js';
import { filesServiceFor } from '../../files/index.js';
import type { FilesService } from '../../files/service.js';
import type { Whence } from '../../files/guest.js';
import { requestSignal } from '../abort.js';
import { AGENT_ERRORS, VmParams, problemResponses } from '../schemas/common.js';
import {
  BinaryBody,
  ContentQuery,
  HandleList,
  HandleParams,
  OpenBody,
  OpenResult,
  ReadBody,
  SeekBody,
  UploadQuery,
  UploadResult,
  WriteBody,
} from '../schemas/files.js';
import { GuestFileRead, GuestFileSeek, GuestFileWrite, registerQgaSchemas } from '../schemas/qga.js';

const OCTETS = 'application/octet-stream';
const binaryResponse = (description: string) => ({
  description,
  content: { [OCTETS]: { schema: { type: 'string', format: 'binary' } } },
});
const BODY_SLACK = 64 * 1024;
const WHENCE: Record<string, Whence> = { set: 0, cur: 1, end: 2 };

function toWhence(w: number | string): Whence {
  const n = typeof w === 'string' ? WHENCE[w] : w;
  if (n !== 0 && n !== 1 && n !== 2) throw new GatewayError('VALIDATION_FAILED', `whence must be set, cur, end or 0, 1, 2 (got ${String(w)})`);
  return n;
}

const iso = (ms: number) => new Date(ms).toISOString();

async function* noBody(): AsyncGenerator<Buffer> {}

export default async function fileRoutes(fastify: FastifyInstance): Promise<void> {
  registerQgaSchemas(fastify);
  const files = filesServiceFor(fastify.services, fastify.log);
  await fastify.register(contentRoutes(files));
  await fastify.register(handleRoutes(files));
}

function contentRoutes(files: FilesService) {
  return async function (fastify: FastifyInstance): Promise<void> {
    // Upload bodies are raw bytes of any type and size: hand the request stream to the route
    // untouched (no buffering, no bodyLimit) — in this plugin's context only.
    fastify.removeAllContentTypeParsers();
    fastify.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get(
      '/vms/:vm/files/content',
      {
        config: { scope: 'admin' },
        // Fastify's automatic HEAD would run this handler and read the whole file.
        exposeHeadRoute: false,
        schema: {
          operationId: 'downloadFile',
          tags: ['files'],
          summary: 'Download a guest file of any size, streamed (supports Range for resuming)',
          description:
            'open "r" → seek (size, Range) → read chunk by chunk (files.readChunkBytes) → close. Content-Length is set ' +
            'when the file is seekable (regular files); pipes and /proc files stream until EOF without it and ignore ' +
            'Range. A single `Range: bytes=a-b | a- | -n` answers 206 with Content-Range; one outside the file, 416. ' +
            'If the file shrinks while being sent, the response is cut short (the connection is reset).',
          'x-qga-command': ['guest-file-open', 'guest-file-seek', 'guest-file-read', 'guest-file-close'],
          params: VmParams,
          querystring: ContentQuery,
          response: {
            200: binaryResponse('the whole file'),
            206: binaryResponse('the requested byte range'),
            ...problemResponses([...AGENT_ERRORS, 416]),
          },
        },
      },
      async (request, reply) => {
        const { vm } = request.params;
        let plan;
        try {
          plan = await files.download(vm, request.query.path, request.headers.range, requestSignal(request));
        } catch (e) {
          const size = e instanceof GatewayError ? e.extra?.size : undefined;
          if (e instanceof GatewayError && e.code === 'RANGE_NOT_SATISFIABLE' && typeof size === 'number') {
            reply.header('content-range', `bytes */${size}`);
          }
          throw e;
        }
        reply.code(plan.status).type(OCTETS).header('accept-ranges', plan.size === undefined ? 'none' : 'bytes');
        if (plan.length !== undefined) reply.header('content-length', String(plan.length));
        if (plan.status === 206 && plan.length !== undefined) {
          reply.header('content-range', `bytes ${plan.start}-${plan.start + plan.length - 1}/${plan.size}`);
        }
        return reply.send(plan.stream);
      },
    );

    app.head(
      '/vms/:vm/files/content',
      {
        config: { scope: 'admin' },
        schema: {
          operationId: 'statFile',
          tags: ['files'],
          summary: 'Size of a guest file (Content-Length), e.g. to resume an upload',
          'x-qga-command': ['guest-file-open', 'guest-file-seek', 'guest-file-close'],
          params: VmParams,
          querystring: ContentQuery,
          response: { 200: { description: 'Content-Length is the file size (absent if the file is not seekable)' }, ...problemResponses(AGENT_ERRORS) },
        },
      },
      async (request, reply) => {
        const size = await files.size(request.params.vm, request.query.path, requestSignal(request));
        reply.code(200).type(OCTETS).header('accept-ranges', size === undefined ? 'none' : 'bytes');
        if (size !== undefined) reply.header('content-length', String(size));
        return reply.send();
      },
    );

    app.put(
      '/vms/:vm/files/content',
      {
        config: { scope: 'admin' },
        schema: {
          operationId: 'uploadFile',
          tags: ['files'],
          summary: 'Upload a guest file of any size, streamed (truncate, append, or resume at an offset)',
          description:
            'open ("w" | "a" | "r+" with offset) → write chunk by chunk (files.writeChunkBytes), each a separate queued ' +
            'agent command → flush → close. On failure the problem carries `bytesWritten` (bytes confirmed by the ' +
            'agent) so the upload can be resumed with `offset`.',
          'x-qga-command': ['guest-file-open', 'guest-file-seek', 'guest-file-write', 'guest-file-flush', 'guest-file-close'],
          params: VmParams,
          querystring: UploadQuery,
          body: { content: { [OCTETS]: { schema: BinaryBody } } },
          response: { 200: UploadResult, ...problemResponses([...AGENT_ERRORS, 413, 416]) },
        },
      },
      async (request) => {
        const { vm } = request.params;
        const { path, mode, offset } = request.query;
        const max = files.settings.maxUploadBytes;
        const declared = Number(request.headers['content-length'] ?? 0);
        if (max > 0 && declared > max) {
          throw new GatewayError('PAYLOAD_TOO_LARGE', `upload of ${declared} bytes is larger than the configured cap of ${max} bytes (files.maxUploadBytes)`, {
            vm,
            extra: { limit: max },
          });
        }
        const body: AsyncIterable<Buffer | string> = (request.body as IncomingMessage | undefined) ?? noBody();
        const result = await files.upload(vm, path, body, { mode: mode ?? 'truncate', offset, signal: requestSignal(request) });
        return { path, ...result };
      },
    );
  };
}

function handleRoutes(files: FilesService) {
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
          throw new GatewayError('PAYLOAD_TOO_LARGE', `buf-b64 is larger than ${maxWrite} bytes (files.maxRawWriteBytes); use PUT …/files/content`, {
            vm,
            extra: { limit: maxWrite },
          });
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
