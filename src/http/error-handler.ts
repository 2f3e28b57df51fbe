/**
 * The ONE mapping from anything thrown to an HTTP response: RFC 9457 problem+json with the stable
 * `code` of ../shared/API.md. Route code throws GatewayError; Fastify's own errors (validation,
 * body limits, content types) are translated here; anything else is a 500 that is logged in full
 * and shown to the caller without internals.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { STATUS_CODES, maxHeaderSize } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERRORS, GatewayError, errors, type ErrorCode } from '../errors.js';
import { trackAllowedMethods } from './allowed-methods.js';
import { hopOf } from './plugins/auth.js';
import { RefusalHold, type RefusalHolds } from './refusal-hold.js';
import { capText, unionWords, unknownMemberWords } from './validation-detail.js';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  instance?: string;
  vm?: string;
  command?: string;
  qga?: { class: string; desc: string };
  [extra: string]: unknown;
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

export function problemType(code: ErrorCode): string {
  return `urn:qga-gateway:problem:${code}`;
}

export function toProblem(err: GatewayError, instance?: string): Problem {
  return {
    ...(err.extra ?? {}),
    type: problemType(err.code),
    title: ERRORS[err.code].title,
    status: err.status,
    // an agent's error text may echo a huge argument back (a 2 MB exec path): bounded here
    detail: capText(err.message),
    code: err.code,
    ...(instance ? { instance } : {}),
    ...(err.vm ? { vm: err.vm } : {}),
    ...(err.command ? { command: err.command } : {}),
    ...(err.qga ? { qga: { class: err.qga.class, desc: capText(err.qga.desc) } } : {}),
  };
}

function fromFastify(err: FastifyError, request: FastifyRequest): GatewayError | undefined {
  if (err.validation) {
    const where = err.validationContext ?? 'request';
    const configured: Record<string, number> = {};
    const root = request.routeOptions.schema?.[where as 'body'];
    // a union's failure is said once, in one sentence: its branches' own errors are left out
    const unions = err.validation.filter((v) => v.keyword === 'anyOf' || v.keyword === 'oneOf');
    const inUnion = (v: (typeof unions)[number]): boolean => unions.some((u) => u !== v && v.schemaPath.startsWith(`${u.schemaPath}/`) && v.instancePath.startsWith(u.instancePath));
    const parts = err.validation.filter((v) => !inUnion(v)).map((v) => {
      const { missingProperty: missing, additionalProperty: extra } = v.params;
      const path = `${where}${v.instancePath ? v.instancePath.replace(/\//g, '.') : ''}`;
      if (missing) return `${path}.${String(missing)} is required`;
      if (extra) return `${path}.${String(extra)} ${unknownMemberWords(schemaAt(root, v.schemaPath.replace(/\/[^/]*$/, '')), String(extra))}`;
      if ((v.keyword === 'anyOf' || (v.keyword === 'oneOf' && v.params.passingSchemas == null)) && unions.includes(v)) {
        return `${path} ${unionWords(schemaAt(root, v.schemaPath))}`;
      }
      const range = configuredRange(request, where, v.keyword, v.schemaPath);
      if (range) {
        configured[range.name] = range.max;
        return `${path} ${range.text}`;
      }
      // a cross-field rule (`not`) says in its description what to change
      const rule = v.keyword === 'not' ? schemaAt(request.routeOptions.schema?.[where as 'body'], v.schemaPath) : undefined;
      if (rule !== undefined && typeof rule.description === 'string') return `${path} ${rule.description}`;
      return `${path} ${validationWords(v.keyword, v.params, v.message)}`;
    });
    return errors.validation([...new Set(parts)].join('; '), {
      extra: { ...configured, errors: err.validation.map((v) => ({ in: where, path: capText(v.instancePath, 256), ...exactLimit(v.message, v.params) })) },
    });
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.tooLarge('the request body', request.routeOptions.bodyLimit, request.routeOptions.config?.bodyLimitFrom ?? 'server.bodyLimitBytes');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return errors.unsupportedMediaType(request.headers['content-type'], ['application/json']);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return errors.validation(err.message);
    default:
      break;
  }
  if (err instanceof SyntaxError) return errors.notJson(err);
  const status = err.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    return errors.httpClientError(status, err.message);
  }
  return undefined;
}

const RANGE_KEYWORDS = new Set(['type', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf']);

/**
 * A number whose maximum comes from the configuration (`x-max-from: 'section.setting'`, see
 * schemas/document.ts): the route schema holds only an absolute bound, so any out-of-range value
 * is answered with the range of the configuration in force, as the service answers one between the
 * two bounds (e.g. "must be a whole number from 1 to 3600 (freeze.maxTtlSeconds)"). `name`: the
 * setting's last part, the problem member holding the configured maximum.
 */
function configuredRange(request: FastifyRequest, where: string, keyword: string, schemaPath: string): { text: string; name: string; max: number } | undefined {
  if (!RANGE_KEYWORDS.has(keyword)) return undefined;
  const schema = schemaAt(request.routeOptions.schema?.[where as 'body'], schemaPath.replace(/\/[^/]*$/, ''));
  const setting = schema?.['x-max-from'];
  if (typeof setting !== 'string') return undefined;
  let max: unknown = request.server.services?.config;
  for (const key of setting.split('.')) max = max !== null && typeof max === 'object' ? (max as Record<string, unknown>)[key] : undefined;
  if (typeof max !== 'number') return undefined;
  const min = typeof schema?.minimum === 'number' ? schema.minimum : 0;
  const kind = schema?.type === 'integer' ? 'a whole number' : 'a number';
  return { text: `must be ${kind} from ${min} to ${max} (${setting})`, name: setting.split('.').pop() ?? setting, max };
}

/** the 64-bit limits Ajv checks on doubles (2^63 prints as 9223372036854776000), exactly, and what they bound */
const EXACT_LIMITS = new Map<number, { limit: string; comparison: '<=' | '>='; type: string }>([
  [2 ** 63, { limit: '9223372036854775807', comparison: '<=', type: 'a signed 64-bit integer' }],
  [2 ** 64, { limit: '18446744073709551615', comparison: '<=', type: 'an unsigned 64-bit integer' }],
  [-(2 ** 63), { limit: '-9223372036854775808', comparison: '>=', type: 'a signed 64-bit integer' }],
]);

/**
 * An `errors[]` entry's message and params, Ajv's except for a 64-bit limit, which a JSON number
 * cannot state (2^63 - 1 reads back as 2^63): said as the inclusive bound, the limit an exact
 * decimal string.
 */
function exactLimit(message: string | undefined, params: Record<string, unknown>): { message: string | undefined; params: Record<string, unknown> } {
  const exact = typeof params.limit === 'number' ? EXACT_LIMITS.get(params.limit) : undefined;
  if (exact === undefined) return { message, params: capParams(params) };
  return { message: `must be ${exact.comparison} ${exact.limit}`, params: { ...capParams(params), comparison: exact.comparison, limit: exact.limit } };
}

/** Ajv's params with the caller's own strings (an unknown member's name) bounded */
function capParams(params: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(params)) out[k] = typeof x === 'string' ? capText(x, 256) : x;
  return out;
}

/** The subschema at an Ajv schemaPath ('#/not', '#/properties/x/not') of a route schema. */
function schemaAt(root: unknown, schemaPath: string): Record<string, unknown> | undefined {
  let cur: unknown = root;
  for (const key of schemaPath.replace(/^#\/?/, '').split('/').filter((k) => k !== '')) {
    cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[decodeURIComponent(key.replace(/~1/g, '/').replace(/~0/g, '~'))] : undefined;
  }
  return cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>) : undefined;
}

/**
 * Ajv's message, said so that a caller knows what to send: bounds that are 64-bit limits (a double
 * cannot print them exactly: "must be < 9223372036854776000") and formats named in words.
 */
function validationWords(keyword: string, params: Record<string, unknown>, message: string | undefined): string {
  const exact = typeof params.limit === 'number' ? EXACT_LIMITS.get(params.limit) : undefined;
  if (exact !== undefined) return `must be ${exact.comparison === '<=' ? 'at most' : 'at least'} ${exact.limit} (${exact.type})`;
  if (keyword === 'format' && params.format === 'byte') return 'must be base64 (A-Z, a-z, 0-9, + and /, padded with = to a multiple of 4 characters)';
  if (keyword === 'format' && params.format === 'date-time') return 'must be an RFC 3339 date-time such as 2026-01-02T03:04:05Z';
  if (keyword === 'enum' && Array.isArray(params.allowedValues)) return `must be one of ${params.allowedValues.map((x) => JSON.stringify(x)).join(', ')}`;
  if (keyword === 'pattern' && typeof params.pattern === 'string') return `must match the pattern ${params.pattern}`;
  return message ?? 'is invalid';
}

/** the path of a request URL, without its query string */
function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/**
 * Answers whose 401/403 is not a refusal of the caller: COMMAND_DISABLED is the guest admin's
 * choice (qemu-ga -b), not an access denial, so the request log does not audit it as one.
 */
const notDenials = new WeakSet<FastifyReply>();
export function markNotDenial(reply: FastifyReply): void {
  notDenials.add(reply);
}
export function isNotDenial(reply: FastifyReply): boolean {
  return notDenials.has(reply);
}

export function sendProblem(reply: FastifyReply, err: GatewayError, request?: FastifyRequest): FastifyReply {
  if (err.code === 'COMMAND_DISABLED') markNotDenial(reply);
  if (err.retryAfter !== undefined) reply.header('retry-after', String(Math.max(1, Math.ceil(err.retryAfter))));
  if (err.code === 'UNAUTHENTICATED') reply.header('www-authenticate', 'Bearer realm="qga-gateway"');
  // a string body: Fastify skips the preSerialization hooks and its serializer (issue 14: refusals cheap)
  return reply
    .code(err.status)
    .type(PROBLEM_CONTENT_TYPE)
    .send(JSON.stringify(toProblem(err, request === undefined ? undefined : pathOf(request.url))));
}

/**
 * `refusalHoldMs` (limits.refusalHoldMs): a 429 (QUEUE_FULL, RATE_LIMITED) is answered that long
 * after the refusal, on a shared timer (refusal-hold.ts); 0 = at once. Held answers are sent at
 * once when the app closes.
 */
export function registerErrorHandling(app: FastifyInstance, opts: { refusalHoldMs?: number } = {}): void {
  const holds = new RefusalHold(opts.refusalHoldMs ?? 0, (reply, err) => void sendProblem(reply, err, reply.request));
  app.decorate('refusals', holds as RefusalHolds);
  app.addHook('preClose', (done) => {
    holds.release();
    done();
  });
  app.setErrorHandler((error: FastifyError, request, reply) => {
    // the client's own request stream failed under a streamed upload ('aborted', ECONNRESET): it went away
    const clientGone = request.raw.destroyed && (error.code === 'ECONNRESET' || error.message === 'aborted');
    if (error.name === 'AbortError' || clientGone) {
      if (request.server.shuttingDown) {
        // the shutdown grace time ran out: the caller is still there and should retry elsewhere
        return sendProblem(reply, errors.shuttingDown('the gateway is shutting down; the request was abandoned'), request);
      }
      // the caller went away: nobody reads an answer, and it is no error of ours; the request's one
      // line (status 499, aborted) was written when its connection closed (plugins/request-log.ts)
      request.log.debug('client went away; request abandoned');
      return reply.code(499).send();
    }
    const ge = error instanceof GatewayError ? error : fromFastify(error, request);
    if (ge) {
      if (ge.status >= 500) request.log.warn({ code: ge.code, vm: ge.vm, command: ge.command, detail: ge.message }, 'request failed');
      // overload (429): answered after limits.refusalHoldMs, so that clients retrying at once come back
      // paced; not a request another node forwarded here (cluster mode): its answer goes back at once,
      // freeing that node's connection to this one for its other requests, and that node holds it
      if (ge.status === 429 && hopOf(request) === undefined && holds.hold(reply, ge)) return undefined;
      return sendProblem(reply, ge, request);
    }
    request.log.error({ err: error }, 'unhandled error');
    return sendProblem(reply, errors.internal(), request);
  });
  const allowedMethods = trackAllowedMethods(app);
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    const allow = allowedMethods(path);
    if (allow.length > 0) {
      reply.header('allow', allow.join(', '));
      return sendProblem(reply, errors.methodNotAllowed(request.method, path, allow), request);
    }
    return sendProblem(reply, errors.notFound(`no route ${request.method} ${path}: /openapi.json lists the routes`), request);
  });
}

/**
 * Errors Fastify's router raises before any route runs (a path parameter over maxParamLength, a
 * URL that cannot be decoded): problem+json like every other error.
 */
export function frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const ge =
    error.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? errors.uriTooLong('a path parameter is longer than the gateway accepts (256 characters; a VM name is at most 128)')
      : error.statusCode === 414
        ? errors.uriTooLong(error.message)
        : errors.validation(error.message);
  // no onRequest hook runs before a router error: name the request here
  reply.header('x-request-id', request.id);
  // nor does onResponse: its request line and metrics (plugins/request-log.ts)
  request.server.answeredByRouter?.(request, reply);
  void sendProblem(reply, ge, request);
}

/**
 * The parser's limit (http.maxHeaderSize, for the request line and headers together) was passed
 * inside the request line: a URL too long, not the headers. The bytes it had start with a method,
 * and their first line ends past the limit or not at all. A request line split over several reads
 * is not recognized (the last read starts mid-URL) and stays 431.
 */
function requestLineTooLong(raw: unknown): boolean {
  if (!Buffer.isBuffer(raw) || !/^[A-Z]{3,10} \S/.test(raw.subarray(0, 16).toString('latin1'))) return false;
  const end = raw.indexOf('\n');
  return end === -1 || end >= maxHeaderSize;
}

/**
 * Errors Node's HTTP parser raises before Fastify sees a request (headers over the limit, a
 * malformed request line): problem+json written on the raw socket, then the connection is closed.
 * A request that timed out while its headers trickled in is simply cut off.
 */
export function clientErrorHandler(err: Error & { code?: string; rawPacket?: unknown }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || !socket.writable) {
    socket.destroy();
    return;
  }
  const ge =
    err.code !== 'HPE_HEADER_OVERFLOW'
      ? errors.validation('the request could not be parsed as HTTP')
      : requestLineTooLong(err.rawPacket)
        ? errors.uriTooLong("the request line is longer than the server's header limit: shorten the URL (its query string, most likely)")
        : errors.headersTooLarge();
  const body = JSON.stringify(toProblem(ge));
  socket.end(
    `HTTP/1.1 ${ge.status} ${STATUS_CODES[ge.status] ?? ''}\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
