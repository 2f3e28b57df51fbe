/**
 * The gateway's error vocabulary. Every failure that reaches a caller is a GatewayError with a
 * stable `code` from ../shared/API.md; the HTTP status is bound to the code in ONE table here and
 * nowhere else. Code never branches on message text.
 */

/**
 * The one table of error codes: HTTP status, problem title, and when a caller gets it. README's
 * error table and the OpenAPI description are generated from it (scripts/export-openapi.ts), and a
 * test holds it to ../shared/API.md.
 */
export const ERRORS = {
  VALIDATION_FAILED: { status: 400, title: 'Request validation failed', when: 'the request does not match the schema (`errors` lists where), or a value is out of range' },
  UNAUTHENTICATED: { status: 401, title: 'Authentication required', when: 'missing or unknown credentials' },
  ORIGIN_FORBIDDEN: { status: 403, title: 'Origin forbidden', when: 'the request carries an `Origin` that is not allowed (`server.allowedOrigins`)' },
  FORBIDDEN: { status: 403, title: 'Forbidden', when: 'the credentials lack the scope or the VM' },
  COMMAND_DISABLED: { status: 403, title: 'Command disabled in the guest agent', when: 'the guest admin disabled the command in the agent' },
  REGISTRATION_DENIED: { status: 403, title: 'Registration denied', when: "registration outside the allowed roots/endpoints or the caller's VM globs (says nothing about whether the path exists)" },
  VM_NOT_FOUND: { status: 404, title: 'VM not found', when: '`{vm}` is not registered' },
  NOT_FOUND: { status: 404, title: 'Not found', when: 'no such route or resource (an unknown file, file handle, exec pid or freeze group)' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed', when: 'the path exists but not with this method (`Allow` lists the methods)' },
  WAIT_TIMEOUT: { status: 408, title: 'Wait timed out', when: '`GET /v1/vms/{vm}/wait` ended before what it waited for happened (`state` says what was last seen)' },
  LEASE_CONFLICT: { status: 409, title: 'Lease conflict', when: 'the VM is frozen under another lease, or the lease id does not match' },
  LEASE_EXPIRED: { status: 409, title: 'Lease expired', when: 'thaw or renew of a lease that already ended; `endedAt`, `endedBy` (`deadline`, `forced`, `shutdown`, `agent-restart`) tell why' },
  VM_FROZEN: { status: 409, title: 'Guest filesystems are frozen', when: 'the guest is frozen and the command is not one of the six a frozen agent allows' },
  USE_FREEZE_API: { status: 409, title: 'Use the freeze API', when: 'raw passthrough of a freeze or thaw command: use the fsfreeze routes (leases, automatic thaw, audit)' },
  VM_EXISTS: { status: 409, title: 'VM already registered', when: 'registration of a name that is already registered' },
  ENDPOINT_IN_USE: { status: 409, title: 'Endpoint in use', when: 'registration: that socket (by real path) or host:port already belongs to another VM the caller may see (otherwise `REGISTRATION_DENIED`)' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'Payload too large', when: 'the request body (or stdin, or an upload) is over its configured limit (`limit`)' },
  URI_TOO_LONG: { status: 414, title: 'URI too long', when: 'the request target or a path parameter is too long' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported media type', when: "the body's content type is not the one the route takes" },
  RANGE_NOT_SATISFIABLE: { status: 416, title: 'Range not satisfiable', when: 'a `Range` or upload offset outside the file (`size`)' },
  MISDIRECTED_REQUEST: { status: 421, title: 'Misdirected request', when: "the `Host` header is not one of the gateway's names (`server.allowedHosts`)" },
  AGENT_ERROR: { status: 422, title: 'Guest agent returned an error', when: 'the agent answered with an error object (`qga.class`, `qga.desc` carried through)' },
  NOTHING_FROZEN: { status: 422, title: 'Nothing frozen', when: 'a freeze froze no filesystem (e.g. the mountpoints do not exist); the VM is left thawed' },
  QUEUE_FULL: { status: 429, title: 'VM request queue is full', when: "the VM's request queue (or the pool's open sockets, or the VM's API file handles) is at its limit (`Retry-After` set)" },
  RATE_LIMITED: { status: 429, title: 'Rate limited', when: 'the caller (token, or client address when anonymous) has `limits.perPrincipalConcurrency` requests in flight, or exceeded `limits.rate` (`Retry-After` set); thaws and lease renewals are never refused' },
  HEADERS_TOO_LARGE: { status: 431, title: 'Request header fields too large', when: "request headers over the server's limit" },
  INTERNAL: { status: 500, title: 'Internal error', when: 'a defect in the gateway (logged; never carries internals)' },
  COMMAND_NOT_SUPPORTED: { status: 501, title: 'Command not supported by this agent', when: 'this agent version does not know the command (or the option)' },
  AGENT_PROTOCOL_ERROR: { status: 502, title: 'Guest agent protocol error', when: 'the agent sent something that is not a valid reply, or a reply of the wrong shape' },
  REPLY_TOO_LARGE: { status: 502, title: 'Guest agent reply too large', when: "the agent's reply exceeded `agent.maxReplyBytes` or the global buffer budget `agent.maxBufferedBytes`; it was dropped unbuffered and the channel resynced" },
  AGENT_UNAVAILABLE: { status: 503, title: 'Guest agent unavailable', when: "the VM's agent socket cannot be connected or synced, or the connection was lost" },
  NODE_UNAVAILABLE: { status: 503, title: 'Cluster node unavailable', when: 'cluster mode: the node serving this VM is gone or unreachable (`Retry-After`: the heartbeat interval), or several nodes serve its name (`nodes`)' },
  STORE_UNAVAILABLE: { status: 503, title: 'Lease store unavailable', when: 'the lease store (Redis) cannot be reached; freezes are refused, thaws retried; with limits.rate, every rate-limited route is refused (its counters are in Redis)' },
  SHUTTING_DOWN: { status: 503, title: 'Gateway is shutting down', when: 'the gateway is stopping and takes no new requests' },
  AGENT_TIMEOUT: { status: 504, title: 'Guest agent timed out', when: "no reply within the command's timeout (the channel is resynced before reuse)" },
} as const satisfies Record<string, { status: number; title: string; when: string }>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_STATUS = Object.fromEntries(Object.entries(ERRORS).map(([c, e]) => [c, e.status])) as { [C in ErrorCode]: (typeof ERRORS)[C]['status'] };

/** The error table as Markdown (README, OpenAPI description): code, HTTP status, when. */
export function errorTableMarkdown(): string {
  const rows = Object.entries(ERRORS).map(([code, e]) => `| \`${code}\` | ${e.status} | ${e.when} |`);
  return ['| code | HTTP | when |', '|---|---|---|', ...rows].join('\n');
}

/** The error object a QGA agent sends: `{"error": {"class": ..., "desc": ...}}`. */
export interface QgaErrorBody {
  class: string;
  desc: string;
}

export interface GatewayErrorOptions {
  vm?: string;
  command?: string;
  qga?: QgaErrorBody;
  /** seconds, for QUEUE_FULL and NODE_UNAVAILABLE (sets Retry-After) */
  retryAfter?: number;
  /** extra members merged into the problem+json body (e.g. lease holder and expiry) */
  extra?: Record<string, unknown>;
  cause?: unknown;
}

/** HTTP statuses of refusals: their GatewayError carries no stack */
const NO_STACK: ReadonlySet<number> = new Set([401, 403, 404, 405, 409, 429]);

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly vm?: string;
  readonly command?: string;
  readonly qga?: QgaErrorBody;
  readonly retryAfter?: number;
  readonly extra?: Record<string, unknown>;

  constructor(code: ErrorCode, detail: string, opts: GatewayErrorOptions = {}) {
    // a refusal (401, 403, 404, 405, 409, 429) is an answer, not a defect: no stack is captured for
    // it, so a storm of refusals costs a fraction of a served request (issue 14 item 2)
    const limit = Error.stackTraceLimit;
    const refusal = NO_STACK.has(ERRORS[code].status);
    if (refusal) Error.stackTraceLimit = 0;
    super(detail, opts.cause === undefined ? undefined : { cause: opts.cause });
    if (refusal) Error.stackTraceLimit = limit;
    this.name = 'GatewayError';
    this.code = code;
    this.status = ERRORS[code].status;
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

type Ctx = Pick<GatewayErrorOptions, 'vm' | 'command' | 'qga' | 'extra' | 'cause' | 'retryAfter'>;

/**
 * One constructor per situation, so each situation is worded once. Code elsewhere builds errors
 * through these (a test checks that nothing else calls `new GatewayError`).
 */
export const errors = {
  validation: (detail: string, ctx: Ctx = {}) => new GatewayError('VALIDATION_FAILED', detail, ctx),
  notJson: (cause: unknown) =>
    new GatewayError('VALIDATION_FAILED', `the body is not valid JSON: ${cause instanceof Error ? cause.message : String(cause)}`),
  /** a client error the HTTP server raised itself, by its status */
  httpClientError: (status: number, detail: string) =>
    new GatewayError(status === 404 ? 'NOT_FOUND' : status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : 'VALIDATION_FAILED', detail),
  unauthenticated: (why: 'missing' | 'unknown' | 'hop' | 'node-call') =>
    new GatewayError(
      'UNAUTHENTICATED',
      why === 'missing'
        ? 'an Authorization: Bearer token is required: send one of the tokens configured in auth.tokens'
        : why === 'hop'
          ? 'a node-to-node request (x-qga-hop) without a valid, fresh signature of the cluster secret (cluster.secretFile): refused'
          : why === 'node-call'
            ? "this route takes only another cluster node's calls, signed with the cluster secret (cluster.secretFile); bearer tokens are not accepted here"
            : 'unknown bearer token: send one of the tokens configured in auth.tokens (check for a stale or mistyped token)',
    ),
  forbidden: (detail: string, ctx: Ctx = {}) => new GatewayError('FORBIDDEN', detail, ctx),
  misdirected: (host: string) =>
    new GatewayError('MISDIRECTED_REQUEST', `this gateway does not answer to the host name ${JSON.stringify(host)} (server.allowedHosts)`),
  originForbidden: (origin: string) =>
    new GatewayError('ORIGIN_FORBIDDEN', `requests from the origin ${JSON.stringify(origin)} are not accepted (server.allowedOrigins)`),
  missingScope: (who: string, scope: string) => new GatewayError('FORBIDDEN', `this operation needs the "${scope}" scope, which ${who} lacks`),
  vmsOutOfReach: (who: string, vms: string[]) =>
    new GatewayError('FORBIDDEN', `${who} may not reach ${vms.map((v) => `VM "${v}"`).join(', ')}`, vms.length === 1 ? { vm: vms[0] } : { extra: { denied: vms } }),
  vmsNotFound: (missing: string[]) =>
    new GatewayError('VM_NOT_FOUND', `not registered: ${missing.join(', ')}; nothing was frozen`, { extra: { missing } }),
  vmNotFound: (vm: string) => new GatewayError('VM_NOT_FOUND', `VM "${vm}" is not registered: GET /v1/vms lists the VMs this caller may use`, { vm }),
  vmExists: (vm: string) => new GatewayError('VM_EXISTS', `VM "${vm}" is already registered`, { vm }),
  /** the endpoint already belongs to a VM the caller may see (`heldBy`) */
  endpointInUse: (vm: string, heldBy: string) =>
    new GatewayError('ENDPOINT_IN_USE', `the endpoint already belongs to VM "${heldBy}"; an endpoint belongs to one VM: register another endpoint, or delete "${heldBy}" first`, {
      vm,
      extra: { heldBy },
    }),
  /**
   * One answer for every refusal that involves the endpoint (outside the roots or the allowlist,
   * missing, taken by a VM the caller may not see): it must not tell those apart.
   */
  registrationDenied: (vm: string) =>
    new GatewayError(
      'REGISTRATION_DENIED',
      'the endpoint cannot be registered by this caller: a unix socket must resolve inside registry.allowedSocketRoots, a TCP endpoint must be listed in registry.allowedTcpEndpoints, and no other VM may hold it',
      { vm },
    ),
  /** registration of a VM name outside the caller's VM globs */
  nameOutsideGlobs: (vm: string) =>
    new GatewayError('REGISTRATION_DENIED', `this caller may register only VM names its token's vms globs match, and "${vm}" is not one: choose a name inside them`, { vm }),
  notFound: (detail: string, ctx: Ctx = {}) => new GatewayError('NOT_FOUND', detail, ctx),
  vmFrozen: (vm: string, command: string) =>
    new GatewayError('VM_FROZEN', `the guest's filesystems are frozen; ${command} is not allowed until they are thawed`, { vm, command }),
  /** the guest is frozen, but not through a lease of this gateway */
  frozenOutsideLeases: (vm: string, command: string) =>
    new GatewayError('VM_FROZEN', `the guest is already frozen by something other than this gateway's leases; nothing was sent`, { vm, command }),
  /** DELETE /v1/vms/{vm} of a guest frozen outside the gateway's leases (its external-freeze thaw needs the registration) */
  frozenNoDelete: (vm: string) =>
    new GatewayError('VM_FROZEN', `the guest is frozen (outside this gateway's leases): it cannot be deregistered until it is thawed, or the gateway could no longer thaw it`, { vm }),
  commandDisabled: (vm: string, command: string) => new GatewayError('COMMAND_DISABLED', `${command} has been disabled by the guest administrator`, { vm, command }),
  commandNotSupported: (vm: string, command: string, detail: string) => new GatewayError('COMMAND_NOT_SUPPORTED', detail, { vm, command }),
  useFreezeApi: (vm: string, command: string) =>
    new GatewayError(
      'USE_FREEZE_API',
      `${command} is not passed through: freezes and thaws go through POST/DELETE /v1/vms/${vm}/fsfreeze (or /v1/freeze-groups), where leases, the automatic thaw and the audit apply`,
      { vm, command },
    ),
  leaseConflict: (detail: string, ctx: Ctx = {}) => new GatewayError('LEASE_CONFLICT', detail, ctx),
  /** thaw or renew of a lease that has already ended: when (ISO time) and why, so the caller knows its snapshot may not be consistent */
  leaseExpired: (detail: string, ended: { endedAt: string; endedBy: string }, ctx: Ctx = {}) =>
    new GatewayError('LEASE_EXPIRED', detail, { ...ctx, extra: { ...ctx.extra, endedAt: ended.endedAt, endedBy: ended.endedBy } }),
  /** a freeze that froze no filesystem; the VM is left thawed and the lease has ended */
  nothingFrozen: (vm: string, detail: string, ctx: Ctx = {}) => new GatewayError('NOTHING_FROZEN', detail, { ...ctx, vm }),
  tooLarge: (what: string, limit: number, setting: string, ctx: Ctx = {}) =>
    new GatewayError('PAYLOAD_TOO_LARGE', `${what} is larger than the configured cap of ${limit} bytes (${setting})`, { ...ctx, extra: { ...ctx.extra, limit } }),
  /** a body in a content coding the gateway does not decode (RFC 9110 §8.4.1): send it as it is */
  unsupportedEncoding: (coding: string) =>
    new GatewayError('UNSUPPORTED_MEDIA_TYPE', `a body with Content-Encoding: ${JSON.stringify(coding).slice(1, -1).slice(0, 64)} is not accepted: send it uncompressed (no Content-Encoding, or identity)`, {
      extra: { acceptEncoding: ['identity'] },
    }),
  /** a body of a content type the route does not parse: says which to send */
  unsupportedMediaType: (got: string | undefined, expected: readonly string[]) =>
    new GatewayError(
      'UNSUPPORTED_MEDIA_TYPE',
      `${got ? `a body of type ${JSON.stringify(got)}` : 'a body without Content-Type'} is not accepted here: send it with Content-Type: ${expected.join(' or ')}`,
      { extra: { accept: expected } },
    ),
  methodNotAllowed: (method: string, path: string, allow: readonly string[]) =>
    new GatewayError('METHOD_NOT_ALLOWED', `${path} does not take ${method}; it takes ${allow.join(', ')}`, { extra: { allow } }),
  uriTooLong: (detail: string) => new GatewayError('URI_TOO_LONG', detail),
  headersTooLarge: () => new GatewayError('HEADERS_TOO_LARGE', "the request headers exceed the server's limit: send fewer or shorter headers (large cookies are the usual cause)"),
  outsideFile: (vm: string, what: string, size: number) => new GatewayError('RANGE_NOT_SATISFIABLE', `${what} is outside the file (${size} bytes)`, { vm, extra: { size } }),
  agentError: (vm: string, command: string | undefined, detail: string) => new GatewayError('AGENT_ERROR', detail, { vm, command }),
  queueFull: (vm: string, detail: string, ctx: Ctx = {}) => new GatewayError('QUEUE_FULL', detail, { retryAfter: 1, ...ctx, vm }),
  /** admission (http/plugins/limits.ts): the caller is over its concurrency or request rate; `retryAfter` in seconds */
  rateLimited: (detail: string, retryAfter: number) => new GatewayError('RATE_LIMITED', detail, { retryAfter }),
  /** the agent's reply is valid JSON but not what the reference promises for the command */
  unexpectedReply: (vm: string, command: string, what: string) => new GatewayError('AGENT_PROTOCOL_ERROR', `${command} returned ${what}`, { vm, command }),
  protocol: (vm: string, command: string | undefined, detail: string, ctx: Ctx = {}) => new GatewayError('AGENT_PROTOCOL_ERROR', detail, { ...ctx, vm, command }),
  /** a reply line over the per-reply cap or the global buffer budget; dropped as it came, channel resynced */
  replyTooLarge: (vm: string, command: string | undefined, detail: string, ctx: Ctx = {}) => new GatewayError('REPLY_TOO_LARGE', detail, { ...ctx, vm, command }),
  agentUnavailable: (vm: string, detail: string, ctx: Ctx = {}) => new GatewayError('AGENT_UNAVAILABLE', detail, { ...ctx, vm }),
  /** a wait (GET /v1/vms/{vm}/wait) ran out; `state` is what was last seen */
  waitTimeout: (vm: string, detail: string, state: Record<string, unknown>) => new GatewayError('WAIT_TIMEOUT', detail, { vm, extra: { state } }),
  agentTimeout: (vm: string, command: string, detail: string, ctx: Ctx = {}) => new GatewayError('AGENT_TIMEOUT', detail, { ...ctx, vm, command }),
  /** cluster mode: the node that serves the VM stopped heartbeating, or could not be reached */
  /** `node`: the node serving the VM; several (a name conflict): `nodes` in ctx.extra, no `node` */
  nodeUnavailable: (vm: string, node: string | undefined, detail: string, ctx: Ctx = {}) =>
    new GatewayError('NODE_UNAVAILABLE', detail, { ...ctx, vm, extra: { ...(node !== undefined ? { node } : {}), ...ctx.extra } }),
  /** cluster mode: the error another node answered for an agent command sent there, rebuilt as it was (code, detail, members) */
  fromNode: (code: ErrorCode, detail: string, ctx: Ctx = {}) => new GatewayError(code, detail, ctx),
  storeUnavailable: (detail: string, ctx: Ctx = {}) => new GatewayError('STORE_UNAVAILABLE', detail, ctx),
  shuttingDown: (what: string, ctx: Ctx = {}) => new GatewayError('SHUTTING_DOWN', what, ctx),
  internal: (detail = 'an internal error occurred; it has been logged', ctx: Ctx = {}) => new GatewayError('INTERNAL', detail, ctx),
  /** anything thrown, as a GatewayError (INTERNAL unless it already is one) */
  wrap: (e: unknown, ctx: Ctx = {}) => (e instanceof GatewayError ? e : new GatewayError('INTERNAL', e instanceof Error ? e.message : String(e), { ...ctx, cause: e })),
  /** the same error under another code or with a different detail, everything else kept */
  rewrap: (e: GatewayError, code: ErrorCode, detail: string, ctx: Ctx = {}) =>
    new GatewayError(code, detail, { vm: e.vm, command: e.command, qga: e.qga, retryAfter: e.retryAfter, extra: e.extra, cause: e, ...ctx }),
};
