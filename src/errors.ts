/**
 * The gateway's error vocabulary. Every failure that reaches a caller is a GatewayError with a
 * stable `code` from ../shared/API.md; the HTTP status is bound to the code in ONE table here and
 * nowhere else. Code never branches on message text.
 */

export const ERROR_STATUS = {
  VALIDATION_FAILED: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  COMMAND_DISABLED: 403,
  VM_NOT_FOUND: 404,
  NOT_FOUND: 404,
  LEASE_CONFLICT: 409,
  VM_FROZEN: 409,
  VM_EXISTS: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RANGE_NOT_SATISFIABLE: 416,
  AGENT_ERROR: 422,
  QUEUE_FULL: 429,
  INTERNAL: 500,
  COMMAND_NOT_SUPPORTED: 501,
  AGENT_PROTOCOL_ERROR: 502,
  AGENT_UNAVAILABLE: 503,
  STORE_UNAVAILABLE: 503,
  SHUTTING_DOWN: 503,
  AGENT_TIMEOUT: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export const ERROR_TITLES: Record<ErrorCode, string> = {
  VALIDATION_FAILED: 'Request validation failed',
  UNAUTHENTICATED: 'Authentication required',
  FORBIDDEN: 'Forbidden',
  COMMAND_DISABLED: 'Command disabled in the guest agent',
  VM_NOT_FOUND: 'VM not found',
  NOT_FOUND: 'Not found',
  LEASE_CONFLICT: 'Lease conflict',
  VM_FROZEN: 'Guest filesystems are frozen',
  VM_EXISTS: 'VM already registered',
  PAYLOAD_TOO_LARGE: 'Payload too large',
  UNSUPPORTED_MEDIA_TYPE: 'Unsupported media type',
  RANGE_NOT_SATISFIABLE: 'Range not satisfiable',
  AGENT_ERROR: 'Guest agent returned an error',
  QUEUE_FULL: 'VM request queue is full',
  INTERNAL: 'Internal error',
  COMMAND_NOT_SUPPORTED: 'Command not supported by this agent',
  AGENT_PROTOCOL_ERROR: 'Guest agent protocol error',
  AGENT_UNAVAILABLE: 'Guest agent unavailable',
  STORE_UNAVAILABLE: 'Lease store unavailable',
  SHUTTING_DOWN: 'Gateway is shutting down',
  AGENT_TIMEOUT: 'Guest agent timed out',
};

/** The error object a QGA agent sends: `{"error": {"class": ..., "desc": ...}}`. */
export interface QgaErrorBody {
  class: string;
  desc: string;
}

export interface GatewayErrorOptions {
  vm?: string;
  command?: string;
  qga?: QgaErrorBody;
  /** seconds, for QUEUE_FULL (sets Retry-After) */
  retryAfter?: number;
  /** extra members merged into the problem+json body (e.g. lease holder and expiry) */
  extra?: Record<string, unknown>;
  cause?: unknown;
}

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly vm?: string;
  readonly command?: string;
  readonly qga?: QgaErrorBody;
  readonly retryAfter?: number;
  readonly extra?: Record<string, unknown>;

  constructor(code: ErrorCode, detail: string, opts: GatewayErrorOptions = {}) {
    super(detail, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'GatewayError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.vm = opts.vm;
    this.command = opts.command;
    this.qga = opts.qga;
    this.retryAfter = opts.retryAfter;
    this.extra = opts.extra;
  }
}

export function isGatewayError(e: unknown): e is GatewayError {
  return e instanceof GatewayError;
}
