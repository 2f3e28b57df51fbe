/**
 * The shared lease store on Redis (ioredis). Several gateway processes pointing at one Redis see
 * the same locks, sessions, deadlines and API-registered VMs.
 *
 * The connection fails fast on purpose: no offline queue, no retries per request, no resend of
 * unanswered commands after a reconnect, a command timeout. A lock operation that cannot reach
 * Redis must fail NOW (freeze → 503) rather than sit in a queue and run minutes later, when the
 * caller has given up and nobody would thaw what it froze. The connection itself keeps
 * reconnecting in the background.
 *
 * A reply lost to a timeout does not lock its owner out: acquire with the same owner and
 * idempotency key returns the lease the lost call created (see ACQUIRE).
 *
 * Nothing given up on happens later. A Redis that is stopped (SIGSTOP) or behind a stalled
 * connection still holds the scripts already written to it, and runs them when it resumes, long
 * after the caller was answered 503. So ACQUIRE and RENEW carry a not-after instant on the store's
 * clock (when this process gives up on them, from a lower bound of the offset between the store's
 * clock and ours, sampled from replies that carry the store's time) and refuse to run past it.
 * An acquire that failed anyway (a reply lost right at the timeout) is also undone: its lease id is
 * released (compare-and-delete) as soon as the store answers again — unless it carried an
 * idempotency key, with which its owner's retry takes that lease back.
 */
import { createHash, randomUUID } from 'node:crypto';
import { GatewayError, errors, isGatewayError } from '../errors.js';
import { errorMessage, isRecord } from '../util/unknown.js';
import { IDEMPOTENCY_RETENTION_MS, canonicalKeys } from './memory.js';
import { connectRedis, lastRedisError, onNodeReady, type RedisClient, type RedisTarget } from './redis-connect.js';
import * as S from './redis-scripts.js';
import type { AcquireRequest, AcquireResult, EndedBy, EndedLease, FenceCheck, Lease, LeaseStore, RenewResult, SessionData, StoreHealth, VmRegistration } from './types.js';
import { ENDED_RETENTION_MS, isEndedBy, isVmRegistration } from './types.js';

/** Where Redis is (url, sentinels, clusterNodes; see redis-connect.ts) and the store's own settings. */
export interface RedisStoreOptions extends RedisTarget {
  keyPrefix?: string;
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** how long a tombstone is kept (default ENDED_RETENTION_MS) */
  endedRetentionMs?: number;
}

/** What a script answers: Redis bulk strings, integers, nil, and (nested) arrays of them. */
type Reply = string | number | null | Reply[];

/** A script's reply as ioredis hands it over (typed unknown), checked to be a Reply. */
function toReply(value: unknown): Reply {
  if (value === null || typeof value === 'string' || typeof value === 'number') return value;
  if (Array.isArray(value)) return value.map(toReply);
  throw errors.internal(`a store script answered a ${typeof value}`);
}

/** The reply of a script that answers a list (every one but RELEASE, UPDATE_DATA and CLAIM). */
function list(reply: Reply): Reply[] {
  if (!Array.isArray(reply)) throw errors.internal(`a store script answered ${String(reply)} where a list was expected`);
  return reply;
}

const RENEW_FAILURES = ['not-found', 'lease-mismatch', 'expired'] as const;
type RenewFailure = (typeof RENEW_FAILURES)[number];
const isRenewFailure = (tag: Reply): tag is RenewFailure => RENEW_FAILURES.some((f) => f === tag);

/** JSON this store wrote, read back through the guard of what it must be. */
function decode<T>(text: string, is: (value: unknown) => value is T, what: string): T {
  const value: unknown = JSON.parse(text);
  if (!is(value)) throw errors.internal(`the lease store holds a malformed ${what}`);
  return value;
}

const isStringList = (value: unknown): value is string[] => Array.isArray(value) && value.every((k) => typeof k === 'string');

/** Redis error prefixes that mean "the server cannot serve now", as opposed to a bug of ours. */
const ALL_SCRIPTS = [S.ACQUIRE, S.RENEW, S.RELEASE, S.GET_BY_KEY, S.UPDATE_DATA, S.CHECK, S.LIST_SESSIONS, S.CLAIM, S.EPOCH];

/** a sample of the store's clock older than this is refreshed (TIME) before an acquire or renew */
const CLOCK_SAMPLE_MAX_AGE_MS = 30_000;
/** the not-after instant is this much before this process gives up: the reply still has to travel */
const LATE_MARGIN_MS = 50;
/** given-up acquires whose lease id is still to be released, at most this many */
const ABANDONED_MAX = 1_000;
const ABANDONED_RETRY_MS = 500;

const UNAVAILABLE_PREFIXES = ['LOADING', 'BUSY', 'READONLY', 'MASTERDOWN', 'MISCONF', 'TRYAGAIN', 'CLUSTERDOWN', 'NOREPLICAS'];

export class RedisStore implements LeaseStore {
  readonly kind = 'redis' as const;
  readonly durable = true;
  private readonly redis: RedisClient;
  private readonly prefix: string;
  private readonly shas = new Map<string, string>();
  /**
   * Offered as the epoch when the data set is found empty. Fresh on every call: a value reused
   * after Redis lost its data would bring the old epoch back and hide the loss.
   */
  private get epochCandidate(): string {
    return randomUUID();
  }
  private highWater = 0;
  private readonly endedRetentionMs: number;
  private readonly commandTimeoutMs: number;
  /** lower bound of (store clock − performance.now()), ms; from replies carrying the store's time */
  private clockLo?: number;
  private clockAt = -Infinity;
  /** leaseId → acquires given up on (timeout): released once the store answers again */
  private readonly abandoned = new Map<string, { session: string; until: number }>();
  private abandonTimer?: NodeJS.Timeout;
  private abandonRunning = false;

  constructor(opts: RedisStoreOptions) {
    this.prefix = opts.keyPrefix ?? 'qga:';
    this.endedRetentionMs = opts.endedRetentionMs ?? ENDED_RETENTION_MS;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 2_000;
    // one server, Sentinel or Cluster, with the fail-fast settings above (redis-connect.ts); its
    // 'error' events are recorded there, callers learn of outages from rejections
    this.redis = connectRedis(opts, { commandTimeoutMs: this.commandTimeoutMs, connectTimeoutMs: opts.connectTimeoutMs ?? 2_000 });
    // load the scripts on every (re)connect of every data node, so that an EVALSHA whose reply is
    // lost was not a NOSCRIPT that never ran (a fresh or restarted Redis knows no scripts)
    onNodeReady(this.redis, (node) => {
      for (const script of ALL_SCRIPTS) node.script('LOAD', script).catch(() => undefined);
    });
  }

  async ready(timeoutMs = 5_000): Promise<void> {
    if (this.redis.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        this.redis.off('ready', onReady);
        reject(errors.storeUnavailable(`Redis not ready within ${timeoutMs} ms${connectionWhy(lastRedisError(this.redis))}`));
      }, timeoutMs);
      const onReady = () => {
        clearTimeout(t);
        resolve();
      };
      this.redis.once('ready', onReady);
    });
  }

  /**
   * The connection and the key prefix, for the HTTP rate limit's counters (http/plugins/limits.ts),
   * so they need no second connection. Its fail-fast settings apply to them too.
   */
  get connection(): { client: RedisClient; keyPrefix: string } {
    return { client: this.redis, keyPrefix: this.prefix };
  }

  get fenceHighWater(): number {
    return this.highWater;
  }

  async acquire(req: AcquireRequest): Promise<AcquireResult> {
    const floor = Math.max(req.fenceFloor ?? 0, this.highWater);
    const leaseId = randomUUID();
    const notAfter = await this.notAfter();
    let reply: Reply;
    try {
      reply = await this.run(S.ACQUIRE, [
        this.epochCandidate,
        req.session,
        canonicalKeys(req.keys),
        req.owner,
        req.ttlMs,
        req.hardCapMs,
        req.idempotencyKey ?? '',
        floor,
        JSON.stringify(req.data ?? {}),
        leaseId,
        IDEMPOTENCY_RETENTION_MS,
        notAfter,
      ]);
    } catch (e) {
      // it may have run in time, its reply lost: undo it once the store answers again, unless an
      // idempotency key lets its owner's retry take it back (C6)
      if (isGatewayError(e) && e.code === 'STORE_UNAVAILABLE' && !req.idempotencyKey) this.abandon(req.session, leaseId, req.ttlMs);
      throw e;
    }
    const r = list(reply);
    const tag = r[0];
    if (tag === 'late') throw this.lateError('lock');
    if (tag === 'ok' || tag === 'reused') {
      const lease = this.lease(r.slice(1));
      if (tag === 'ok') this.noteStoreTime(lease.createdAt);
      return { ok: true, lease, reused: tag === 'reused' };
    }
    if (tag === 'conflict') {
      const h = this.lease(r.slice(3));
      return {
        ok: false,
        reason: 'conflict',
        key: String(r[1]),
        pendingThaw: r[2] === '1',
        holder: { session: h.session, owner: h.owner, leaseId: h.leaseId, expiresAt: h.expiresAt, fence: h.fence },
      };
    }
    return { ok: false, reason: 'idempotency-key-reused', session: String(r[1]), leaseId: String(r[2]) };
  }

  async renew(session: string, leaseId: string, ttlMs: number): Promise<RenewResult> {
    const r = list(await this.run(S.RENEW, [session, leaseId, ttlMs, await this.notAfter()]));
    const reason = r[0];
    if (reason === 'late') throw this.lateError('renew');
    if (reason === 'ok') return { ok: true, capped: r[1] === '1', lease: this.lease(r.slice(2)) };
    if (!isRenewFailure(reason)) throw errors.internal(`RENEW answered ${String(reason)}`);
    return r.length > 1 ? { ok: false, reason, lease: this.lease(r.slice(1)) } : { ok: false, reason };
  }

  async release(session: string, leaseId: string, endedBy?: EndedBy): Promise<boolean> {
    return (await this.run(S.RELEASE, [session, leaseId, endedBy ?? '', this.endedRetentionMs])) === 1;
  }

  async ended(leaseId: string): Promise<EndedLease | undefined> {
    const m = await this.guard(() => this.redis.hgetall(this.prefix + 'ended:' + leaseId));
    if (!Object.keys(m).length) return undefined;
    if (typeof m.session !== 'string' || !isEndedBy(m.endedBy) || !Number.isFinite(Number(m.endedAt))) {
      throw errors.internal('the lease store holds a malformed tombstone');
    }
    return { leaseId, session: m.session, endedAt: Number(m.endedAt), endedBy: m.endedBy };
  }

  async getByKey(key: string): Promise<Lease | undefined> {
    const r = list(await this.run(S.GET_BY_KEY, [key]));
    return r.length ? this.lease(r) : undefined;
  }

  async getSession(session: string): Promise<Lease | undefined> {
    const r = await this.guard(() => this.redis.hgetall(this.prefix + 'session:' + session));
    return Object.keys(r).length ? this.leaseFromMap(r) : undefined;
  }

  async updateData(session: string, leaseId: string, data: SessionData): Promise<boolean> {
    return (await this.run(S.UPDATE_DATA, [session, leaseId, JSON.stringify(data)])) === 1;
  }

  async check(key: string, leaseId: string, epoch: string, opts: { timeoutMs?: number } = {}): Promise<FenceCheck> {
    const r = list(await this.run(S.CHECK, [this.epochCandidate, key, leaseId, epoch], opts.timeoutMs));
    switch (r[0]) {
      case 'live':
      case 'expired':
        return { state: r[0], lease: this.lease(r.slice(1)) };
      case 'superseded':
        return { state: 'superseded', holder: this.lease(r.slice(1)) };
      case 'lost':
        return { state: 'lost', epoch: String(r[1]) };
      default:
        return { state: 'ended' };
    }
  }

  async dueSessions(limit: number): Promise<Lease[]> {
    const r = list(await this.run(S.LIST_SESSIONS, ['now', limit]));
    return r.map((f) => this.lease(list(f)));
  }

  async claim(session: string, leaseId: string, retryMs: number, opts: { timeoutMs?: number } = {}): Promise<boolean> {
    return (await this.run(S.CLAIM, [session, leaseId, retryMs], opts.timeoutMs)) === 1;
  }

  async listSessions(): Promise<Lease[]> {
    const r = list(await this.run(S.LIST_SESSIONS, ['+inf', 1_000_000]));
    return r.map((f) => this.lease(list(f)));
  }

  async now(): Promise<number> {
    const [sec, usec] = await this.guard(() => this.redis.time());
    const ms = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    this.noteStoreTime(ms);
    return ms;
  }

  async putVm(rec: VmRegistration): Promise<boolean> {
    return (await this.guard(() => this.redis.hsetnx(this.prefix + 'vms', rec.name, JSON.stringify(rec)))) === 1;
  }

  async getVm(name: string): Promise<VmRegistration | undefined> {
    const v = await this.guard(() => this.redis.hget(this.prefix + 'vms', name));
    return v === null ? undefined : decode(v, isVmRegistration, 'VM record');
  }

  async deleteVm(name: string): Promise<boolean> {
    return (await this.guard(() => this.redis.hdel(this.prefix + 'vms', name))) === 1;
  }

  async listVms(): Promise<VmRegistration[]> {
    const vals = await this.guard(() => this.redis.hvals(this.prefix + 'vms'));
    return vals.map((v) => decode(v, isVmRegistration, 'VM record')).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async health(): Promise<StoreHealth> {
    const t0 = performance.now();
    try {
      const r = list(await this.run(S.EPOCH, [this.epochCandidate]));
      this.noteStoreTime(Number(r[1]));
      return { ok: true, kind: 'redis', epoch: String(r[0]), latencyMs: Math.round((performance.now() - t0) * 100) / 100 };
    } catch (e) {
      return { ok: false, kind: 'redis', detail: errorMessage(e) };
    }
  }

  async close(): Promise<void> {
    if (this.abandonTimer) clearInterval(this.abandonTimer);
    this.abandonTimer = undefined;
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }

  /**
   * A store time `storeMs` read in a reply that has just arrived: the store's clock minus ours was
   * at least storeMs − now (the store read its clock before we got the reply). The tightest recent
   * bound is kept; an old one is replaced (clocks drift).
   */
  private noteStoreTime(storeMs: number): void {
    if (!Number.isFinite(storeMs)) return;
    const t = performance.now();
    const lo = storeMs - t;
    this.clockLo = this.clockLo === undefined || t - this.clockAt > CLOCK_SAMPLE_MAX_AGE_MS ? lo : Math.max(this.clockLo, lo);
    this.clockAt = t;
  }

  /**
   * The instant, on the store's clock, after which a script sent now must not run: no later than
   * when this process gives up on it (commandTimeoutMs), a margin earlier for the reply's trip.
   */
  private async notAfter(): Promise<number> {
    if (this.clockLo === undefined || performance.now() - this.clockAt > CLOCK_SAMPLE_MAX_AGE_MS) await this.now();
    return Math.floor(performance.now() + (this.clockLo ?? 0) + this.commandTimeoutMs - LATE_MARGIN_MS);
  }

  private lateError(what: 'lock' | 'renew'): GatewayError {
    return errors.storeUnavailable(
      `lease store (Redis) reached the ${what} operation only after this gateway had given up on it (store.commandTimeoutMs ${this.commandTimeoutMs} ms): refused by the store, nothing changed`,
    );
  }

  /** Remember a given-up acquire; its lease id is released once the store answers (bounded). */
  private abandon(session: string, leaseId: string, ttlMs: number): void {
    if (this.abandoned.size >= ABANDONED_MAX) {
      const oldest = this.abandoned.keys().next();
      if (!oldest.done) this.abandoned.delete(oldest.value);
    }
    // past the lease's would-be expiry there is nothing left to prevent
    this.abandoned.set(leaseId, { session, until: Date.now() + ttlMs + 60_000 });
    if (!this.abandonTimer) {
      this.abandonTimer = setInterval(() => void this.releaseAbandoned(), ABANDONED_RETRY_MS);
      this.abandonTimer.unref();
    }
  }

  private async releaseAbandoned(): Promise<void> {
    if (this.abandonRunning) return;
    this.abandonRunning = true;
    try {
      for (const [leaseId, a] of [...this.abandoned]) {
        if (Date.now() > a.until) {
          this.abandoned.delete(leaseId);
          continue;
        }
        try {
          // any answer means Redis has run this after the acquire (one connection, in order)
          await this.release(a.session, leaseId);
          this.abandoned.delete(leaseId);
        } catch {
          break;
        }
      }
    } finally {
      this.abandonRunning = false;
      if (this.abandoned.size === 0 && this.abandonTimer) {
        clearInterval(this.abandonTimer);
        this.abandonTimer = undefined;
      }
    }
  }

  /** EVALSHA, falling back to EVAL when Redis does not know the script (first use, or after a restart). */
  private async run(script: string, args: Array<string | number>, timeoutMs?: number): Promise<Reply> {
    let sha = this.shas.get(script);
    if (!sha) {
      sha = createHash('sha1').update(script).digest('hex');
      this.shas.set(script, sha);
    }
    const argv = [this.prefix, ...args.map((a) => (typeof a === 'number' ? String(Math.round(a)) : a))];
    const call = async (): Promise<Reply> => {
      try {
        return toReply(await this.redis.evalsha(sha, 0, ...argv));
      } catch (e) {
        if (!errorPrefix(e).startsWith('NOSCRIPT')) throw e;
        return toReply(await this.redis.eval(script, 0, ...argv));
      }
    };
    return this.guard(() => (timeoutMs !== undefined && timeoutMs < this.commandTimeoutMs ? withTimeout(call(), timeoutMs) : call()));
  }

  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw toGatewayError(e, lastRedisError(this.redis));
    }
  }

  private lease(flat: Reply[]): Lease {
    const m: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) m[String(flat[i])] = String(flat[i + 1]);
    return this.leaseFromMap(m);
  }

  private leaseFromMap(m: Record<string, string>): Lease {
    const lease: Lease = {
      session: m.session,
      keys: decode(m.keys, isStringList, 'lock key list'),
      leaseId: m.leaseId,
      owner: m.owner,
      fence: Number(m.fence),
      createdAt: Number(m.createdAt),
      expiresAt: Number(m.expiresAt),
      hardDeadline: Number(m.hardDeadline),
      ...(m.idem ? { idempotencyKey: m.idem } : {}),
      epoch: m.epoch,
      data: decode(m.data, isRecord, 'session data'),
    };
    if (lease.fence > this.highWater) this.highWater = lease.fence;
    return lease;
  }
}

/** `p`, or STORE_UNAVAILABLE once `ms` have passed without its answer (it may still be applied). */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(errors.storeUnavailable(`lease store (Redis) did not answer within ${ms} ms`)), ms);
  });
  p.catch(() => undefined);
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

function errorPrefix(e: unknown): string {
  return e instanceof Error && e.name === 'ReplyError' ? e.message : '';
}

/** why the connection is down, as the server or the socket said it (WRONGPASS, a certificate error…) */
function connectionWhy(lastError: string | undefined, msg?: string): string {
  return lastError && lastError !== msg ? ` (last connection error: ${lastError})` : '';
}

function toGatewayError(e: unknown, lastConnectionError?: string): GatewayError {
  if (e instanceof GatewayError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const prefix = errorPrefix(e);
  // a ReplyError that is not an availability condition is a script or usage bug: say so loudly
  if (prefix && !UNAVAILABLE_PREFIXES.some((p) => prefix.startsWith(p))) {
    return errors.internal(`Redis refused a store command: ${msg}`, { cause: e });
  }
  return errors.storeUnavailable(`lease store (Redis) unavailable: ${msg}${connectionWhy(lastConnectionError, msg)}`, { cause: e });
}
