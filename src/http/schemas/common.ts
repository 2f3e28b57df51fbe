/**
 * Schemas every route group shares: the `{vm}` parameter, the problem+json body, and the helper
 * that documents a route's error responses. Routes list only the statuses they can produce.
 */
import { Type } from 'typebox';
import { VM_NAME_PATTERN } from '../../config/schema.js';
import { ERROR_STATUS, ERRORS, type ErrorCode } from '../../errors.js';
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
      status: Type.Integer({ format: 'int32' }),
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

/** Statuses every agent-backed route can produce. */
export const AGENT_ERRORS = [400, 401, 403, 404, 409, 422, 429, 501, 502, 503, 504] as const;

/**
 * What any request may be answered, whatever the operation: a request target over the limit
 * (414), a Host that is not the gateway's (421), headers over the limit (431), a gateway that is
 * shutting down (503). Every operation documents them.
 */
export const GLOBAL_PROBLEMS: readonly ErrorCode[] = ['URI_TOO_LONG', 'MISDIRECTED_REQUEST', 'HEADERS_TOO_LARGE', 'SHUTTING_DOWN'];

/** What an operation is, as far as which codes it can raise is concerned. */
export interface ProblemContext {
  operationId: string;
  tag: string;
  /** it takes a request body (413, 415) */
  body: boolean;
  /** it needs no credentials (no 401, 403) */
  public?: boolean;
  /** it sends commands to a guest agent (x-qga-command): the agent's codes apply */
  agent: boolean;
}

const AGENT_CODES: readonly ErrorCode[] = [
  'VM_NOT_FOUND',
  'COMMAND_DISABLED',
  'VM_FROZEN',
  'AGENT_ERROR',
  'QUEUE_FULL',
  'COMMAND_NOT_SUPPORTED',
  'AGENT_PROTOCOL_ERROR',
  'REPLY_TOO_LARGE',
  'AGENT_UNAVAILABLE',
  'AGENT_TIMEOUT',
];

/**
 * Codes that only some operations raise; every other code goes with its status (an operation that
 * lists 503 can answer every 503 code). METHOD_NOT_ALLOWED and INTERNAL belong to no operation.
 */
const ONLY: Partial<Record<ErrorCode, (op: ProblemContext) => boolean>> = {
  REGISTRATION_DENIED: (op) => op.operationId === 'registerVm',
  VM_EXISTS: (op) => op.operationId === 'registerVm',
  ENDPOINT_IN_USE: (op) => op.operationId === 'registerVm',
  USE_FREEZE_API: (op) => op.tag === 'raw',
  LEASE_CONFLICT: (op) => op.tag === 'fsfreeze',
  LEASE_EXPIRED: (op) => op.tag === 'fsfreeze',
  NOTHING_FROZEN: (op) => op.tag === 'fsfreeze',
  RANGE_NOT_SATISFIABLE: (op) => op.tag === 'files',
  PAYLOAD_TOO_LARGE: (op) => op.body,
  // the file content routes parse any content type (the bytes are the file)
  UNSUPPORTED_MEDIA_TYPE: (op) => op.body && op.operationId !== 'uploadFile',
  UNAUTHENTICATED: (op) => !op.public,
  FORBIDDEN: (op) => !op.public,
  ORIGIN_FORBIDDEN: (op) => !op.public,
  METHOD_NOT_ALLOWED: () => false,
  INTERNAL: () => false,
};

/**
 * The codes an operation documents: those of its statuses (narrowed by ONLY), the global ones,
 * and 413/415 when it takes a body; `extra` adds codes of statuses not listed. In table order.
 */
export function problemCodes(statuses: readonly number[], op: ProblemContext, extra: readonly ErrorCode[] = []): ErrorCode[] {
  const all = new Set<number>(statuses);
  if (op.body) (all.add(413), all.add(415));
  const applies = (c: ErrorCode): boolean => (ONLY[c]?.(op) ?? true) && (op.agent || !AGENT_CODES.includes(c) || (c === 'VM_NOT_FOUND' && op.tag !== 'service'));
  return (Object.keys(ERRORS) as ErrorCode[]).filter(
    (c) => extra.includes(c) || GLOBAL_PROBLEMS.includes(c) || (all.has(ERRORS[c].status) && applies(c)),
  );
}

export interface ProblemResponse {
  description: string;
  content: { 'application/problem+json': { schema: typeof Problem } };
}

/**
 * The problem+json responses of `codes`, one per status, each described by the codes it carries
 * ("`VM_NOT_FOUND`: `{vm}` is not registered. …"), as the document's error table words them.
 */
export function problemResponses(codes: readonly ErrorCode[]): Record<number, ProblemResponse> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const c of codes) byStatus.set(ERRORS[c].status, [...(byStatus.get(ERRORS[c].status) ?? []), c]);
  const out: Record<number, ProblemResponse> = {};
  for (const [status, cs] of [...byStatus.entries()].sort((a, b) => a[0] - b[0])) {
    out[status] = {
      description: cs.map((c) => `\`${c}\`: ${ERRORS[c].when}`).join('. '),
      content: { 'application/problem+json': { schema: Problem } },
    };
  }
  return out;
}
