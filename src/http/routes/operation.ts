/**
 * The route options every documented operation spells out: its OpenAPI entry (tag, operationId,
 * summary, description, the QGA command it maps to), the scope it needs, its request schemas and
 * its responses — the success ones as given, the problem+json ones by status (by default those
 * every agent-backed route can produce).
 *
 *   app.post('/vms/:vm/files/handles/:handle/seek', operation('files', 'seekFile', {
 *     summary: 'Seek in an open handle', command: 'guest-file-seek',
 *     params: HandleParams, body: SeekBody, ok: { 200: GuestFileSeek },
 *   }), handler)
 */
import type { preValidationHookHandler } from 'fastify';
import type { TSchema } from 'typebox';
import type { Scope } from '../../config/schema.js';
import type { ErrorCode } from '../../errors.js';
import { NEVER_REFUSED } from '../plugins/limits.js';
import { AGENT_ERRORS, problemCodes, problemResponses } from '../schemas/common.js';

declare module 'fastify' {
  interface FastifySchema {
    /** the problem codes the operation can answer with, exported into OpenAPI as an extension */
    'x-problem-codes'?: readonly string[];
  }
}

export interface Operation {
  summary: string;
  description?: string;
  /** the QGA command(s) it maps to (OpenAPI `x-qga-command`) */
  command?: string | string[];
  /** the scope a token needs where the method's default (read for GET and HEAD, else write) is not it */
  scope?: Scope;
  params?: TSchema;
  querystring?: TSchema;
  headers?: TSchema;
  body?: TSchema;
  /** the success responses by status, e.g. `{ 200: GuestFileSeek }` */
  ok: object;
  /** what each success status means, where one schema serves several (200 and 201): the document's descriptions */
  okDescriptions?: Readonly<Record<number, string>>;
  /** response headers of a success status (documented: OpenAPI header objects by name) */
  okHeaders?: Readonly<Record<number, Record<string, object>>>;
  /** the statuses of its problem+json responses; AGENT_ERRORS unless given */
  errors?: readonly number[];
  /** codes it raises beyond those its statuses imply (schemas/common.ts: problemCodes) */
  codes?: readonly ErrorCode[];
  /** a problem+json body of its own for a status whose problem carries more members (default: Problem) */
  problems?: Readonly<Partial<Record<number, TSchema>>>;
  /** it needs no credentials (config.public): no 401/403 */
  public?: boolean;
  bodyLimit?: number;
  /** the settings `bodyLimit` comes from, as a 413 names them (default server.bodyLimitBytes) */
  bodyLimitFrom?: string;
  preValidation?: preValidationHookHandler;
  exposeHeadRoute?: boolean;
  /** an explicit HEAD route that belongs in the OpenAPI document (Fastify's automatic ones do not) */
  documentHead?: boolean;
}

/**
 * The options of the route of operation `operationId`, listed under `tag`. The request schemas
 * (params, querystring, headers, body) go into the route schema as given, so they keep their types
 * for the handler.
 */
export function operation<O extends Operation>(tag: string, operationId: string, op: O) {
  const { summary, description, command, scope, ok, okDescriptions, okHeaders, errors, codes, problems: ownProblems, public: isPublic, bodyLimit, bodyLimitFrom, preValidation, exposeHeadRoute, documentHead, ...request } = op;
  const problems = problemCodes(withAdmission(operationId, errors ?? AGENT_ERRORS), {
    operationId,
    tag,
    body: request.body !== undefined,
    public: isPublic === true,
    agent: command !== undefined,
  }, codes);
  // Typed as the success responses alone, as the literal `{ 200: X, ...problemResponses(…) }` is:
  // the reply type comes from them (errors are thrown, never returned).
  const documented: Record<number, object> = problemResponses(problems);
  for (const [status, schema] of Object.entries(ownProblems ?? {})) {
    const r = documented[Number(status)];
    if (r && schema) documented[Number(status)] = { ...r, content: { 'application/problem+json': { schema } } };
  }
  const response: O['ok'] = { ...ok, ...documented };
  return {
    ...(scope || isPublic || documentHead || bodyLimitFrom
      ? {
          config: {
            ...(scope ? { scope } : {}),
            ...(isPublic ? { public: true } : {}),
            ...(bodyLimitFrom ? { bodyLimitFrom } : {}),
            ...(documentHead ? { swagger: { exposeHeadRoute: true } } : {}),
          },
        }
      : {}),
    ...(bodyLimit !== undefined ? { bodyLimit } : {}),
    ...(preValidation ? { preValidation } : {}),
    ...(exposeHeadRoute !== undefined ? { exposeHeadRoute } : {}),
    schema: {
      operationId,
      tags: [tag],
      summary,
      ...(description ? { description } : {}),
      ...(command ? { 'x-qga-command': command } : {}),
      // every code the operation can answer with (its responses describe each)
      'x-problem-codes': problems,
      // read by the document pass (schemas/document.ts), which removes it
      ...(okDescriptions ? { 'x-ok-descriptions': okDescriptions } : {}),
      ...(okHeaders ? { 'x-ok-headers': okHeaders } : {}),
      ...(isPublic ? { security: [] } : {}),
      ...request,
      response,
    },
  };
}

/** Admission (plugins/limits.ts) may answer 429 RATE_LIMITED on every operation but the ones it never refuses (thaws), which document no 429 at all. */
function withAdmission(operationId: string, statuses: readonly number[]): readonly number[] {
  if (NEVER_REFUSED.has(operationId)) return statuses.filter((s) => s !== 429);
  return statuses.includes(429) ? statuses : [...statuses, 429].sort((a, b) => a - b);
}
