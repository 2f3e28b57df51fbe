/**
 * Membership and the VM directory in Redis (issue 17 item 1). Every key of it shares the hash tag
 * `{cluster}`, so one MULTI may touch several of them on Redis Cluster too (one slot):
 *
 *   <prefix>{cluster}:members      ZSET node id → lastSeen (ms epoch): who ever heartbeated (pruned after RETENTION_MS)
 *   <prefix>{cluster}:node:<id>    STRING heartbeat JSON {id, url, version, vmCount, lastSeen, rev}, PX heartbeatTtlMs:
 *                                  present = the node is alive
 *   <prefix>{cluster}:info:<id>    the same JSON, kept RETENTION_MS: what is shown of a gone node
 *   <prefix>{cluster}:vms:<id>     HASH vm → summary JSON (summary.ts) of the VMs the node serves, kept RETENTION_MS
 *
 * A node writes all of its keys in one MULTI per heartbeat: only the hash fields that changed since
 * its last successful write (a full rewrite after a failure, at its first write, or when HLEN shows
 * the hash is not what it wrote, e.g. Redis lost its data). `rev` (incarnation:counter) changes with
 * every change of the hash, so readers re-read a hash (HGETALL) only when its rev moved.
 */
import { randomUUID } from 'node:crypto';
import type { RedisClient } from '../store/redis-connect.js';
import { isRecord } from '../util/unknown.js';
import type { NodeInfo } from './directory.js';
import { decodeSummary, type VmEntrySummary } from './summary.js';

/** how long a gone node (its info, its VM hash, its member entry) is remembered */
export const RETENTION_MS = 24 * 3_600_000;

export interface Heartbeat {
  id: string;
  url: string;
  version: string;
  vmCount: number;
  lastSeen: number;
  rev: string;
  /** hop.ts secretTag of its cluster secret (absent from older nodes) */
  secretTag?: string;
}

export interface MemberView {
  info: NodeInfo;
  rev: string;
}

export function clusterKeys(prefix: string) {
  return {
    members: `${prefix}{cluster}:members`,
    node: (id: string) => `${prefix}{cluster}:node:${id}`,
    info: (id: string) => `${prefix}{cluster}:info:${id}`,
    vms: (id: string) => `${prefix}{cluster}:vms:${id}`,
  };
}

function decodeHeartbeat(text: string | null): Heartbeat | undefined {
  if (text === null) return undefined;
  try {
    const v: unknown = JSON.parse(text);
    if (!isRecord(v)) return undefined;
    const { id, url, version, vmCount, lastSeen, rev, secretTag } = v;
    if (typeof id !== 'string' || typeof url !== 'string' || typeof version !== 'string' || typeof vmCount !== 'number' || typeof lastSeen !== 'number' || typeof rev !== 'string') return undefined;
    return { id, url, version, vmCount, lastSeen, rev, ...(typeof secretTag === 'string' ? { secretTag } : {}) };
  } catch {
    return undefined;
  }
}

export class Membership {
  private readonly keys: ReturnType<typeof clusterKeys>;
  /** vm → the summary JSON last written successfully */
  private published = new Map<string, string>();
  private fullRewrite = true;
  private readonly incarnation = randomUUID().slice(0, 8);
  private counter = 0;

  constructor(
    private readonly client: RedisClient,
    keyPrefix: string,
    readonly selfId: string,
    private readonly ttlMs: number,
  ) {
    this.keys = clusterKeys(keyPrefix);
  }

  get rev(): string {
    return `${this.incarnation}:${this.counter}`;
  }

  /** One heartbeat: this node's keys and the changes of its VM hash, in one MULTI. */
  async heartbeat(self: { url: string; version: string; lastSeen: number; secretTag?: string }, vms: ReadonlyMap<string, VmEntrySummary>, again = true): Promise<void> {
    const k = this.keys;
    const next = new Map<string, string>();
    for (const [vm, s] of vms) next.set(vm, JSON.stringify(s));
    const multi = this.client.multi();
    const full = this.fullRewrite;
    let changed = full;
    if (full) {
      multi.del(k.vms(this.selfId));
      if (next.size > 0) multi.hset(k.vms(this.selfId), Object.fromEntries(next));
    } else {
      const set: Record<string, string> = {};
      let nSet = 0;
      for (const [vm, json] of next) {
        if (this.published.get(vm) !== json) {
          set[vm] = json;
          nSet++;
        }
      }
      const gone = [...this.published.keys()].filter((vm) => !next.has(vm));
      if (nSet > 0) multi.hset(k.vms(this.selfId), set);
      if (gone.length > 0) multi.hdel(k.vms(this.selfId), ...gone);
      changed = nSet > 0 || gone.length > 0;
    }
    const counter = changed ? this.counter + 1 : this.counter;
    const hb: Heartbeat = {
      id: this.selfId, url: self.url, version: self.version, vmCount: next.size, lastSeen: self.lastSeen, rev: `${this.incarnation}:${counter}`,
      ...(self.secretTag !== undefined ? { secretTag: self.secretTag } : {}),
    };
    const json = JSON.stringify(hb);
    multi.set(k.node(this.selfId), json, 'PX', this.ttlMs);
    multi.set(k.info(this.selfId), json, 'PX', RETENTION_MS);
    multi.zadd(k.members, self.lastSeen, this.selfId);
    multi.zremrangebyscore(k.members, '-inf', self.lastSeen - RETENTION_MS);
    multi.pexpire(k.vms(this.selfId), RETENTION_MS);
    multi.hlen(k.vms(this.selfId));
    let replies: Array<[Error | null, unknown]> | null;
    try {
      replies = await multi.exec();
    } catch (err) {
      this.fullRewrite = true;
      throw err;
    }
    const failed = replies?.find(([e]) => e !== null);
    if (!replies || failed) {
      this.fullRewrite = true;
      throw failed?.[0] ?? new Error('cluster heartbeat: MULTI aborted');
    }
    this.counter = counter;
    this.published = next;
    const hlen = replies.at(-1)?.[1];
    // the hash is not what we wrote (Redis restarted empty, or someone else touched it): rewrite it
    // all at once, so that readers see this node's VMs again within this heartbeat
    this.fullRewrite = hlen !== next.size;
    if (this.fullRewrite && again) await this.heartbeat(self, vms, false);
  }

  /** Every node of the member index (this one too), alive or not. */
  async members(): Promise<MemberView[]> {
    const k = this.keys;
    const flat = await this.client.zrange(k.members, '0', '-1', 'WITHSCORES');
    const ids: Array<{ id: string; score: number }> = [];
    for (let i = 0; i + 1 < flat.length; i += 2) ids.push({ id: flat[i] ?? '', score: Number(flat[i + 1]) });
    if (ids.length === 0) return [];
    const got = await this.client.mget(...ids.flatMap(({ id }) => [k.node(id), k.info(id)]));
    const out: MemberView[] = [];
    ids.forEach(({ id, score }, i) => {
      const live = decodeHeartbeat(got[2 * i] ?? null);
      const known = live ?? decodeHeartbeat(got[2 * i + 1] ?? null);
      if (live && live.id === id) {
        out.push({ info: { id, url: live.url, version: live.version, vmCount: live.vmCount, lastSeen: live.lastSeen, alive: true, ...(live.secretTag !== undefined ? { secretTag: live.secretTag } : {}) }, rev: live.rev });
      } else {
        out.push({ info: { id, url: known?.url ?? '', version: known?.version ?? 'unknown', vmCount: known?.vmCount ?? 0, lastSeen: Math.max(score, known?.lastSeen ?? 0), alive: false }, rev: known?.rev ?? '' });
      }
    });
    return out;
  }

  /** A node's VM hash (malformed fields skipped). */
  async vmsOf(id: string): Promise<Map<string, VmEntrySummary>> {
    const raw = await this.client.hgetall(this.keys.vms(id));
    const out = new Map<string, VmEntrySummary>();
    for (const [vm, text] of Object.entries(raw)) {
      const s = decodeSummary(text);
      if (s) out.set(vm, s);
    }
    return out;
  }

  /** The live heartbeat of this node's id as Redis has it now (another process's, before this one's first). */
  async current(): Promise<{ url: string; lastSeen: number; rev: string } | undefined> {
    const hb = decodeHeartbeat(await this.client.get(this.keys.node(this.selfId)));
    return hb && hb.id === this.selfId ? { url: hb.url, lastSeen: hb.lastSeen, rev: hb.rev } : undefined;
  }

  /** A clean stop: the heartbeat goes at once (the others see this node gone at their next read). */
  async leave(): Promise<void> {
    // only this process's own heartbeat (not that of another process of the same id)
    const cur = decodeHeartbeat(await this.client.get(this.keys.node(this.selfId)));
    if (cur !== undefined && cur.rev.startsWith(`${this.incarnation}:`)) await this.client.del(this.keys.node(this.selfId));
    this.fullRewrite = true;
  }
}
