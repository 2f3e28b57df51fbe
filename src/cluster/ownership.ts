/**
 * Ownership of VMs reachable from several nodes (a TCP endpoint, or an API registration, which
 * every node reads from the shared store): a lease per VM decides which ONE node connects.
 *
 *   <prefix>{vm:<name>}:owner   "<node id>:<fence>", PX heartbeatTtlMs (SET NX PX when free)
 *   <prefix>{vm:<name>}:fence   the fencing counter, INCR at every new claim
 *
 * Both keys share the VM's hash tag, so CLAIM is one script on one slot (Redis Cluster too). The
 * owner renews with its heartbeat; a node that does not own a VM claims it only when its owner is
 * not a live node in the directory (or nobody is known), so a fleet of 10,000 such VMs costs the
 * owner one script per VM per interval and the others nothing. The owner's own idea of its lease
 * ends `ttl - margin` after the last renewal was SENT: when it cannot renew (Redis unreachable) it
 * stops connecting (the pool asks `owns()`) and closes the channel before any other node can claim
 * it. A claim that comes back with a new fence (the lease expired in between) also closes the
 * channel: another node may have connected meanwhile.
 */
import { createHash } from 'node:crypto';
import type { RedisClient } from '../store/redis-connect.js';
import { errorMessage } from '../util/unknown.js';

const CLAIM = `
local cur = redis.call('GET', KEYS[1])
if cur then
  -- ours (this fence, or one whose reply this node lost): renewed
  if cur == ARGV[3] or string.sub(cur, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return cur
end
local f = redis.call('INCR', KEYS[2])
local v = ARGV[1] .. ':' .. f
redis.call('SET', KEYS[1], v, 'NX', 'PX', ARGV[2])
return v`;

const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

const sha1 = (lua: string) => createHash('sha1').update(lua).digest('hex');
const SHAS = new Map([CLAIM, RELEASE].map((lua) => [lua, sha1(lua)] as const));

interface Held {
  value: string;
  fence: number;
  /** performance.now() after which this node no longer counts on the lease */
  validUntil: number;
}

export interface OwnershipEvents {
  /** this node held the VM and no longer does (or its fence changed): close its channel */
  lost(vm: string, why: string): void;
  gained?(vm: string, fence: number): void;
}

function parse(value: string): { node: string; fence: number } {
  const i = value.lastIndexOf(':');
  return { node: value.slice(0, i), fence: Number(value.slice(i + 1)) };
}

export class Ownership {
  private readonly held = new Map<string, Held>();
  /** the owner last read of each VM this node does not hold */
  private readonly owners = new Map<string, string>();
  private readonly marginMs: number;
  /** fires when the first lease held runs out (expire()) */
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly client: RedisClient,
    private readonly prefix: string,
    private readonly selfId: string,
    private readonly ttlMs: number,
    private readonly events: OwnershipEvents,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.marginMs = Math.max(100, Math.round(ttlMs / 10));
  }

  private ownerKey(vm: string): string {
    return `${this.prefix}{vm:${vm}}:owner`;
  }

  private fenceKey(vm: string): string {
    return `${this.prefix}{vm:${vm}}:fence`;
  }

  /** this node holds a lease on `vm` that has not run out */
  owns(vm: string): boolean {
    const h = this.held.get(vm);
    return h !== undefined && this.now() < h.validUntil;
  }

  fenceOf(vm: string): number | undefined {
    return this.owns(vm) ? this.held.get(vm)?.fence : undefined;
  }

  /** this node's id when it owns `vm`, else the owner last read (undefined: not known) */
  ownerOf(vm: string): string | undefined {
    return this.owns(vm) ? this.selfId : this.owners.get(vm);
  }

  /** how many VMs this node owns now */
  get ownedCount(): number {
    let n = 0;
    for (const vm of this.held.keys()) if (this.owns(vm)) n++;
    return n;
  }

  /**
   * One round with the heartbeat: drop leases that ran out, release those of VMs this node no
   * longer has, renew the others, and claim candidates whose owner is not a live node. `recheck`:
   * read the owner of every candidate (the first round, and now and then). Errors per VM are
   * swallowed (the lease simply runs out); the count of failures is returned.
   */
  async round(candidates: ReadonlySet<string>, isAlive: (node: string) => boolean, recheck: boolean): Promise<number> {
    this.expire();
    for (const [vm, h] of this.held) {
      if (!candidates.has(vm)) {
        this.held.delete(vm);
        this.events.lost(vm, 'no longer registered here');
        void this.script(RELEASE, [this.ownerKey(vm)], [h.value]).catch(() => undefined);
      }
    }
    for (const vm of this.owners.keys()) if (!candidates.has(vm)) this.owners.delete(vm);
    const jobs: Array<Promise<void>> = [];
    let failures = 0;
    for (const vm of candidates) {
      const h = this.held.get(vm);
      const owner = this.owners.get(vm);
      if (!h && !recheck && owner !== undefined && owner !== this.selfId && isAlive(owner)) continue;
      jobs.push(this.claim(vm, h).catch(() => void failures++));
    }
    await Promise.all(jobs);
    this.arm();
    return failures;
  }

  /**
   * Drop the leases that ran out (renewals failed or late): their channels close. Runs on its own
   * timer too, so that a round stuck on an unreachable Redis does not keep a channel open past it.
   */
  expire(): void {
    const now = this.now();
    for (const [vm, h] of this.held) {
      if (now < h.validUntil) continue;
      this.held.delete(vm);
      this.events.lost(vm, 'its ownership lease was not renewed in time');
    }
    this.arm();
  }

  /** one timer at the first instant a lease held runs out, whatever a round is waiting for */
  private arm(): void {
    clearTimeout(this.timer);
    let first = Infinity;
    for (const h of this.held.values()) first = Math.min(first, h.validUntil);
    if (first === Infinity) return;
    this.timer = setTimeout(() => this.expire(), Math.max(0, Math.ceil(first - this.now())));
    this.timer.unref();
  }

  private async claim(vm: string, h: Held | undefined): Promise<void> {
    const sent = this.now();
    const reply = await this.script(CLAIM, [this.ownerKey(vm), this.fenceKey(vm)], [this.selfId, String(this.ttlMs), h?.value ?? '']);
    if (typeof reply !== 'string') return;
    const { node, fence } = parse(reply);
    if (node !== this.selfId) {
      this.owners.set(vm, node);
      if (this.held.delete(vm)) this.events.lost(vm, `node ${node} holds its ownership lease now`);
      return;
    }
    this.owners.delete(vm);
    const validUntil = sent + this.ttlMs - this.marginMs;
    const before = this.held.get(vm);
    this.held.set(vm, { value: reply, fence, validUntil });
    if (before && before.value !== reply) this.events.lost(vm, `its ownership lease was taken again under fence ${fence}`);
    if (!before || before.value !== reply) this.events.gained?.(vm, fence);
  }

  /** A clean stop: every lease held is released (compare-and-delete), so a live node takes over at once. */
  async releaseAll(): Promise<void> {
    clearTimeout(this.timer);
    const all = [...this.held];
    this.held.clear();
    await Promise.all(all.map(([vm, h]) => this.script(RELEASE, [this.ownerKey(vm)], [h.value]).catch(() => undefined)));
  }

  /** EVALSHA (40 bytes on the wire per VM, not the script), EVAL once where the node lacks it */
  private async script(lua: string, keys: string[], args: string[]): Promise<unknown> {
    try {
      return await this.client.evalsha(SHAS.get(lua) ?? sha1(lua), keys.length, ...keys, ...args);
    } catch (e) {
      if (!errorMessage(e).startsWith('NOSCRIPT')) throw e;
      return this.client.eval(lua, keys.length, ...keys, ...args);
    }
  }
}
