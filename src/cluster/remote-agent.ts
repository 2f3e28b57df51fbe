/**
 * The freeze service's agent in cluster mode (issue 17 item 4). A freeze group may hold VMs that
 * other nodes serve, and the node that orchestrates it (the entry node of the request, or whichever
 * node's sweeper claimed a due lease) is not the one that can reach those agents. So every agent
 * command of the freeze service goes through `routeAgentCall`'s choice, by `locate(vm)`:
 *   local, unknown → this node's AgentService (unknown: VM_NOT_FOUND as today, but see below);
 *   remote         → a signed node-to-node call to the serving node, which sends the command
 *                    there (src/http/routes/cluster-internal.ts) after checking the lease again;
 *   gone, conflict → 503 NODE_UNAVAILABLE at once, nothing sent (`extra.sent: false`).
 * Only the freeze family crosses nodes (CLUSTER_AGENT_COMMANDS); the call is bounded by the
 * command's timeout plus HOP_SLACK_MS and aborted with the caller's signal. The serving node's
 * answer, success or problem, comes back as the same value or GatewayError (code, status, detail,
 * members) a local call would give; a node that cannot be reached is NODE_UNAVAILABLE, with
 * `sent: false` when the call never left (connection refused), so a freeze knows nothing ran.
 *
 * A thaw under a lease of a VM no node serves (`unknown`: no live or gone node publishes it, or
 * the directory could not be read yet) is NODE_UNAVAILABLE rather than VM_NOT_FOUND for
 * UNKNOWN_GRACE_MS from the first such thaw: the thaw engine drops a VM_NOT_FOUND from its lease,
 * and a directory glitch must not cost a thaw. After that the VM counts as deregistered (shut
 * down, removed) and is dropped from its lease, as on a single gateway. (A node that stops keeps
 * its VMs in the directory for a day, as `gone`: their thaws are retried until it returns.)
 *
 * The wire (agent-call.ts): POST <node url>/internal/cluster/vms/<vm>/agent-call?digest=<sha256 of the body>,
 * signed with signHop for the `agent-call` purpose (a forwarding signature never reaches it; the
 * digest in the signed URL binds the body, which hop.ts does not cover), carrying the REAL principal
 * the command is done for — the request's (name, scopes, VM globs, from the audit context), which
 * the serving node checks again as the public routes do — or, for the gateway's own work (an
 * explicit actor: deadline, reconcile, retry thaws; or no request around it), SYSTEM_PRINCIPAL,
 * which may only thaw and read the status there. The request id goes along for the audit records.
 */
import { errors, isGatewayError } from '../errors.js';
import type { FreezeAgent, FreezeCallOptions, FreezeRegistry } from '../freeze/types.js';
import type { JsonObject, JsonValue } from '../qga/types.js';
import { auditContext, currentActor, type AuditPrincipal } from '../util/audit.js';
import { CLUSTER_AGENT_COMMANDS, MAX_REMOTE_TIMEOUT_MS, agentCallPath, bodyDigest, decode, readBounded, type AgentCallBody } from './agent-call.js';
import type { NodeInfo, VmLocation } from './directory.js';
import { SYSTEM_PRINCIPAL, signHop, type HopPrincipal } from './hop.js';

/** what the call adds to the command's own timeout: the hop, the fence check, a connect */
export const HOP_SLACK_MS = 5_000;
/** how long a leased thaw of a VM no node serves is retried before it counts as deregistered */
export const UNKNOWN_GRACE_MS = 120_000;
/** VMs remembered in that state at most (a bound; the oldest is forgotten first) */
const MAX_UNKNOWN = 10_000;
/** connection errors that prove the request never reached the other node */
const NOT_SENT_CAUSES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

/** What the routing agent needs of the ClusterService (src/cluster/directory.ts). */
export interface Locator {
  readonly selfId: string;
  locate(vm: string): VmLocation;
  node?(id: string): NodeInfo | undefined;
  /** the node a freeze of `vm` is bound to: the one serving it now, if only that node reaches it (service.ts) */
  pinFor?(vm: string): string | undefined;
  /** a node stopped heartbeating (its calls in flight are cut: a hung node answers nothing) */
  onNodeGone?(fn: (node: NodeInfo) => void): () => void;
}

export interface RoutingAgentOptions {
  /** this node's AgentService */
  local: FreezeAgent;
  /** the ClusterService, or a getter of it (built after the freeze service); none yet: every call is local */
  cluster: Locator | (() => Locator | undefined);
  /** cluster.secretFile's secret */
  secret: string;
  /** a command's catalog timeout, when the call names none (the pool's defaultTimeoutMs) */
  defaultTimeoutMs(command: string): number;
  /** default UNKNOWN_GRACE_MS (tests) */
  unknownGraceMs?: number;
  /** what the wait adds to the command's timeout (default HOP_SLACK_MS) */
  slackMs?: number;
  /** tests */
  fetch?: typeof fetch;
}

export class RoutingAgent implements FreezeAgent {
  private readonly fetch: typeof fetch;
  /** VM → when a leased thaw first found nobody serving it */
  private readonly unknownSince = new Map<string, number>();
  /**
   * Per node with calls in flight: aborted when the node is declared gone, so that a call to a hung
   * node (stopped, a host that stopped answering) ends then, not at the command's timeout: a group
   * freeze with a member there rolls the others back within heartbeatTtlMs instead of holding them
   * frozen for the freeze timeout (h10 F10). Entries go with their last call.
   */
  private readonly inFlight = new Map<string, { ac: AbortController; calls: number }>();
  private watching?: Locator;

  constructor(private readonly o: RoutingAgentOptions) {
    this.fetch = o.fetch ?? globalThis.fetch;
  }

  private get cluster(): Locator | undefined {
    return typeof this.o.cluster === 'function' ? this.o.cluster() : this.o.cluster;
  }

  pinFor(vm: string): string | undefined {
    return this.cluster?.pinFor?.(vm);
  }

  async call(vm: string, command: string, args?: JsonObject, opts: FreezeCallOptions = {}): Promise<JsonValue> {
    const cluster = this.cluster;
    if (!cluster) return this.o.local.call(vm, command, args, withoutFence(opts));
    const at = cluster.locate(vm);
    if (at.kind !== 'unknown' && this.unknownSince.size > 0) this.unknownSince.delete(vm);
    // A command under a lease bound to a node (a VM only that node reaches) goes to that node, even
    // when the name is served elsewhere now: another node's VM of the same name (a conflict, a
    // move) is another guest, and the thaw of this lease is not its to receive.
    const pinned = opts.fence?.node;
    if (pinned !== undefined && pinned !== (at.kind === 'local' ? cluster.selfId : at.kind === 'remote' ? at.node.id : undefined)) {
      return this.toPinned(cluster, pinned, vm, command, args, opts);
    }
    switch (at.kind) {
      case 'local':
        return this.o.local.call(vm, command, args, withoutFence(opts));
      case 'unknown':
        return this.unknown(vm, command, args, opts);
      case 'remote':
        return this.remote(cluster.selfId, at.node, vm, command, args, opts);
      case 'gone':
        throw errors.nodeUnavailable(vm, at.node.id, `node ${at.node.id}, which serves VM ${vm}, stopped heartbeating; nothing was sent to the agent`, {
          command,
          extra: { sent: false },
        });
      case 'conflict':
        throw errors.nodeUnavailable(vm, undefined, `VM ${vm} is claimed by several nodes (${at.nodes.join(', ')}); nothing was sent to the agent`, {
          command,
          extra: { sent: false, nodes: at.nodes },
        });
    }
  }

  private toPinned(cluster: Locator, pinned: string, vm: string, command: string, args: JsonObject | undefined, opts: FreezeCallOptions): Promise<JsonValue> {
    if (pinned === cluster.selfId) return this.o.local.call(vm, command, args, withoutFence(opts));
    const node = cluster.node?.(pinned);
    if (node === undefined || !node.alive) {
      throw errors.nodeUnavailable(
        vm,
        pinned,
        `VM ${vm} was frozen under this lease through node ${pinned}, which ${node === undefined ? 'is not known' : 'stopped heartbeating'}: ` +
          `the command goes to that node's VM only (another node's VM of the same name is another guest); nothing was sent`,
        { command, extra: { sent: false } },
      );
    }
    return this.remote(cluster.selfId, node, vm, command, args, opts);
  }

  private async unknown(vm: string, command: string, args: JsonObject | undefined, opts: FreezeCallOptions): Promise<JsonValue> {
    try {
      const r = await this.o.local.call(vm, command, args, withoutFence(opts));
      this.unknownSince.delete(vm);
      return r;
    } catch (e) {
      const leased = opts.fence !== undefined && !('forced' in opts.fence);
      if (!leased || command !== 'guest-fsfreeze-thaw' || !isGatewayError(e) || e.code !== 'VM_NOT_FOUND') throw e;
      const now = Date.now();
      let since = this.unknownSince.get(vm);
      if (since === undefined) {
        if (this.unknownSince.size >= MAX_UNKNOWN) this.unknownSince.delete(this.unknownSince.keys().next().value as string);
        since = now;
        this.unknownSince.set(vm, since);
      }
      const graceMs = this.o.unknownGraceMs ?? UNKNOWN_GRACE_MS;
      if (now - since < graceMs) {
        throw errors.nodeUnavailable(vm, 'none', `no node serves VM ${vm} now; its thaw is retried for ${Math.ceil((since + graceMs - now) / 1000)} s more before the VM counts as deregistered`, {
          command,
          extra: { sent: false },
        });
      }
      this.unknownSince.delete(vm);
      throw e;
    }
  }

  private async remote(selfId: string, node: NodeInfo, vm: string, command: string, args: JsonObject | undefined, opts: FreezeCallOptions): Promise<JsonValue> {
    if (!CLUSTER_AGENT_COMMANDS.has(command)) {
      throw errors.commandNotSupported(vm, command, `VM ${vm} is served by node ${node.id}: only the freeze commands are sent there for the freeze service, not ${command}`);
    }
    const timeoutMs = Math.min(MAX_REMOTE_TIMEOUT_MS, Math.max(1, Math.trunc(opts.timeoutMs ?? this.o.defaultTimeoutMs(command))));
    const who = currentActor(opts.actor);
    const body: AgentCallBody = {
      command,
      ...(args !== undefined ? { args } : {}),
      timeoutMs,
      ...(opts.priority ? { priority: opts.priority } : {}),
      ...(opts.skipCapabilityCheck ? { skipCapabilityCheck: true } : {}),
      ...(opts.fence ? { fence: opts.fence } : {}),
      by: who.by,
      ...(who.requestId !== undefined ? { requestId: who.requestId } : {}),
      ...(opts.actor !== undefined ? { actor: opts.actor } : {}),
    };
    const text = JSON.stringify(body);
    const url = `${agentCallPath(vm)}?digest=${bodyDigest(text)}`;
    const headers: Record<string, string> = {
      ...signHop(this.o.secret, { purpose: 'agent-call', method: 'POST', url, entryNode: selfId, principal: callerPrincipal(opts.actor) }),
      'content-type': 'application/json',
      ...(who.requestId !== undefined ? { 'x-request-id': who.requestId } : {}),
    };
    const timeout = AbortSignal.timeout(timeoutMs + (this.o.slackMs ?? HOP_SLACK_MS));
    const gone = this.goneSignal(node.id);
    const signal = AbortSignal.any(opts.signal ? [opts.signal, timeout, gone.ac.signal] : [timeout, gone.ac.signal]);
    let res: Response;
    let answer: string;
    try {
      res = await this.fetch(`${node.url.replace(/\/+$/, '')}${url}`, { method: 'POST', headers, body: text, signal, redirect: 'error' });
      answer = await readBounded(res);
    } catch (e) {
      throw this.failed(e, node, vm, command, opts.signal, timeout, timeoutMs, gone.ac.signal);
    } finally {
      if (--gone.calls === 0 && this.inFlight.get(node.id) === gone) this.inFlight.delete(node.id);
    }
    return decode(res.status, answer, node, vm, command, res.headers.get('retry-after'));
  }

  /** the signal that ends this node's calls when it is declared gone (one per node with calls in flight) */
  private goneSignal(nodeId: string): { ac: AbortController; calls: number } {
    const cluster = this.cluster;
    if (cluster !== undefined && this.watching !== cluster && cluster.onNodeGone !== undefined) {
      this.watching = cluster;
      cluster.onNodeGone((n) => {
        const e = this.inFlight.get(n.id);
        if (e === undefined) return;
        this.inFlight.delete(n.id);
        e.ac.abort(new Error(`node ${n.id} stopped heartbeating`));
      });
    }
    let e = this.inFlight.get(nodeId);
    if (e === undefined) {
      e = { ac: new AbortController(), calls: 0 };
      this.inFlight.set(nodeId, e);
    }
    e.calls++;
    return e;
  }

  private failed(e: unknown, node: NodeInfo, vm: string, command: string, caller: AbortSignal | undefined, timeout: AbortSignal, timeoutMs: number, gone: AbortSignal): Error {
    if (caller?.aborted) return caller.reason instanceof Error ? caller.reason : errors.wrap(caller.reason, { vm, command });
    if (gone.aborted && !timeout.aborted) {
      return errors.nodeUnavailable(vm, node.id, `node ${node.id} (${node.url}), which serves VM ${vm}, stopped heartbeating while ${command} waited for its answer; whether the agent got it is unknown`, {
        command,
        extra: { sent: true },
      });
    }
    if (timeout.aborted) {
      // sent, not answered in time: what a local command that timed out says (its effect unknown)
      return errors.agentTimeout(vm, command, `${command} sent through node ${node.id} got no answer within ${timeoutMs + (this.o.slackMs ?? HOP_SLACK_MS)} ms`, { extra: { node: node.id } });
    }
    const code = causeCode(e);
    const sent = !NOT_SENT_CAUSES.has(code ?? '');
    return errors.nodeUnavailable(
      vm,
      node.id,
      sent
        ? `the connection to node ${node.id} (${node.url}), which serves VM ${vm}, was lost during ${command} (${code ?? 'error'}); whether the agent got it is unknown`
        : `node ${node.id} (${node.url}), which serves VM ${vm}, cannot be reached (${code}); nothing was sent to the agent`,
      { command, extra: { sent } },
    );
  }
}

/**
 * The freeze service's registry in cluster mode: a VM another live node serves exists too (a freeze
 * group may name it); one whose node is gone, or that several nodes claim, is 503
 * NODE_UNAVAILABLE before anything is locked or frozen; the rest is this node's registry.
 */
export function routingRegistry(local: FreezeRegistry, cluster: () => Locator | undefined): FreezeRegistry {
  return {
    async require(vm: string): Promise<unknown> {
      const at = cluster()?.locate(vm);
      if (at?.kind === 'remote') return at.node;
      if (at?.kind === 'gone') throw errors.nodeUnavailable(vm, at.node.id, `node ${at.node.id}, which serves VM ${vm}, stopped heartbeating; nothing was frozen`, { extra: { sent: false } });
      if (at?.kind === 'conflict') {
        throw errors.nodeUnavailable(vm, undefined, `VM ${vm} is claimed by several nodes (${at.nodes.join(', ')}); nothing was frozen`, { extra: { sent: false, nodes: at.nodes } });
      }
      return local.require(vm);
    },
  };
}

/** carried principals by the request principal they come from (long-lived token principals) */
const carried = new WeakMap<AuditPrincipal, HopPrincipal>();

/**
 * Whom a node-to-node call is made for: with an explicit actor (the gateway acting on its own) or
 * no request around it, SYSTEM_PRINCIPAL; else the request's principal as authenticated (a context
 * without one is carried with no scopes: the serving node refuses it rather than trust a name).
 */
export function callerPrincipal(actor: string | undefined): HopPrincipal {
  if (actor !== undefined) return SYSTEM_PRINCIPAL;
  const ctx = auditContext.getStore();
  if (ctx === undefined) return SYSTEM_PRINCIPAL;
  const p = ctx.principal;
  if (p === undefined) return { name: ctx.by, scopes: [] };
  let h = carried.get(p);
  if (h === undefined) {
    h = { name: p.name, scopes: [...p.scopes], ...(p.globs !== undefined ? { vms: [...p.globs] } : {}) };
    carried.set(p, h);
  }
  return h;
}

function withoutFence(opts: FreezeCallOptions): FreezeCallOptions {
  if (opts.fence === undefined) return opts;
  const { fence: _fence, ...rest } = opts;
  return rest;
}

function causeCode(e: unknown): string | undefined {
  for (let c: unknown = e, i = 0; c !== undefined && c !== null && i < 4; c = (c as { cause?: unknown }).cause, i++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}


