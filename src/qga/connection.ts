/**
 * One socket to one agent, and the rule for which bytes answer which request. No queue and no
 * retries here (that is the Channel's job): at most one request is pending at any time, and
 * everything that arrives while nothing is pending is stale.
 *
 * Three ways to wait for the agent:
 *  - sync(): write 0xFF + guest-sync-delimited{N}; skip to a 0xFF sentinel; the next line must be
 *    {"return": N}, otherwise skip to the next sentinel. Late replies of abandoned commands and the
 *    agent's parse-error line for our lone 0xFF are all swallowed by the skipping.
 *  - request(): write one command; the next reply line is its answer (ids, when the agent echoes
 *    them, let a foreign reply be recognised and dropped).
 *  - fence(): for commands that send no reply on success (guest-shutdown, guest-suspend-*): write
 *    the command and a guest-sync-delimited right behind it; an error line before the sentinel is
 *    the command's failure, the sync reply alone is its success, and the socket closing means the
 *    guest went down (also success).
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { QgaErrorBody } from '../errors.js';
import { ReplyDecoder, type DecoderEvent } from './decoder.js';
import type { Endpoint, JsonObject, JsonValue } from './types.js';
import { abortReason } from '../util/abort.js';
import { stringifyJson } from '../util/json.js';

export type AgentReply = { ok: true; value: JsonValue } | { ok: false; error: QgaErrorBody };

/** The socket closed (or errored) while a request was pending. */
export class ConnectionLostError extends Error {
  constructor(detail: string, cause?: unknown) {
    super(detail, cause === undefined ? undefined : { cause });
    this.name = 'ConnectionLostError';
  }
}

/** A reply line that cannot be an answer: not JSON, over the size cap, or neither return nor error. */
export class ProtocolViolationError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'ProtocolViolationError';
  }
}

/** The agent did not answer within the wait's own timeout. */
export class WaitTimeoutError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'WaitTimeoutError';
  }
}

export interface WaitOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

const SENTINEL = Buffer.from([0xff]);

interface Pending {
  kind: 'sync' | 'request' | 'fence';
  /** the id we sent with the command, when the agent echoes ids */
  id?: number;
  /** the guest-sync-delimited id this wait ends on (sync and fence) */
  syncId?: number;
  afterSentinel: boolean;
  /** fence: the command's own reply, if one came before the sentinel */
  early?: AgentReply;
  settle(result: { reply?: AgentReply; error?: Error }): void;
}

export class AgentConnection extends EventEmitter {
  private readonly socket: net.Socket;
  private readonly decoder: ReplyDecoder;
  private pending: Pending | undefined;
  private isClosed = false;
  /**
   * False only while request/reply pairing is known to be intact. Starts true: every connection
   * begins with a sync, because the agent's parser may hold half a request from an earlier client.
   */
  needsSync = true;

  private constructor(socket: net.Socket, maxReplyBytes: number) {
    super();
    this.socket = socket;
    this.decoder = new ReplyDecoder({ maxLineBytes: maxReplyBytes, onEvent: (e) => this.onDecoderEvent(e) });
    socket.on('data', (chunk: Buffer) => this.decoder.push(chunk));
    socket.on('error', (err) => this.lost(err));
    socket.on('close', () => this.lost(undefined));
  }

  /** Open the socket; rejects with ConnectionLostError on refusal or after timeoutMs. */
  static connect(endpoint: Endpoint, timeoutMs: number, maxReplyBytes: number): Promise<AgentConnection> {
    return new Promise((resolve, reject) => {
      const socket =
        endpoint.type === 'unix' ? net.connect({ path: endpoint.path }) : net.connect({ host: endpoint.host, port: endpoint.port });
      const fail = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new ConnectionLostError(`cannot connect to the agent: ${err.message}`, err));
      };
      const timer = setTimeout(() => fail(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
      socket.once('error', fail);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', fail);
        if (endpoint.type === 'tcp') socket.setNoDelay(true);
        resolve(new AgentConnection(socket, maxReplyBytes));
      });
    });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Resync on this socket; resolves when our sync id came back. */
  sync(syncId: number, opts: WaitOptions = {}): Promise<void> {
    this.decoder.discardUntilSentinel();
    const request = Buffer.concat([SENTINEL, Buffer.from(syncLine(syncId))]);
    return this.wait({ kind: 'sync', syncId, afterSentinel: false }, request, opts).then(() => {
      this.needsSync = false;
    });
  }

  /** Send one command and wait for its reply line. */
  request(command: string, args: JsonObject | undefined, id: number | undefined, opts: WaitOptions = {}): Promise<AgentReply> {
    return this.wait({ kind: 'request', id, afterSentinel: false }, commandLine(command, args, id), opts);
  }

  /** Send a command that has no success reply, fenced by a guest-sync-delimited. */
  fence(command: string, args: JsonObject | undefined, id: number | undefined, syncId: number, opts: WaitOptions = {}): Promise<AgentReply> {
    const data = commandLine(command, args, id) + syncLine(syncId);
    return this.wait({ kind: 'fence', id, syncId, afterSentinel: false }, data, opts);
  }

  /** Close the socket; a pending wait fails as a lost connection (or with err). */
  destroy(err?: Error): void {
    this.socket.destroy();
    this.lost(err);
  }

  private wait(p: Omit<Pending, 'settle'>, data: string | Buffer, opts: WaitOptions): Promise<AgentReply> {
    if (this.isClosed) return Promise.reject(new ConnectionLostError('the connection to the agent is closed'));
    if (this.pending) return Promise.reject(new Error('AgentConnection: a request is already pending'));
    const { signal, timeoutMs } = opts;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<AgentReply>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => abandon(abortReason(signal as AbortSignal));
      const pending: Pending = {
        ...p,
        settle: ({ reply, error }) => {
          if (this.pending !== pending) return;
          this.pending = undefined;
          if (timer) clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          if (error) reject(error);
          else resolve(reply ?? { ok: true, value: {} });
        },
      };
      // Whatever the agent still sends for an abandoned wait must not reach the next one.
      const abandon = (error: Error): void => {
        this.needsSync = true;
        pending.settle({ error });
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => abandon(new WaitTimeoutError(`no reply within ${timeoutMs} ms`)), timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending = pending;
      this.socket.write(data);
    });
  }

  private onDecoderEvent(e: DecoderEvent): void {
    const p = this.pending;
    if (!p) {
      if (e.type === 'message') this.emit('stray', e.value);
      if (e.type === 'discarded' || e.type === 'oversize' || e.type === 'message') this.stale(e.bytes);
      else if (e.type === 'invalid') this.stale(e.preview.length);
      // Bytes nobody asked for mean pairing can no longer be trusted.
      this.needsSync = true;
      return;
    }
    switch (e.type) {
      case 'discarded':
        this.stale(e.bytes);
        return;
      case 'sentinel':
        p.afterSentinel = true;
        return;
      case 'invalid':
      case 'oversize':
        if (p.kind === 'request') {
          this.needsSync = true;
          const what = e.type === 'invalid' ? `an invalid reply line (${e.reason}): ${JSON.stringify(e.preview)}` : `a reply line of more than ${e.bytes} bytes, over the size cap`;
          p.settle({ error: new ProtocolViolationError(`the agent sent ${what}`) });
        } else if (p.afterSentinel) {
          this.rescan(p, e.type === 'oversize' ? e.bytes : e.preview.length);
        } else {
          this.stale(e.type === 'oversize' ? e.bytes : e.preview.length);
        }
        return;
      case 'message':
        this.onMessage(p, e.value, e.bytes);
        return;
    }
  }

  private onMessage(p: Pending, msg: JsonObject, bytes: number): void {
    if (p.kind === 'sync' || (p.kind === 'fence' && p.afterSentinel)) {
      if (p.afterSentinel && msg.return === p.syncId) {
        p.settle({ reply: p.early ?? { ok: true, value: {} } });
        return;
      }
      this.rescan(p, bytes);
      return;
    }
    // request, or the fenced command's own reply before the sentinel
    if (p.id !== undefined && 'id' in msg && msg.id !== p.id) {
      this.emit('stray', msg);
      return this.stale(bytes);
    }
    if (p.id !== undefined && !('id' in msg) && !('error' in msg)) return this.stale(bytes);
    const reply = toReply(msg);
    if (p.kind === 'fence') {
      if (p.early === undefined && reply) p.early = reply;
      else this.stale(bytes);
      return;
    }
    if (!reply) {
      this.needsSync = true;
      p.settle({ error: new ProtocolViolationError(`the agent sent a reply with neither return nor error: ${preview(msg)}`) });
      return;
    }
    p.settle({ reply });
  }

  /** A line after a sentinel that is not ours: skip to the next sentinel. */
  private rescan(p: Pending, bytes: number): void {
    this.stale(bytes);
    p.afterSentinel = false;
    this.decoder.discardUntilSentinel();
  }

  private stale(bytes: number): void {
    if (bytes > 0) this.emit('stale', { bytes });
  }

  private lost(err: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.socket.destroy();
    const p = this.pending;
    if (p) {
      if (p.kind === 'fence') {
        // The guest went down right after accepting shutdown/suspend: that is their success.
        // An error line that made it out before the close is still the command's answer.
        p.settle({ reply: p.early ?? { ok: true, value: {} } });
      } else {
        const detail = err ? `the connection to the agent failed: ${err.message}` : 'the agent closed the connection';
        p.settle({ error: new ConnectionLostError(detail, err) });
      }
    }
    this.emit('close', err);
  }
}

function commandLine(command: string, args: JsonObject | undefined, id: number | undefined): string {
  const req: JsonObject = { execute: command };
  if (args !== undefined) req.arguments = args;
  if (id !== undefined) req.id = id;
  return `${stringifyJson(req)}\n`;
}

function syncLine(syncId: number): string {
  return `{"execute":"guest-sync-delimited","arguments":{"id":${syncId}}}\n`;
}

function toReply(msg: JsonObject): AgentReply | undefined {
  if ('return' in msg) return { ok: true, value: msg.return };
  const err = msg.error;
  if (err !== null && typeof err === 'object' && !Array.isArray(err)) {
    const cls = typeof err.class === 'string' ? err.class : 'GenericError';
    const desc = typeof err.desc === 'string' ? err.desc : '';
    return { ok: false, error: { class: cls, desc } };
  }
  return undefined;
}

function preview(msg: JsonObject): string {
  return stringifyJson(msg).slice(0, 120);
}
