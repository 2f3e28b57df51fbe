/**
 * Which other nodes this node takes for alive (issue 17 item 3), from what each round reads of
 * Redis: a node is alive while its heartbeat key lives (cluster.heartbeatTtlMs), and gone after.
 *
 * Redis down (or cut off from this node) stops every heartbeat at once, so an outage must not read
 * as every node gone when it ends. A node's TTL therefore counts again from when Redis answered
 * this node again (`recovered()`), not across the outage: for one TTL after it, a node last read
 * alive is not declared gone for a heartbeat it could not write (its key expired meanwhile, or Redis
 * came back empty without it). Only a node still within its TTL when the outage began (`outage()`)
 * is held so: one that had stopped heartbeating before it, or before an earlier outage (Redis
 * flapping), is not kept alive by it.
 *
 * A node missing from the member index altogether (Redis restarted empty and it has not
 * heartbeated since) is alive until its TTL runs out from when it was last read alive (or from
 * the recovery, as above), and forgotten after RETENTION_MS.
 *
 * Transitions (found, gone, back) are logged once each; onGone's listeners hear of every node gone.
 * Times are performance.now(): monotonic.
 */
import type { NodeInfo } from './directory.js';
import { RETENTION_MS } from './membership.js';

/** What to do with a node the member index no longer lists. */
export type MissingNode = 'keep' | 'gone' | 'forget';

/** what is logged here (a pino logger is one) */
export interface LivenessLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
}

export class Liveness {
  /** when each other node was last read alive */
  private readonly heard = new Map<string, number>();
  /** the first round that read Redis again after it could not (undefined: none yet) */
  private recoveredAt: number | undefined;
  /** when the last outage began (the first round that could not read Redis) */
  private outageBegan = -Infinity;
  /** each node's last logged state */
  private readonly logged = new Map<string, boolean>();
  private readonly goneListeners = new Set<(node: NodeInfo) => void>();
  private readonly backListeners = new Set<(node: NodeInfo) => void>();

  constructor(
    private readonly ttlMs: number,
    private readonly logger: LivenessLog,
  ) {}

  /** a round could not read Redis, the first of an outage */
  outage(now = performance.now()): void {
    this.outageBegan = now;
  }

  /** a round read Redis again after an outage */
  recovered(now = performance.now()): void {
    this.recoveredAt = now;
  }

  /**
   * A node as the member index lists it (`alive` from its heartbeat key): alive as read, or held
   * alive after an outage when this node last took it for alive (`wasAlive`) within its TTL.
   */
  read(info: NodeInfo, wasAlive: boolean, now: number): NodeInfo {
    if (info.alive) {
      this.heard.set(info.id, now);
      return info;
    }
    return wasAlive && this.heldFrom(info.id, now) > -Infinity ? { ...info, alive: true } : info;
  }

  /** A node the member index no longer lists: kept as it is, gone now (it was alive), or forgotten. */
  missing(id: string, wasAlive: boolean, now: number): MissingNode {
    const age = now - Math.max(this.heard.get(id) ?? -Infinity, this.heldFrom(id, now));
    if (age > RETENTION_MS) return 'forget';
    return wasAlive && age > this.ttlMs ? 'gone' : 'keep';
  }

  forget(id: string): void {
    this.heard.delete(id);
    this.logged.delete(id);
  }

  onGone(fn: (node: NodeInfo) => void): () => void {
    this.goneListeners.add(fn);
    return () => this.goneListeners.delete(fn);
  }

  /** a node declared gone heartbeats again (restarted, or its outage ended) */
  onBack(fn: (node: NodeInfo) => void): () => void {
    this.backListeners.add(fn);
    return () => this.backListeners.delete(fn);
  }

  /** log a node found, gone or back, once per transition (and tell onGone's and onBack's listeners) */
  note(info: NodeInfo): void {
    const was = this.logged.get(info.id);
    if (was === info.alive) return;
    this.logged.set(info.id, info.alive);
    if (info.alive) {
      this.logger.info({ node: info.id, url: info.url }, was === undefined ? 'cluster: node found' : 'cluster: node is back');
      if (was === false) for (const fn of this.backListeners) fn(info);
    } else if (was !== undefined) {
      this.logger.warn({ node: info.id, lastSeen: new Date(info.lastSeen).toISOString() }, 'cluster: node stopped heartbeating; its VMs answer 503 NODE_UNAVAILABLE');
      for (const fn of this.goneListeners) fn(info);
    }
  }

  /** from when a node's TTL counts after an outage: the recovery, for a node within its TTL when the outage began; -Infinity otherwise */
  private heldFrom(id: string, now: number): number {
    const recovering = this.recoveredAt !== undefined && now - this.recoveredAt <= this.ttlMs;
    return recovering && (this.heard.get(id) ?? -Infinity) + this.ttlMs >= this.outageBegan ? (this.recoveredAt as number) : -Infinity;
  }
}
