/**
 * Freezing a set of VMs under one lease — a single VM is a set of one, a freeze group several.
 * The order is fixed and every step exists for a failure it answers:
 *   1. bounds (TTL, mountpoints) and every VM registered → 400 / 404 before anything is locked;
 *   2. acquire the lease for all VM keys at once → 409 LEASE_CONFLICT naming holder and expiry,
 *      503 STORE_UNAVAILABLE when the store is down (nothing frozen, agent not asked);
 *   3. arm the local auto-thaw timer at once, so even a freeze that hangs is thawed on time;
 *   4. per VM, right before the freeze command: check the lease in the store (fencing — a process
 *      that was paused past its lease sends nothing; the embedded store: once per wave);
 *   5. freeze all VMs in parallel; if any fails, loses its connection or freezes nothing (the agent
 *      answers 0: 422 NOTHING_FROZEN), thaw every VM whose freeze may have taken effect
 *      (always-thaw) and end the lease. A single VM whose freeze TIMED OUT (sent, not answered in
 *      time: lost, or still running its hooks) is instead treated as frozen under the lease: 504
 *      AGENT_TIMEOUT naming the lease, which is kept (state unknown) and thawed at its deadline
 *      (or earlier by its holder) — one thaw, after whatever the agent does with the freeze;
 *   6. a freeze that outlived its lease (slow hooks) is rolled back the same way.
 */
import { GatewayError, errors } from '../errors.js';
import { groupOfSession, vmKey, vmOfKey, type AcquireRequest, type AcquireResult, type FenceCheck, type Lease, type LeaseStore } from '../store/types.js';
import type { ThawEngine } from './thaw.js';
import {
  asGatewayError,
  fenceOf,
  freezeData,
  iso,
  requestIdOf,
  unregistered,
  withExtra,
  type Caller,
  type FreezeAgent,
  type FreezeData,
  type FreezeRegistry,
  type FreezeSettings,
} from './types.js';
import type { FreezeLogger as Logger } from './types.js';

/** Codes that prove the freeze command did not run in the guest: no rollback thaw for those. */
const NOT_SENT = new Set(['VM_FROZEN', 'COMMAND_DISABLED', 'COMMAND_NOT_SUPPORTED', 'VM_NOT_FOUND', 'QUEUE_FULL', 'VALIDATION_FAILED', 'FORBIDDEN', 'LEASE_CONFLICT', 'STORE_UNAVAILABLE', 'SHUTTING_DOWN']);
const DEFAULT_FREEZE_TIMEOUT_MS = 300_000;
const REPLAY_POLL_MS = 200;
/** a group's members frozen at once (freeze.maxGroupVms may allow more members) */
const FREEZE_PARALLEL = 64;

/** `f` over `xs` with at most `limit` running at once; results in input order */
async function mapBounded<T, R>(xs: readonly T[], limit: number, f: (x: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(xs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < xs.length) {
      const i = next++;
      out[i] = await f(xs[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, xs.length) }, worker));
  return out;
}

export interface FreezeRequest {
  session: string;
  kind: 'vm' | 'group';
  vms: string[];
  mountpoints?: string[];
  ttlSeconds?: number;
  idempotencyKey?: string;
  caller: Caller;
}

export interface FrozenSession {
  lease: Lease;
  frozen: Record<string, number>;
  reused: boolean;
}

type VmFreezeResult =
  | { vm: string; ok: true; frozen: number }
  | { vm: string; ok: false; error: GatewayError; mayHaveFrozen: boolean };

export class SessionFreezer {
  /** leaseId → the freeze running in this process (an idempotent retry waits for it) */
  private readonly inflight = new Map<string, Promise<FrozenSession>>();

  constructor(
    private readonly store: LeaseStore,
    private readonly agent: FreezeAgent,
    private readonly registry: FreezeRegistry,
    private readonly engine: ThawEngine,
    private readonly settings: FreezeSettings,
    private readonly logger: Logger,
    private readonly gatewayId: string,
    private readonly claimRetryMs: number,
    private readonly releaseChannel?: (vm: string) => Promise<void>,
  ) {}

  ttlMs(ttlSeconds: number | undefined): number {
    const ttl = ttlSeconds ?? this.settings.defaultTtlSeconds;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > this.settings.maxTtlSeconds) {
      // worded as the HTTP layer words a value past the schema's absolute bound (http/error-handler.ts)
      throw errors.validation(`body.ttlSeconds must be a whole number from 1 to ${this.settings.maxTtlSeconds} (freeze.maxTtlSeconds)`, {
        extra: { maxTtlSeconds: this.settings.maxTtlSeconds },
      });
    }
    return ttl * 1000;
  }

  async freeze(p: FreezeRequest): Promise<FrozenSession> {
    const ttlMs = this.ttlMs(p.ttlSeconds);
    if (p.mountpoints) {
      const bad = p.mountpoints.find((m) => !m.startsWith('/'));
      if (bad !== undefined) throw errors.validation(`mountpoints must be absolute paths: "${bad}"`);
    }
    // all at once (a group's members); the first unregistered one in the order given
    const missing = await unregistered(this.registry, p.vms);
    if (missing.length) throw errors.vmNotFound(missing[0]);
    const nodes = this.pinsOf(p.vms);
    const data: FreezeData = {
      kind: p.kind,
      vms: p.vms,
      ...(p.mountpoints ? { mountpoints: p.mountpoints } : {}),
      state: 'freezing',
      gateway: this.gatewayId,
      ttlMs,
      ...(nodes ? { nodes } : {}),
    };
    const req: AcquireRequest = {
      session: p.session,
      keys: p.vms.map(vmKey),
      owner: p.caller.name,
      ttlMs,
      hardCapMs: this.settings.maxTotalSeconds * 1000,
      ...(p.idempotencyKey ? { idempotencyKey: p.idempotencyKey } : {}),
      fenceFloor: this.store.fenceHighWater,
      data: { ...data },
    };
    let r = await this.store.acquire(req);
    if (!r.ok && r.reason === 'conflict' && r.pendingThaw && (await this.thawStale(r.holder.session))) {
      r = await this.store.acquire(req);
    }
    if (!r.ok) throw conflictError(r, p);
    if (r.reused) {
      const other = otherRequest(r.lease, ttlMs, p.mountpoints);
      if (other !== undefined) {
        throw errors.leaseConflict(`this Idempotency-Key was used for a freeze of the same VMs with ${other}: a retry must repeat the request as it was, or use a new key`, {
          extra: { leaseId: r.lease.leaseId },
        });
      }
      return this.replay(r.lease);
    }
    const lease = r.lease;
    this.engine.arm(lease);
    const run = this.run(lease, p.vms, p.mountpoints, p.caller.requestId);
    this.inflight.set(lease.leaseId, run);
    try {
      return await run;
    } finally {
      this.inflight.delete(lease.leaseId);
    }
  }

  /** cluster mode: the node each VM's freeze is bound to (the VMs only one node reaches); undefined when none is */
  private pinsOf(vms: string[]): Record<string, string> | undefined {
    if (this.agent.pinFor === undefined) return undefined;
    const out: Record<string, string> = {};
    for (const vm of vms) {
      const node = this.agent.pinFor(vm);
      if (node !== undefined) out[vm] = node;
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }

  /** The previous lease on a VM expired and waits for its thaw: thaw it now rather than refuse. */
  private async thawStale(session: string): Promise<boolean> {
    const stale = await this.store.getSession(session);
    if (!stale || !(await this.store.claim(stale.session, stale.leaseId, this.claimRetryMs))) return false;
    this.logger.warn({ session, owner: stale.owner }, 'expired lease still pending its thaw: thawing it before the new freeze');
    const res = await this.engine.thawSession(stale, 'before-freeze');
    return res.done && res.released;
  }

  private async run(lease: Lease, vms: string[], mountpoints: string[] | undefined, requestId?: string): Promise<FrozenSession> {
    // in parallel (a group's freezes overlap), at most FREEZE_PARALLEL agents at a time. With the
    // embedded store the first wave (started in one turn) shares one fence check: its locks are one
    // in-process map whose keys a lease takes and gives back together, so any one answers for all.
    // Redis keeps each VM's lock under its own key (its own shard in a cluster), which a failover
    // may lose on its own: there every member checks its own, as does a member that starts later.
    const shared = this.store.kind === 'memory';
    let wave: Promise<FenceCheck> | undefined;
    const results = await mapBounded(vms, FREEZE_PARALLEL, (vm, i) =>
      this.freezeVm(vm, lease, mountpoints, shared && i < FREEZE_PARALLEL ? (wave ??= this.store.check(vmKey(vms[0]), lease.leaseId, lease.epoch)) : undefined),
    );
    if (results.every((x) => x.ok)) {
      const frozen = Object.fromEntries(results.map((x) => [x.vm, x.ok ? x.frozen : 0]));
      const after = await this.store.check(vmKey(vms[0]), lease.leaseId, lease.epoch).catch(() => undefined);
      // an admin's forced thaw came meanwhile (service.ts marks the lease before sending it)
      const forcedBy = after?.state === 'live' ? freezeData(after.lease).forcedBy : undefined;
      // store down right now: the VMs are frozen under a lease the store had a moment ago; keep it
      if ((!after || after.state === 'live') && forcedBy === undefined) {
        const data = { ...lease.data, state: 'frozen', frozen };
        await this.store.updateData(lease.session, lease.leaseId, data).catch(() => false);
        const done: Lease = { ...lease, data };
        this.engine.arm(done);
        for (const vm of vms) void this.releaseChannel?.(vm).catch(() => undefined);
        this.logger.info({ session: lease.session, vms, fence: lease.fence, expiresAt: iso(lease.expiresAt), frozen, ...requestIdOf({ requestId }) }, 'frozen');
        return { lease: done, frozen, reused: false };
      }
      const ended = forcedBy === undefined && after?.state === 'ended' ? await this.store.ended(lease.leaseId).catch(() => undefined) : undefined;
      const err =
        forcedBy !== undefined || ended?.endedBy === 'forced'
          ? errors.leaseConflict(
              `a forced thaw${forcedBy === undefined ? '' : ` by ${forcedBy}`} ended this lease while its freeze was in flight: the guest is thawed again, take no snapshot; freeze again when ready`,
              { extra: { leaseId: lease.leaseId, endedBy: 'forced', ...(forcedBy === undefined ? {} : { forcedBy }) } },
            )
          : errors.leaseConflict('the freeze took longer than the lease: it ended meanwhile and the guest was thawed again', { extra: { leaseId: lease.leaseId } });
      // a forced thaw of this process sent after the freeze is shared here, not sent twice (ThawEngine.thawVm)
      const rolledBack = await this.rollback(lease, vms);
      this.logger.warn({ session: lease.session, vms, ...(forcedBy === undefined ? {} : { forcedBy }), ...requestIdOf({ requestId }) }, 'freeze ended before its answer: rolled back');
      throw withExtra(err, { allThawed: [...rolledBack.values()].every(Boolean) });
    }
    const timedOut = results.length === 1 && !results[0].ok && results[0].error.code === 'AGENT_TIMEOUT' && results[0].mayHaveFrozen ? results[0] : undefined;
    if (timedOut && !timedOut.ok) return this.keepUnconfirmed(lease, timedOut.vm, timedOut.error, requestId);
    const suspects = results.filter((x) => x.ok || x.mayHaveFrozen).map((x) => x.vm);
    const rollback = await this.rollback(lease, suspects);
    if (mountpoints) {
      // an agent that refuses mountpoints it does not have (rather than freezing 0 of them) froze
      // nothing either; asked once the rollback has thawed the guest, when guest-get-fsinfo is allowed
      for (const [i, x] of results.entries()) {
        if (x.ok || x.error.code !== 'AGENT_ERROR') continue;
        const missing = await this.missingMountpoints(x.vm, mountpoints);
        if (missing && missing.length === mountpoints.length) {
          results[i] = { ...x, error: nothingFrozen(x.vm, 'guest-fsfreeze-freeze-list', mountpoints, { qga: x.error.qga, missing }) };
        }
      }
    }
    const failures = results.filter((x): x is Extract<VmFreezeResult, { ok: false }> => !x.ok);
    const perVm = results.map((x) => ({
      vm: x.vm,
      result: x.ok ? 'frozen' : 'failed',
      ...(x.ok ? {} : { error: { code: x.error.code, detail: x.error.message } }),
      thawAttempted: suspects.includes(x.vm),
      ...(rollback.has(x.vm) ? { thawed: rollback.get(x.vm) } : {}),
    }));
    const first = failures[0];
    this.logger.warn({ session: lease.session, failures: failures.map((f) => ({ vm: f.vm, code: f.error.code })), rolledBack: suspects, ...requestIdOf({ requestId }) }, 'freeze failed: rolled back');
    // allThawed: whether what this freeze may have frozen is thawed again; said only when it may have
    // frozen something (a guest already frozen by another tool is not "all thawed")
    throw withExtra(first.error, { vms: perVm, ...(rollback.size > 0 ? { allThawed: [...rollback.values()].every(Boolean) } : {}) });
  }

  /** `fence`: a check of the lease made for this member's wave; none: check now */
  private async freezeVm(vm: string, lease: Lease, mountpoints: string[] | undefined, fence?: Promise<FenceCheck>): Promise<VmFreezeResult> {
    try {
      const c = await (fence ?? this.store.check(vmKey(vm), lease.leaseId, lease.epoch));
      if (c.state !== 'live') {
        const error = errors.leaseConflict(`the lease ended (${c.state}) before the freeze of ${vm} was sent; nothing was frozen`, { vm });
        return { vm, ok: false, error, mayHaveFrozen: false };
      }
    } catch (e) {
      return { vm, ok: false, error: asGatewayError(e, { vm }), mayHaveFrozen: false };
    }
    const command = mountpoints ? 'guest-fsfreeze-freeze-list' : 'guest-fsfreeze-freeze';
    // a freeze that outlives its lease is useless: never wait for it longer than the lease
    const timeoutMs = Math.max(1, Math.min(this.settings.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS, lease.expiresAt - Date.now()));
    try {
      // The agent's own answer decides (disabled, unknown, frozen): a guest-info cached while the
      // guest was frozen lists freeze as disabled long after the thaw.
      // the priority lane: ahead of every queued reader, whatever the queue's length
      const r = await this.agent
        .call(vm, command, mountpoints ? { mountpoints } : undefined, { timeoutMs, skipCapabilityCheck: true, priority: 'freeze', fence: fenceOf(lease, vm) })
        .finally(() => this.engine.noteFreezeSettled(lease.leaseId, vm));
      const frozen = typeof r === 'number' ? r : Number(r);
      // Nothing frozen (the real qemu-ga answers 0 for mountpoints it does not have, and unsets its
      // frozen state itself): a failure like any other, and the rollback still sends a thaw, which
      // costs one command and also clears an agent that stayed in frozen state with 0 filesystems.
      if (frozen <= 0) return { vm, ok: false, error: nothingFrozen(vm, command, mountpoints), mayHaveFrozen: true };
      return { vm, ok: true, frozen };
    } catch (e) {
      let error = asGatewayError(e, { vm, command });
      // a frozen agent reports freeze as disabled (guest-info): say what is really going on
      if (error.code === 'COMMAND_DISABLED' && (await this.agent.call(vm, 'guest-fsfreeze-status').catch(() => undefined)) === 'frozen') {
        error = errors.frozenOutsideLeases(vm, command);
      }
      return { vm, ok: false, error, mayHaveFrozen: !NOT_SENT.has(error.code) && !neverSent(error) };
    }
  }

  /**
   * The freeze of `vm` timed out: the agent may have frozen the guest, or may yet. Treat it as
   * frozen under the lease (kept, state unknown): other freezes stay refused, the holder can thaw
   * with its lease, and the auto-thaw (local timer, sweeper) thaws at the deadline — after the
   * freeze on the VM's one channel, so exactly one thaw follows it.
   */
  private async keepUnconfirmed(lease: Lease, vm: string, error: GatewayError, requestId?: string): Promise<never> {
    const data = { ...lease.data, state: 'unknown' };
    await this.store.updateData(lease.session, lease.leaseId, data).catch(() => false);
    const kept: Lease = { ...lease, data };
    // a timer not yet due learns the state (its thaw reports it); one already firing is left alone
    if (lease.expiresAt > Date.now() && this.engine.localLease(lease.session)?.leaseId === lease.leaseId) this.engine.arm(kept);
    this.logger.error(
      { session: lease.session, vm, fence: lease.fence, expiresAt: iso(lease.expiresAt), code: error.code, ...requestIdOf({ requestId }) },
      'freeze timed out: the VM is treated as frozen under the lease until its deadline',
    );
    throw withExtra(error, {
      leaseId: lease.leaseId,
      fence: lease.fence,
      expiresAt: iso(lease.expiresAt),
      frozenUnderLease: true,
      vms: [{ vm, result: 'unknown', error: { code: error.code, detail: error.message }, thawAttempted: false }],
    });
  }

  /** The requested mountpoints the guest does not have (guest-get-fsinfo); undefined if it cannot tell. */
  private async missingMountpoints(vm: string, mountpoints: string[]): Promise<string[] | undefined> {
    try {
      const info = await this.agent.call(vm, 'guest-get-fsinfo');
      if (!Array.isArray(info)) return undefined;
      const have = new Set(info.map((fs) => (fs !== null && typeof fs === 'object' && !Array.isArray(fs) ? fs.mountpoint : undefined)));
      return mountpoints.filter((m) => !have.has(m));
    } catch {
      return undefined;
    }
  }

  /** Always-thaw: returns vm → thawed for every VM it tried. */
  private async rollback(lease: Lease, vms: string[]): Promise<Map<string, boolean>> {
    const out = new Map<string, boolean>();
    if (vms.length === 0) {
      this.engine.forget(lease.session, lease.leaseId);
      await this.engine.release(lease.session, lease.leaseId).catch(() => false);
      return out;
    }
    // once these are thawed the lease is released (VMs that never got a freeze need no thaw);
    // if a thaw fails, the engine retries and the durable deadline stays as the backstop
    const res = await this.engine.thawSession(lease, 'rollback', vms);
    for (const o of res.outcomes) out.set(o.vm, o.status !== 'failed');
    return out;
  }

  /** An idempotent retry: return what the first request got, waiting for it if it is still running. */
  private async replay(lease: Lease): Promise<FrozenSession> {
    const local = this.inflight.get(lease.leaseId);
    if (local) return { ...(await local), reused: true };
    const deadline = Math.min(lease.expiresAt, Date.now() + (this.settings.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS));
    let cur: Lease | undefined = lease;
    for (;;) {
      const d = freezeData(cur);
      if (d.state === 'frozen') return { lease: cur, frozen: d.frozen ?? {}, reused: true };
      if (d.state === 'unknown') {
        throw errors.leaseConflict(
          `the first request with this Idempotency-Key timed out on its freeze: the VM is treated as frozen under lease ${cur.leaseId} until ${iso(cur.expiresAt)}; thaw it with that lease`,
          { extra: { leaseId: cur.leaseId, expiresAt: iso(cur.expiresAt) } },
        );
      }
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, REPLAY_POLL_MS));
      cur = await this.store.getSession(lease.session);
      if (!cur || cur.leaseId !== lease.leaseId) break;
    }
    if (cur?.leaseId === lease.leaseId && cur.expiresAt > Date.now()) {
      // Still live and still 'freezing' past the freeze timeout: the gateway that took it stopped
      // mid-way (a node that died, a process killed), having frozen some VMs, none or all. They stay
      // frozen until the lease's deadline unless its holder thaws them: say how, with what (h10 F7).
      const group = groupOfSession(cur.session);
      const vms = freezeData(cur).vms;
      const thaw = group !== undefined ? `DELETE /v1/freeze-groups/${group}?leaseId=${cur.leaseId}` : `DELETE /v1/vms/${vms[0]}/fsfreeze?leaseId=${cur.leaseId}`;
      throw errors.leaseConflict(
        `the first request with this Idempotency-Key did not complete its freeze within the freeze timeout (the gateway that took it may have stopped mid-way): ` +
          `${vms.length === 1 ? `VM ${vms[0]} may be frozen` : `any of ${vms.join(', ')} may be frozen`} under lease ${cur.leaseId} until ${iso(cur.expiresAt)}, when it is thawed; thaw now with ${thaw}, then freeze with a new key`,
        { extra: { leaseId: cur.leaseId, expiresAt: iso(cur.expiresAt), vms, ...(group !== undefined ? { group } : {}) } },
      );
    }
    throw errors.leaseConflict('the first request with this Idempotency-Key did not complete its freeze; its lease has ended or is ending. Retry with a new key', {
      extra: { leaseId: lease.leaseId },
    });
  }
}

/**
 * The command provably never reached the agent (`sent: false`): a connect refused, no connection or
 * sync in time, its deadline passed in line, the agent known down (qga/outcomes.ts,
 * agent/state-health.ts), or, in cluster mode, NODE_UNAVAILABLE said before anything left this node.
 * One lost mid-call does not say so.
 */
function neverSent(e: GatewayError): boolean {
  return e.extra?.sent === false;
}

function nothingFrozen(vm: string, command: string, mountpoints: string[] | undefined, more: { qga?: GatewayError['qga']; missing?: string[] } = {}): GatewayError {
  const detail = mountpoints
    ? `the guest agent froze no filesystem: ${more.missing ? 'the guest has none of' : 'none of'} the mountpoints ${mountpoints.join(', ')}` +
      `${more.missing ? '' : ' is a filesystem it can freeze'} (GET /v1/vms/${vm}/filesystems lists them); the VM is left thawed and the lease has ended`
    : 'the guest agent froze no filesystem: the guest has none it can freeze; the VM is left thawed and the lease has ended';
  return errors.nothingFrozen(vm, detail, {
    command,
    ...(more.qga ? { qga: more.qga } : {}),
    extra: { frozen: 0, ...(mountpoints ? { mountpoints } : {}), ...(more.missing ? { missing: more.missing } : {}) },
  });
}

/** How an idempotent retry's request differs from the one that made the lease (undefined: the same; a lease made before the TTL was kept is checked on mountpoints only). */
function otherRequest(lease: Lease, ttlMs: number, mountpoints: string[] | undefined): string | undefined {
  const d = freezeData(lease);
  const key = (m: string[] | undefined) => JSON.stringify([...(m ?? [])].sort());
  const diffs: string[] = [];
  if (d.ttlMs !== undefined && d.ttlMs !== ttlMs) diffs.push(`ttlSeconds ${d.ttlMs / 1000} (this one: ${ttlMs / 1000})`);
  if (key(d.mountpoints) !== key(mountpoints)) diffs.push(`mountpoints ${d.mountpoints?.length ? d.mountpoints.join(', ') : '(all)'} (this one: ${mountpoints?.length ? mountpoints.join(', ') : '(all)'})`);
  return diffs.length > 0 ? diffs.join(' and ') : undefined;
}

function conflictError(r: Exclude<AcquireResult, { ok: true }>, p: FreezeRequest): GatewayError {
  if (r.reason === 'idempotency-key-reused') {
    return errors.leaseConflict('this Idempotency-Key was already used for a freeze that has ended or was for other VMs; use a new key',
      { extra: { leaseId: r.leaseId } },
    );
  }
  const vm = vmOfKey(r.key) ?? r.key;
  const h = r.holder;
  const group = groupOfSession(h.session);
  const mine = h.owner === p.caller.name || p.caller.admin;
  const acq = r.acquiring;
  // a group being taken: its VMs are locked one by one, nothing frozen yet (or its acquirer died mid-way)
  const detail = acq
    ? `VM ${vm} is being locked by freeze group ${group ?? h.session} of ${h.owner} (begun at ${iso(acq.since)}, nothing frozen by it yet); ` +
      `a group whose acquisition was abandoned (its gateway died) is rolled back by the next freeze from ${iso(acq.rollbackAt)}: retry then`
    : r.pendingThaw
      ? `VM ${vm} is still frozen under an expired lease held by ${h.owner}; its thaw is in progress, retry shortly`
      : `VM ${vm} is frozen under another lease, held by ${h.owner} until ${iso(h.expiresAt)}`;
  return errors.leaseConflict(detail, {
    vm,
    ...(acq ? { retryAfter: Math.max(1, Math.ceil(acq.rollbackInMs / 1000)) } : {}),
    extra: {
      ...(acq ? { acquiring: true } : {}),
      holder: h.owner,
      expiresAt: iso(h.expiresAt),
      pendingThaw: r.pendingThaw,
      ...(group ? { group } : {}),
      ...(mine ? { leaseId: h.leaseId } : {}),
    },
  });
}
