/**
 * AgentLink: a Channel's (at most one) socket to its agent, brought into step on demand.
 * ready() connects if needed, resyncs if the pairing of requests and replies is in doubt, and
 * reads guest-info once per connection (the agent may have been upgraded while we were away).
 * A resync that fails costs the socket; the Channel decides about backoff and retries.
 *
 * Events: 'stale' {bytes} (data discarded), 'resync' {reason}, 'lost' (the socket closed by
 * itself, not through drop()), 'orphan' {command, value} (the late reply of an abandoned command
 * that creates something in the agent, e.g. the handle of a guest-file-open that timed out).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { GatewayError } from '../errors.js';
import { agentErrorToGatewayError } from './agent-errors.js';
import { parseAgentInfo } from './agent-info.js';
import { AgentConnection } from './connection.js';
import type { AgentInfo, Endpoint, JsonObject } from './types.js';

export type ResyncReason = 'connect' | 'timeout' | 'aborted' | 'protocol-error' | 'stale-data' | 'requested';

export interface AgentLinkOptions {
  vm: string;
  endpoint: Endpoint;
  connectTimeoutMs: number;
  syncTimeoutMs: number;
  maxReplyBytes: number;
  now: () => number;
  logger?: Logger;
}

const MAX_ID = Number.MAX_SAFE_INTEGER;
/** abandoned requests remembered for their late replies; the oldest are forgotten first */
const MAX_ORPHANS = 64;

export class AgentLink extends EventEmitter {
  private readonly opts: AgentLinkOptions;
  private conn: AgentConnection | undefined;
  private openedAt: number | undefined;
  private info: AgentInfo | undefined;
  private infoErr: GatewayError | undefined;
  private infoStale = true;
  private resyncReason: ResyncReason | undefined;
  private nextRequestId = 1 + randomBytes(4).readUInt32BE(0);
  private readonly orphans = new Map<number, string>();

  constructor(opts: AgentLinkOptions) {
    super();
    this.opts = opts;
  }

  get connection(): AgentConnection | undefined {
    return this.conn;
  }

  get connectedAt(): number | undefined {
    return this.conn ? this.openedAt : undefined;
  }

  get agentInfo(): AgentInfo | undefined {
    return this.info;
  }

  /** why guest-info is unavailable (an agent error reply), if it is */
  get agentInfoError(): GatewayError | undefined {
    return this.infoErr;
  }

  /** Re-read guest-info before the next command (it changes with the agent's frozen state). */
  invalidateInfo(): void {
    this.infoStale = true;
  }

  /**
   * A request abandoned (timeout, caller gone) whose reply would name something the agent created:
   * if that reply still arrives on this channel, with its echoed id, an 'orphan' event hands it on.
   */
  orphan(id: number, command: string): void {
    this.orphans.set(id, command);
    if (this.orphans.size > MAX_ORPHANS) this.orphans.delete(this.orphans.keys().next().value as number);
  }

  /** Remember why the next ready() will resync (the connection already knows that it must). */
  markOutOfSync(reason: ResyncReason): void {
    this.resyncReason = reason;
  }

  /**
   * A connected, in-step connection. `phase` is told when connecting and syncing start, so the
   * channel can show it; `isCancelled` is asked after the connect completes.
   */
  async ready(phase: (p: 'connecting' | 'syncing') => void, isCancelled: () => boolean): Promise<{ conn: AgentConnection; rttMs?: number }> {
    let conn = this.conn;
    if (!conn || conn.closed) {
      phase('connecting');
      conn = await AgentConnection.connect(this.opts.endpoint, this.opts.connectTimeoutMs, this.opts.maxReplyBytes);
      if (isCancelled()) {
        conn.destroy();
        throw new GatewayError('AGENT_UNAVAILABLE', 'the channel was shut down', { vm: this.opts.vm });
      }
      this.attach(conn);
    }
    let rttMs: number | undefined;
    if (conn.needsSync) {
      phase('syncing');
      rttMs = await this.resync(conn, this.resyncReason ?? 'stale-data');
    }
    if (this.infoStale) await this.loadInfo(conn);
    return { conn, rttMs };
  }

  /** 0xFF + guest-sync-delimited on the current socket; a failure destroys the socket. */
  async resync(conn: AgentConnection, reason: ResyncReason, signal?: AbortSignal): Promise<number> {
    this.emit('resync', { reason });
    this.resyncReason = undefined;
    const t0 = this.opts.now();
    try {
      await conn.sync(this.newSyncId(), { timeoutMs: this.opts.syncTimeoutMs, signal });
    } catch (err) {
      // Abandoned by the caller: the socket is merely out of step again. Anything else: gone.
      if (!signal?.aborted) conn.destroy();
      throw err;
    }
    return this.opts.now() - t0;
  }

  /** Close the socket on purpose (idle release, eviction, close). */
  drop(): void {
    const conn = this.conn;
    this.conn = undefined;
    conn?.destroy();
  }

  newRequestId(): number {
    if (this.nextRequestId >= MAX_ID) this.nextRequestId = 1;
    return this.nextRequestId++;
  }

  /** A fresh random id in [1, 2^53 - 1]: a stale sync reply can never match it by accident. */
  newSyncId(): number {
    const n = Number(randomBytes(8).readBigUInt64BE(0) & BigInt(MAX_ID));
    return n === 0 ? 1 : n;
  }

  private attach(conn: AgentConnection): void {
    this.conn = conn;
    this.openedAt = this.opts.now();
    this.resyncReason = 'connect';
    this.infoStale = true;
    conn.on('stray', (msg: JsonObject) => {
      const id = msg.id;
      if (typeof id !== 'number' || !this.orphans.has(id)) return;
      const command = this.orphans.get(id) as string;
      this.orphans.delete(id);
      if ('return' in msg) this.emit('orphan', { command, value: msg.return });
    });
    conn.on('stale', (e: { bytes: number }) => {
      this.opts.logger?.debug({ vm: this.opts.vm, bytes: e.bytes }, 'discarded stale agent data');
      this.emit('stale', e);
    });
    conn.on('close', (err?: Error) => {
      if (this.conn !== conn) return;
      this.conn = undefined;
      this.opts.logger?.debug({ vm: this.opts.vm, err: err?.message }, 'agent connection closed');
      this.emit('lost', err);
    });
  }

  private async loadInfo(conn: AgentConnection): Promise<void> {
    try {
      const reply = await conn.request('guest-info', undefined, undefined, { timeoutMs: this.opts.syncTimeoutMs });
      if (reply.ok) {
        this.info = parseAgentInfo(reply.value);
        this.infoErr = undefined;
      } else {
        // Commands still work without it: matched in order, without ids.
        this.info = undefined;
        this.infoErr = agentErrorToGatewayError(reply.error, { vm: this.opts.vm, command: 'guest-info' });
      }
      this.infoStale = false;
    } catch (err) {
      conn.destroy();
      throw err;
    }
  }
}
