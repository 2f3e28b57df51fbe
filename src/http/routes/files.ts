/**
 * Guest files over HTTP:
 *  - GET/HEAD/PUT /v1/vms/{vm}/files/content?path= — whole files of any size, streamed in chunks
 *    (Range and resumable uploads), every handle closed on every path (src/files);
 *  - /v1/vms/{vm}/files/handles… — the guest-file-* commands verbatim, with handles tracked per VM
 *    and closed by a reaper when idle.
 */
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { GatewayError, errors } from '../../errors.js';
import type { FilesService } from '../../files/service.js';
import { requestSignal } from '../abort.js';
import { AGENT_ERRORS, VmParams } from '../schemas/common.js';
import { BinaryBody, ContentQuery, UploadQuery, UploadResult } from '../schemas/files.js';
import { handleRoutes } from './files-handles.js';
import { operation } from './operation.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** a streamed body (file upload): bounded by files.noProgressTimeoutMs, not server.requestTimeoutMs (app.ts) */
    streaming?: boolean;
  }
}

const OCTETS = 'application/octet-stream';
/** Response headers of the content routes, as the OpenAPI document shows them. */
const H = {
  'content-length': { type: 'integer', format: 'int64', description: 'bytes in this answer: the file size for a whole, seekable file; what a /proc or /sys file held; absent for pipes' },
  'accept-ranges': { type: 'string', enum: ['bytes', 'none'], description: '`bytes` when the file is seekable (Range works), `none` otherwise' },
  'content-range': { type: 'string', description: 'bytes FIRST-LAST/SIZE of the part sent' },
};
const binaryResponse = (description: string, headers: Record<string, unknown>) => ({
  description,
  headers,
  content: { [OCTETS]: { schema: { type: 'string', format: 'binary', title: 'FileBytes', description: 'the bytes of a guest file, verbatim' } } },
});
async function* noBody(): AsyncGenerator<Buffer> {}

/**
 * The bound of a streamed transfer (files.noProgressTimeoutMs): not its total time, which may be
 * long, but a stall. No byte moving for `ms` → the connection is cut; the transfer then ends as if
 * the client had gone away, which closes its guest handle (upload: the for-await fails; download:
 * the response closes and Fastify destroys the stream).
 */
function cutOnStall(request: FastifyRequest, ms: number, what: string): () => void {
  return () => {
    request.log.warn({ noProgressTimeoutMs: ms }, `${what}: no byte moved for files.noProgressTimeoutMs; connection closed`);
    request.raw.socket?.destroy();
  };
}

/** The upload body, with a timer running while the next piece is awaited from the client. */
async function* stallGuarded<T>(body: AsyncIterable<T>, ms: number, onStall: () => void): AsyncGenerator<T> {
  if (ms <= 0) return yield* body;
  const it = body[Symbol.asyncIterator]();
  try {
    for (;;) {
      const timer = setTimeout(onStall, ms);
      let r: IteratorResult<T>;
      try {
        r = await it.next();
      } finally {
        clearTimeout(timer);
      }
      if (r.done) return;
      yield r.value;
    }
  } finally {
    await it.return?.();
  }
}

/** Route options of a streamed upload: exempt from server.requestTimeoutMs (app.ts), bounded by the stall timer. */
function streamed<T extends object>(opts: T): T & { config: { streaming: true } } {
  const config = 'config' in opts && typeof opts.config === 'object' ? opts.config : {};
  return { ...opts, config: { ...config, streaming: true } };
}

/** A download stream's timer, restarted by every chunk that leaves it; stopped when it ends. */
function watchDownload(stream: Readable, ms: number, onStall: () => void): void {
  if (ms <= 0) return;
  let timer = setTimeout(onStall, ms);
  const restart = (): void => {
    clearTimeout(timer);
    timer = setTimeout(onStall, ms);
  };
  stream.on('data', restart);
  stream.once('close', () => clearTimeout(timer));
  stream.once('end', () => clearTimeout(timer));
}

export default async function fileRoutes(fastify: FastifyInstance): Promise<void> {
  const { files } = fastify.services;
  await fastify.register(contentRoutes(files));
  await fastify.register(handleRoutes(files));
}

/**
 * Guest file content has no validators: the agent offers no change marker, so the gateway sends
 * no ETag and no Last-Modified, and it cannot open a file create-only or replace-only atomically
 * (qemu-ga's open modes have no O_EXCL). `If-Match` and `If-None-Match` (a create-only upload,
 * `If-None-Match: *`) cannot be honoured: refused, not ignored. `If-Modified-Since` and
 * `If-Unmodified-Since` are ignored, as RFC 9110 has it for a resource without a modification
 * date; `If-Range` never matches (the GET handler).
 */
function refuseConditions(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
  for (const name of ['if-match', 'if-none-match'] as const) {
    if (request.headers[name] === undefined) continue;
    done(
      errors.validation(
        `${name === 'if-match' ? 'If-Match' : 'If-None-Match'} is not supported on guest file content: the gateway gives out no entity tags (the agent offers no change marker) ` +
          'and cannot create or replace a guest file atomically; send the request without it',
        { vm: (request.params as { vm?: string }).vm },
      ),
    );
    return;
  }
  done();
}

function contentRoutes(files: FilesService) {
  return async function (fastify: FastifyInstance): Promise<void> {
    // Upload bodies are raw bytes of any type and size: hand the request stream to the route
    // untouched (no buffering, no bodyLimit) — in this plugin's context only.
    fastify.removeAllContentTypeParsers();
    fastify.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    fastify.addHook('onRequest', refuseConditions);
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

    app.get(
      '/vms/:vm/files/content',
      operation('files', 'downloadFile', {
        scope: 'admin',
        // Fastify's automatic HEAD would run this handler and read the whole file.
        exposeHeadRoute: false,
        summary: 'Download a guest file of any size, streamed (supports Range for resuming)',
        description:
          'open "r" → seek (size, Range) → read chunk by chunk (files.readChunkBytes) → close. Content-Length is set ' +
          'when the file is seekable (regular files); pipes stream until EOF without it and ignore Range. /proc and ' +
          '/sys files, whose size the kernel misstates (0, a page), are read whole first: Content-Length is what they ' +
          'hold, `Accept-Ranges: none`, Range ignored. A single `Range: bytes=a-b | a- | -n` answers 206 with Content-Range; one outside the file, 416. ' +
          'If the file shrinks while being sent, the response is cut short (the connection is reset). No validators ' +
          '(the agent offers no change marker): `If-Range` never matches (the whole file, 200), `If-Match` and `If-None-Match` are 400.',
        command: ['guest-file-open', 'guest-file-seek', 'guest-file-read', 'guest-file-close'],
        params: VmParams,
        querystring: ContentQuery,
        headers: Type.Object({
          range: Type.Optional(Type.String({ description: 'one byte range: bytes=a-b, bytes=a- or bytes=-n (206 with Content-Range; outside the file, 416); anything else (several ranges, another unit) is ignored: the whole file' })),
        }),
        ok: {
          200: binaryResponse('the whole file', { 'content-length': H['content-length'], 'accept-ranges': H['accept-ranges'] }),
          206: binaryResponse('the requested byte range', H),
        },
        errors: [...AGENT_ERRORS, 416],
      }),
      async (request, reply) => {
        const { vm } = request.params;
        let plan;
        try {
          // If-Range names a validator, and the gateway gives none out: it never matches, so the
          // whole file is sent (RFC 9110 13.1.5) rather than a part of what may be another file now
          const range = request.headers['if-range'] === undefined ? request.headers.range : undefined;
          plan = await files.download(vm, request.query.path, range, requestSignal(request));
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
        const sent = reply.send(plan.stream);
        const ms = files.settings.noProgressTimeoutMs;
        watchDownload(plan.stream, ms, cutOnStall(request, ms, 'download'));
        return sent;
      },
    );

    app.head(
      '/vms/:vm/files/content',
      operation('files', 'statFile', {
        scope: 'admin',
        summary: 'Size of a guest file (Content-Length), e.g. to resume an upload',
        description: 'The headers GET would send, without the bytes; no ETag (the agent offers no change marker).',
        documentHead: true,
        command: ['guest-file-open', 'guest-file-seek', 'guest-file-close'],
        params: VmParams,
        querystring: ContentQuery,
        ok: {
          200: {
            description: 'Content-Length is the file size (absent if the file is not seekable)',
            headers: { 'content-length': { ...H['content-length'], description: 'the file size in bytes (absent if the file is not seekable)' }, 'accept-ranges': H['accept-ranges'] },
          },
        },
      }),
      async (request, reply) => {
        const size = await files.size(request.params.vm, request.query.path, requestSignal(request));
        reply.code(200).type(OCTETS).header('accept-ranges', size === undefined ? 'none' : 'bytes');
        if (size !== undefined) reply.header('content-length', String(size));
        return reply.send();
      },
    );

    app.put(
      '/vms/:vm/files/content',
      streamed(operation('files', 'uploadFile', {
        scope: 'admin',
        summary: 'Upload a guest file of any size, streamed (truncate, append, or resume at an offset)',
        description:
          'open ("w" | "a" | "r+" with offset) → write chunk by chunk (files.writeChunkBytes), each a separate queued ' +
          'agent command → flush → close. On failure the problem carries `bytesWritten` (bytes confirmed by the ' +
          'agent) so the upload can be resumed with `offset`. `If-Match` and `If-None-Match` (e.g. a create-only `If-None-Match: *`) ' +
          'are 400: the agent cannot create or replace a file atomically, and nothing is written.',
        command: ['guest-file-open', 'guest-file-seek', 'guest-file-write', 'guest-file-flush', 'guest-file-close'],
        params: VmParams,
        querystring: UploadQuery,
        body: { content: { [OCTETS]: { schema: BinaryBody } } },
        ok: { 200: UploadResult },
        errors: [...AGENT_ERRORS, 413, 415, 416],
      })),
      async (request) => {
        const { vm } = request.params;
        const { path, mode, offset } = request.query;
        // The body is the file's bytes whatever its type (curl --data-binary says form-urlencoded,
        // text/plain is common), except a multipart form (curl -F, a generator rendering `binary`
        // as a form), whose envelope would be written into the guest file
        const type = request.headers['content-type'];
        if (type !== undefined && type.trimStart().toLowerCase().startsWith('multipart/')) throw errors.unsupportedMediaType(type, [OCTETS]);
        const max = files.settings.maxUploadBytes;
        const declared = Number(request.headers['content-length'] ?? 0);
        if (max > 0 && declared > max) {
          throw errors.tooLarge(`upload of ${declared} bytes`, max, 'files.maxUploadBytes', { vm });
        }
        const ms = files.settings.noProgressTimeoutMs;
        const raw: AsyncIterable<Buffer | string> = (request.body as IncomingMessage | undefined) ?? noBody();
        const body = stallGuarded(raw, ms, cutOnStall(request, ms, 'upload'));
        const result = await files.upload(vm, path, body, { ...(mode ? { mode } : {}), offset, signal: requestSignal(request) });
        return { path, ...result };
      },
    );
  };
}
