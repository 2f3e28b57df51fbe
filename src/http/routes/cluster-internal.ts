/**
 * Node-to-node agent calls (cluster mode, issue 17 item 4): the other half of
 * src/cluster/remote-agent.ts. A freeze group orchestrated on one node sends each member's freeze,
 * thaw and status to the node that serves the member, here:
 *
 *   POST /internal/cluster/vms/{vm}/agent-call?digest=<base64url sha256 of the body>
 *
 * Not part of the API (hidden from OpenAPI, not under /v1), and accepted only with a valid hop
 * signature of the `agent-call` purpose (src/cluster/hop.ts; a forwarding signature is 401 here)
 * over this exact URL, whose digest binds the body: anything else is 401 before the body is looked
 * at. Only the freeze family (CLUSTER_AGENT_COMMANDS) is sent. The carried principal is checked as
 * the public routes check it (403 FORBIDDEN otherwise): `read` for the status, `write` for a freeze
 * or thaw, `admin` for a forced thaw (unless this node's lease store is down too: the public thaw
 * with an unverified lease id sends one then), and its VM globs must reach the VM. The gateway's
 * own SYSTEM_PRINCIPAL (deadline thaws; only an agent-call signature carries it) may thaw and read
 * the status, never freeze.
 * Right before sending, the fence check against the store: a freeze goes only under the lease that
 * holds the VM now and is live; a thaw unless another lease holds the VM now or (not a rollback)
 * the lease has ended (with the store down a thaw is sent anyway, a freeze is refused); a forced
 * thaw always. A refusal is 409 LEASE_CONFLICT and nothing reaches the agent, so an orchestrator
 * that lost its lease (paused, partitioned) can never freeze a VM under it.
 *
 * The command runs through this node's AgentService like a local one, so this node writes the
 * audit records of it (invariant 4), naming the entry node's principal and request id; the call is
 * aborted when the calling node goes away. Never refused by the admission limits (counted at the
 * entry node; a thaw must always get through).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AGENT_CALL_OPERATION, CLUSTER_AGENT_COMMANDS, FENCED_FREEZES, MAX_REMOTE_TIMEOUT_MS, bodyDigest, type AgentCallBody } from '../../cluster/agent-call.js';
import { loadHopSecret, verifyHop, type HopPrincipal, type VerifiedHop } from '../../cluster/hop.js';
import { errors, isGatewayError } from '../../errors.js';
import type { AgentFence } from '../../freeze/types.js';
import { staleBy } from '../../freeze/thaw-fence.js';
import type { JsonObject } from '../../qga/types.js';
import { vmKey, type FenceCheck, type LeaseStore } from '../../store/types.js';
import { auditContext } from '../../util/audit.js';
import { globMatcher } from '../../util/glob.js';
import { isRecord } from '../../util/unknown.js';
import { requestSignal } from '../abort.js';

const BODY_LIMIT = 65_536;
const RAW = Symbol('qga.rawBody');
const HOP = Symbol('qga.hop');
type WithRaw = FastifyRequest & { [RAW]?: string; [HOP]?: VerifiedHop };

export interface ClusterInternalOptions {
  /** cluster.secretFile's secret (default: read from the config) */
  secret?: string;
}

export default async function clusterInternalRoutes(app: FastifyInstance, opts: ClusterInternalOptions): Promise<void> {
  const { services } = app;
  const { config } = services;
  const file = config.cluster.secretFile;
  const secret = opts.secret ?? (file ? loadHopSecret(file) : undefined);
  if (secret === undefined) throw new Error('cluster mode needs cluster.secretFile (the secret the nodes share)');
  const self = config.cluster.id ?? 'this node';

  // the raw text, for the digest the signed URL carries (this plugin's scope only)
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: BODY_LIMIT }, (request, body, done) => {
    (request as WithRaw)[RAW] = String(body);
    try {
      done(null, JSON.parse(String(body)) as unknown);
    } catch (e) {
      done(errors.notJson(e), undefined);
    }
  });

  app.post(
    '/internal/cluster/vms/:vm/agent-call',
    {
      schema: { hide: true, operationId: AGENT_CALL_OPERATION },
      config: { public: true, hopPurpose: 'agent-call' },
      bodyLimit: BODY_LIMIT,
      // the signature before anything else of the request is read
      onRequest: (request, _reply, done) => {
        const hop = verifyHop(secret, request.headers, request.method, request.url, Date.now(), 'agent-call');
        if (!hop) {
          done(errors.unauthenticated('node-call'));
          return;
        }
        (request as WithRaw)[HOP] = hop;
        done();
      },
    },
    async (request) => {
      const r = request as WithRaw;
      const hop = r[HOP];
      const digest = isRecord(request.query) ? request.query.digest : undefined;
      if (!hop || r[RAW] === undefined || typeof digest !== 'string' || digest !== bodyDigest(r[RAW])) {
        throw errors.unauthenticated('node-call');
      }
      const vm = isRecord(request.params) && typeof request.params.vm === 'string' ? request.params.vm : '';
      const call = parseBody(request.body, vm);
      await authorize(hop.principal, vm, call, services.store);
      try {
        await services.registry.require(vm);
      } catch (e) {
        if (isGatewayError(e) && e.code === 'VM_NOT_FOUND') {
          // a stale directory on the calling node: never let it read as "no such VM" (a thaw drops those)
          throw errors.nodeUnavailable(vm, self, `node ${self} does not serve VM ${vm} (any more); nothing was sent to the agent`, { command: call.command, extra: { sent: false } });
        }
        throw e;
      }
      await fenceCheck(services.store, vm, call.command, call.fence);
      // a thaw is checked again when it reaches the wire (it may wait for the socket meanwhile): a
      // fence refusal then sends nothing; anything else (the store down) lets it go
      const gate =
        call.command === 'guest-fsfreeze-thaw'
          ? async (): Promise<true | Error> => {
              try {
                await fenceCheck(services.store, vm, call.command, call.fence);
                return true;
              } catch (e) {
                return isGatewayError(e) && e.code === 'LEASE_CONFLICT' ? e : true;
              }
            }
          : undefined;
      const signal = requestSignal(request);
      const result = await auditContext.run({ by: hop.principal.name, ...(call.requestId !== undefined ? { requestId: call.requestId } : {}) }, () =>
        services.agent.call(vm, call.command, call.args, {
          timeoutMs: call.timeoutMs,
          signal,
          ...(call.priority ? { priority: call.priority } : {}),
          ...(call.skipCapabilityCheck ? { skipCapabilityCheck: true } : {}),
          ...(call.actor !== undefined ? { actor: call.actor } : {}),
          ...(gate ? { gate } : {}),
        }),
      );
      // as the freeze service does with its own VMs: let go of the socket after a freeze or thaw
      if (call.command !== 'guest-fsfreeze-status') void services.pool.remove(vm).catch(() => undefined);
      return { result };
    },
  );
}

function parseBody(body: unknown, vm: string): AgentCallBody {
  if (!isRecord(body)) throw errors.validation('the body is a JSON object');
  const { command, args, timeoutMs, priority, skipCapabilityCheck, fence, by, requestId, actor } = body;
  if (typeof command !== 'string' || !CLUSTER_AGENT_COMMANDS.has(command)) {
    throw errors.forbidden(`only the freeze commands (${[...CLUSTER_AGENT_COMMANDS].join(', ')}) are sent for another node`, { vm });
  }
  if (args !== undefined && !isRecord(args)) throw errors.validation('body.args is an object', { vm, command });
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_REMOTE_TIMEOUT_MS) {
    throw errors.validation(`body.timeoutMs is a whole number from 1 to ${MAX_REMOTE_TIMEOUT_MS}`, { vm, command });
  }
  if (priority !== undefined && priority !== 'thaw' && priority !== 'freeze') throw errors.validation('body.priority is thaw or freeze', { vm, command });
  if (typeof by !== 'string' || by.length === 0 || by.length > 256) throw errors.validation('body.by names the principal', { vm, command });
  if (requestId !== undefined && (typeof requestId !== 'string' || requestId.length > 256)) throw errors.validation('body.requestId is a string', { vm, command });
  if (actor !== undefined && actor !== 'gateway') throw errors.validation('body.actor is gateway when given', { vm, command });
  return {
    command,
    ...(args !== undefined ? { args: args as JsonObject } : {}),
    timeoutMs,
    ...(priority !== undefined ? { priority } : {}),
    ...(skipCapabilityCheck === true ? { skipCapabilityCheck: true } : {}),
    ...(fence !== undefined ? { fence: parseFence(fence, vm, command) } : {}),
    by,
    ...(requestId !== undefined ? { requestId } : {}),
    ...(actor !== undefined ? { actor } : {}),
  };
}

function parseFence(f: unknown, vm: string, command: string): AgentFence {
  const node = isRecord(f) && typeof f.node === 'string' ? { node: f.node } : {};
  if (isRecord(f) && f.forced === true) return { forced: true, ...node };
  if (isRecord(f) && typeof f.session === 'string' && typeof f.leaseId === 'string' && typeof f.epoch === 'string') {
    return { session: f.session, leaseId: f.leaseId, epoch: f.epoch, ...(f.rollback === true ? { rollback: true } : {}), ...node };
  }
  throw errors.validation('body.fence is {session, leaseId, epoch, rollback?, node?} or {forced: true, node?}', { vm, command });
}

/** VM glob matchers of carried principals (the same few objects: hop.ts caches them by header) */
const matchers = new WeakMap<HopPrincipal, (vm: string) => boolean>();

/** The carried principal's scope and VM glob checks, as the public routes make them (see the header). */
async function authorize(p: HopPrincipal, vm: string, call: AgentCallBody, store: LeaseStore): Promise<void> {
  const command = call.command;
  const thaw = command === 'guest-fsfreeze-thaw';
  const forced = call.fence !== undefined && 'forced' in call.fence;
  if (p.system === true) {
    if (thaw || command === 'guest-fsfreeze-status') return;
    throw errors.forbidden(`the gateway's own calls (${p.name}) never send ${command}`, { vm, command });
  }
  const scope = command === 'guest-fsfreeze-status' ? 'read' : 'write';
  if (!p.scopes.includes(scope)) throw errors.missingScope(p.name, scope);
  if (p.vms !== undefined) {
    let m = matchers.get(p);
    if (m === undefined) {
      m = globMatcher(p.vms);
      matchers.set(p, m);
    }
    if (!m(vm)) throw errors.vmsOutOfReach(p.name, [vm]);
  }
  if (thaw && forced && !p.scopes.includes('admin')) {
    // the entry node sends a thaw without a lease (forced fence) for a caller without admin only
    // when its store was down (an unverified lease id): allowed while the store is down here too
    try {
      await store.getByKey(vmKey(vm));
    } catch (e) {
      if (isGatewayError(e) && e.code === 'STORE_UNAVAILABLE') return;
      throw e;
    }
    throw errors.forbidden('force=true needs the admin scope', { vm, command });
  }
}

/** The fence check, right before the command is sent (see the header). Throws when it may not go. */
async function fenceCheck(store: LeaseStore, vm: string, command: string, fence: AgentFence | undefined): Promise<void> {
  if (command === 'guest-fsfreeze-status') return;
  const freeze = FENCED_FREEZES.has(command);
  if (fence === undefined || ('forced' in fence && freeze)) {
    throw errors.leaseConflict(`${command} for another node is sent only under a lease (fence); nothing was sent to the agent`, { vm, command, extra: { reason: 'fenced' } });
  }
  if ('forced' in fence) return;
  let c: FenceCheck;
  try {
    c = await store.check(vmKey(vm), fence.leaseId, fence.epoch);
  } catch (e) {
    // thaw is never blocked by the lock: an unneeded thaw harms no VM, a refused one may leave it frozen
    if (!freeze && isGatewayError(e) && e.code === 'STORE_UNAVAILABLE') return;
    throw e;
  }
  // a freeze only under its live lease; a thaw by the thaw's one rule (freeze/thaw-fence.ts)
  const ok = freeze ? c.state === 'live' && c.lease.session === fence.session : staleBy(c, fence.rollback === true) === undefined;
  if (ok) return;
  throw errors.leaseConflict(
    `lease ${fence.leaseId} ${c.state === 'superseded' ? 'no longer holds' : c.state === 'expired' ? 'has expired on' : c.state === 'live' ? 'is not the session holding' : 'has ended on'} VM ${vm}: ` +
      `the fence check refused ${command}; nothing was sent to the agent`,
    { vm, command, extra: { reason: 'fenced', state: c.state, leaseId: fence.leaseId } },
  );
}
