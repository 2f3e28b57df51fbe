/**
 * The wire contract of a node-to-node agent call (issue 17 item 4), both ends of it: which commands
 * may cross, the internal route's path and body, the digest that binds the body to the signed URL,
 * and how the caller turns the serving node's answer back into the value or GatewayError a local
 * call gives. The caller is RoutingAgent (remote-agent.ts); the serving end is
 * src/http/routes/cluster-internal.ts.
 */
import { createHash } from 'node:crypto';
import { ERRORS, errors, type ErrorCode, type QgaErrorBody } from '../errors.js';
import type { AgentFence } from '../freeze/types.js';
import type { JsonObject, JsonValue } from '../qga/types.js';
import type { NodeInfo } from './directory.js';
import { hopRefused } from './forward.js';

/** The agent commands one node may ask another to send (cluster-internal.ts refuses the rest). */
export const CLUSTER_AGENT_COMMANDS: ReadonlySet<string> = new Set([
  'guest-fsfreeze-freeze',
  'guest-fsfreeze-freeze-list',
  'guest-fsfreeze-thaw',
  'guest-fsfreeze-status',
]);
/** commands sent only under a lease that is live (the fence check) */
export const FENCED_FREEZES: ReadonlySet<string> = new Set(['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list']);

/** the longest command timeout a node-to-node call carries */
export const MAX_REMOTE_TIMEOUT_MS = 3_600_000;
/** an answer of the internal endpoint is a few hundred bytes; more is refused */
const MAX_ANSWER_BYTES = 1 << 20;
/** the internal route's operationId (never refused by the admission limits) */
export const AGENT_CALL_OPERATION = 'clusterAgentCall';

export function agentCallPath(vm: string): string {
  return `/internal/cluster/vms/${encodeURIComponent(vm)}/agent-call`;
}

/** The body of a node-to-node agent call. */
export interface AgentCallBody {
  command: string;
  args?: JsonObject;
  timeoutMs: number;
  priority?: 'thaw' | 'freeze';
  skipCapabilityCheck?: boolean;
  fence?: AgentFence;
  /** who the audit records name: the entry node's principal, or `gateway` */
  by: string;
  /** the entry node's request id */
  requestId?: string;
  /** the caller gave an explicit actor (`gateway`): the serving node passes it on */
  actor?: string;
}

export function bodyDigest(body: string): string {
  return createHash('sha256').update(body).digest('base64url');
}

export async function readBounded(res: Response): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > MAX_ANSWER_BYTES) {
      await reader.cancel();
      throw Object.assign(new Error('answer too large'), { code: 'ANSWER_TOO_LARGE' });
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const PROBLEM_MEMBERS = new Set(['type', 'title', 'status', 'detail', 'code', 'instance', 'vm', 'command', 'qga']);

/** The serving node's answer as the value or GatewayError a local call gives. */
export function decode(status: number, text: string, node: NodeInfo, vm: string, command: string, retryAfter: string | null): JsonValue {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const obj = body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined;
  if (status === 200 && obj && 'result' in obj) return obj.result as JsonValue;
  // the node refused this node's signature, not anything of the caller's (forward.ts: hopRefused)
  if (status === 401) return throwing(hopRefused(vm, node, command));
  const code = obj?.code;
  if (status >= 400 && typeof code === 'string' && code in ERRORS && ERRORS[code as ErrorCode].status === status) {
    const extra: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(obj ?? {})) if (!PROBLEM_MEMBERS.has(k)) extra[k] = v;
    const qga = isQga(obj?.qga) ? obj.qga : undefined;
    const after = retryAfter !== null && /^[0-9]{1,6}$/.test(retryAfter) ? Number(retryAfter) : undefined;
    return throwing(
      errors.fromNode(code as ErrorCode, typeof obj?.detail === 'string' ? obj.detail : ERRORS[code as ErrorCode].title, {
        vm: typeof obj?.vm === 'string' ? obj.vm : vm,
        command: typeof obj?.command === 'string' ? obj.command : command,
        ...(qga ? { qga } : {}),
        ...(Object.keys(extra).length ? { extra } : {}),
        ...(after !== undefined ? { retryAfter: after } : {}),
      }),
    );
  }
  return throwing(errors.nodeUnavailable(vm, node.id, `node ${node.id} answered ${command} with HTTP ${status} and no usable body; whether the agent got it is unknown`, { command, extra: { sent: true } }));
}

function throwing(e: Error): never {
  throw e;
}
function isQga(v: unknown): v is QgaErrorBody {
  return v !== null && typeof v === 'object' && typeof (v as QgaErrorBody).class === 'string' && typeof (v as QgaErrorBody).desc === 'string';
}
