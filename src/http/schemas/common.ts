/**
 * Schemas every route group shares: the `{vm}` parameter, the problem+json body, and the helper
 * that documents a route's error responses. Routes list only the statuses they can produce.
 */
import { Type } from 'typebox';
import { VM_NAME_PATTERN } from '../../config/schema.js';
import { ERROR_STATUS, type ErrorCode } from '../../errors.js';
import { component } from './component.js';

export const VmName = Type.String({ pattern: VM_NAME_PATTERN, description: 'VM name as registered', examples: ['web-01'] });

export const VmParams = Type.Object({ vm: VmName }, { additionalProperties: false });

// A string enum, not a union of literals: fast-json-stringify compiles an Ajv validator for
// every anyOf it meets, and this schema sits in every documented error response of every route
// (~25 ms each, seconds of start-up in total); an enum costs nothing.
export const ErrorCodeSchema = Type.Unsafe<ErrorCode>({
  type: 'string',
  enum: Object.keys(ERROR_STATUS),
  description: 'Stable machine-readable error code (see API.md)',
});

// One shared component (#/components/schemas/Problem) referenced by every error response:
// inlined, it made up ~90% of the OpenAPI document (11 statuses × every operation).
export const Problem = component(
  'Problem',
  Type.Object(
    {
      type: Type.String({ description: 'URI reference naming the problem type' }),
      title: Type.String(),
      status: Type.Integer(),
      detail: Type.String(),
      code: ErrorCodeSchema,
      instance: Type.Optional(Type.String()),
      vm: Type.Optional(Type.String()),
      command: Type.Optional(Type.String()),
      qga: Type.Optional(
        Type.Object(
          { class: Type.String({ description: 'QGA error class' }), desc: Type.String({ description: 'QGA error text' }) },
          { description: 'The error object the guest agent sent' },
        ),
      ),
    },
    { additionalProperties: true, description: 'RFC 9457 problem details' },
  ),
);

const STATUS_TEXT: Record<number, string> = {
  400: 'Invalid request (VALIDATION_FAILED)',
  401: 'Missing or unknown credentials (UNAUTHENTICATED)',
  403: 'Scope or VM not allowed (FORBIDDEN), or the command is disabled in the agent (COMMAND_DISABLED)',
  404: 'VM not registered (VM_NOT_FOUND) or object not found',
  409: 'Lease conflict (LEASE_CONFLICT) or the guest is frozen (VM_FROZEN)',
  413: 'Body too large (PAYLOAD_TOO_LARGE)',
  415: 'Unsupported media type',
  416: 'Range not satisfiable',
  422: 'The agent answered with an error (AGENT_ERROR)',
  429: 'The VM queue is full (QUEUE_FULL), or the caller is over its concurrency or request rate (RATE_LIMITED); see Retry-After',
  500: 'Internal error',
  501: 'This agent does not offer the command (COMMAND_NOT_SUPPORTED)',
  502: 'The agent sent an invalid reply (AGENT_PROTOCOL_ERROR)',
  503: 'The agent (or the lease store) cannot be reached (AGENT_UNAVAILABLE, STORE_UNAVAILABLE)',
  504: 'The agent did not answer in time (AGENT_TIMEOUT)',
};

/** Statuses every agent-backed route can produce. */
export const AGENT_ERRORS = [400, 401, 403, 404, 409, 422, 429, 501, 502, 503, 504] as const;

export interface ProblemResponse {
  description: string;
  content: { 'application/problem+json': { schema: typeof Problem } };
}

export function problemResponses(statuses: readonly number[]): Record<number, ProblemResponse> {
  const out: Record<number, ProblemResponse> = {};
  for (const s of statuses) {
    out[s] = { description: STATUS_TEXT[s] ?? 'Error', content: { 'application/problem+json': { schema: Problem } } };
  }
  return out;
}
