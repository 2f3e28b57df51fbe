/**
 * One socket to one agent, and the rule for which bytes answer which request. No queue, no
 * retries and no timers here: the Session owns all of that and hears everything through its
 * WireListener. At most one exchange is pending at any time, and everything that arrives while
 * none is pending is stale.
 *
 * Three exchanges:
 *  - sync(): write 0xFF + guest-sync-delimited{N}; skip to a 0xFF sentinel; the next line must be
 *    {"return": N}, otherwise skip to the next sentinel. Late replies of abandoned commands and the
 *    agent's parse-error line for our lone 0xFF are all swallowed by the skipping.
 *  - request(): write one command; the next reply line is its answer (ids, when the agent echoes
 *    them, let a foreign reply be recognised and dropped).
 *  - fence(): for commands that send no reply on success (guest-shutdown, guest-suspend-*): write
 *    the command and a guest-sync-delimited right behind it; an error line before the sentinel is
 *    the command's failure, the sync reply alone is its success, and the socket closing means the
 *    guest went down (also success).
 * An exchange ends in one of: onWireAnswer, onWireViolation (request only), onWireClose, or the
 * owner's abandon() (the owner gave up; whatever still comes for it is stale).
 */
import { randomBytes, randomFillSync } from 'node:crypto';
import { auditContext } from '../util/audit.js';
import net from 'node:net';
import type { QgaErrorBody } from '../errors.js';
import { stringifyJson } from '../util/json.js';
import { commandData, commandLine, syncLine } from './command-line.js';
import { ReplyDecoder, type DecoderEvent } from './decoder.js';
import type { ReplyBudget } from './reply-budget.js';
import type { Endpoint, JsonObject, JsonValue } from './types.js';
import { ConnectionLostError, ProtocolViolationError, ReplyTooLargeError } from './wire-errors.js';

export { ConnectionLostError, ProtocolViolationError, ReplyTooLargeError };

export type AgentReply = { ok: true; value: JsonValue } | { ok: false; error: QgaErrorBody };

/** What a connection tells its one owner. Nothing is reported after the owner's destroy(). */
export interface WireListener {
  onWireOpen(conn: AgentConnection): void;
  /** the pending exchange is answered: the command's reply, or (sync) our id came back */
  onWireAnswer(conn: AgentConnection, reply: AgentReply): void;
  /** the pending request got a line that cannot be its answer; the socket stays open, out of step */
  onWireViolation(conn: AgentConnection, err: ProtocolViolationError): void;
  /** the socket is gone; a pending fence is answered by it (`fenceReply`), any other exchange is lost */
  onWireClose(conn: AgentConnection, err: ConnectionLostError, fenceReply?: AgentReply): void;
  onWireStale(bytes: number): void;
  /** a whole reply nobody was waiting for (by its id, it may answer an abandoned command) */
  onWireStray(msg: JsonObject): void;
}

type Exchange = 'sync' | 'request' | 'fence';

const SENTINEL = Buffer.from([0xff]);
const MAX_ID = Number.MAX_SAFE_INTEGER;
/** request ids, unique across all connections of the process (ids must stay <= 2^53 - 1) */
let nextRequestId = 1 + randomBytes(4).readUInt32BE(0);

export class AgentConnection {
  private readonly socket: net.Socket;
  private readonly decoder: ReplyDecoder;
  private connected = false;
  private isClosed = false;
  /** the exchange in progress, and its state */
  private pending: Exchange | undefined;
  /** the id we sent with the command, when the agent echoes ids */
  private reqId: number | undefined;
  /** the guest-sync-delimited id the exchange ends on (sync and fence) */
  private syncId = 0;
  private afterSentinel = false;
  /** a socket chunk is being decoded right now */
  private receiving = false;
  /** begun while a chunk was decoded: the rest of that chunk came before the request, so it is stale */
  private begunMidChunk = false;
  /** fence: the command's own reply, if one came before the sentinel */
  private early: AgentReply | undefined;
  /** sync(follow): a command was written right behind the sync; its reply is the next line after ours */
  private follows = false;
  /**
   * False only while request/reply pairing is known to be intact. Starts true: every connection
   * begins with a sync, because the agent's parser may hold half a request from an earlier client.
   */
  needsSync = true;

  /**
   * Start connecting; the owner hears onWireOpen, or onWireClose if it fails. A reply line is held
   * only while it fits both maxReplyBytes and the shared `budget` (agent.maxBufferedBytes).
   */
  constructor(endpoint: Endpoint, maxReplyBytes: number, private readonly owner: WireListener, budget?: ReplyBudget) {
    this.decoder = new ReplyDecoder({ maxLineBytes: maxReplyBytes, budget, onEvent: (e) => this.onDecoderEvent(e) });
    // Opened outside the audit context of the request that happened to need it: work started from
    // this socket's events (an orphaned handle closed) is the gateway's, not that caller's.
    const socket = auditContext.exit(() =>
      endpoint.type === 'unix' ? net.connect({ path: endpoint.path }) : net.connect({ host: endpoint.host, port: endpoint.port }),
    );
    this.socket = socket;
    socket.once('connect', () => {
      this.connected = true;
      if (endpoint.type === 'tcp') socket.setNoDelay(true);
      if (!this.isClosed) owner.onWireOpen(this);
    });
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (err) => this.lost(err));
    socket.on('close', () => this.lost(undefined));
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Resync on this socket with a fresh random id; answered when that id came back.
   * `follow`: a command without arguments written in the same write right behind the sync, without
   * an id (for info-free, idempotent commands only: guest-ping). The agent answers strictly in
   * order, so its reply is the first line after our sync reply: once the sync is answered, the
   * exchange in progress is that request's, as if request() had been called then. An owner that
   * no longer wants it calls abandon() (its reply is then stale).
   */
  sync(follow?: string): void {
    const syncId = newSyncId();
    const text = follow === undefined ? syncLine(syncId) : syncLine(syncId) + commandLine(follow, undefined, undefined);
    this.begin('sync', undefined, syncId);
    this.follows = follow !== undefined;
    this.decoder.discardUntilSentinel();
    this.socket.write(Buffer.concat([SENTINEL, Buffer.from(text)]));
  }

  /**
   * Send one command; answered by its reply line. With `withId` (only for agents that echo ids)
   * it carries a fresh id, which is returned. Throws if `args` cannot be serialized.
   */
  request(command: string, args: JsonObject | undefined, withId: boolean): number | undefined {
    return this.send('request', command, args, withId);
  }

  /** Send a command that has no success reply, fenced by a guest-sync-delimited. */
  fence(command: string, args: JsonObject | undefined, withId: boolean): number | undefined {
    return this.send('fence', command, args, withId);
  }

  /** The owner stopped waiting: whatever the agent still sends for it must not reach the next exchange. */
  abandon(): void {
    this.pending = undefined;
    this.follows = false;
    this.needsSync = true;
  }

  /** Close the socket on purpose; the owner hears nothing more from this connection. */
  destroy(): void {
    this.isClosed = true;
    this.pending = undefined;
    this.follows = false;
    this.socket.destroy();
    this.decoder.reset(); // its partial line's bytes go back to the budget
  }

  private receive(chunk: Buffer): void {
    this.receiving = true;
    try {
      this.decoder.push(chunk);
    } finally {
      this.receiving = false;
      this.begunMidChunk = false;
    }
  }

  private send(kind: 'request' | 'fence', command: string, args: JsonObject | undefined, withId: boolean): number | undefined {
    const id = withId ? newRequestId() : undefined;
    const syncId = kind === 'fence' ? newSyncId() : 0;
    // a Buffer when an argument is a Base64Text (its bytes copied once), else the line's text
    const data = commandData(command, args, id, kind === 'fence' ? syncLine(syncId) : '');
    this.begin(kind, id, syncId);
    this.socket.write(data);
    return id;
  }

  private begin(kind: Exchange, reqId: number | undefined, syncId: number): void {
    if (this.isClosed) throw new ConnectionLostError('the connection to the agent is closed');
    if (this.pending !== undefined) throw new Error('AgentConnection: an exchange is already pending');
    this.pending = kind;
    this.begunMidChunk = this.receiving;
    this.reqId = reqId;
    this.syncId = syncId;
    this.afterSentinel = false;
    this.early = undefined;
    this.follows = false;
  }

  private answer(reply: AgentReply): void {
    if (this.pending === 'sync') this.needsSync = false;
    // the command written behind the sync: its reply is the next line (the rest of this chunk is not stale)
    if (this.follows) {
      this.follows = false;
      this.pending = 'request';
      this.reqId = undefined;
      this.afterSentinel = false;
    } else {
      this.pending = undefined;
    }
    this.owner.onWireAnswer(this, reply);
  }

  private violation(err: ProtocolViolationError): void {
    this.pending = undefined;
    this.needsSync = true;
    this.owner.onWireViolation(this, err);
  }

  private onDecoderEvent(e: DecoderEvent): void {
    if (this.isClosed) return;
    const p = this.begunMidChunk ? undefined : this.pending;
    if (p === undefined) {
      if (e.type === 'message') this.owner.onWireStray(e.value);
      if (e.type === 'discarded' || e.type === 'oversize' || e.type === 'message') this.stale(e.bytes);
      else if (e.type === 'invalid') this.stale(e.preview.length);
      // Bytes nobody asked for mean pairing can no longer be trusted.
      this.needsSync = true;
      return;
    }
    switch (e.type) {
      case 'discarded':
        return this.stale(e.bytes);
      case 'sentinel':
        this.afterSentinel = true;
        return;
      case 'invalid':
      case 'oversize':
        if (p === 'request' && e.type === 'oversize') {
          const limit = e.limit === 'cap' ? 'the reply cap (agent.maxReplyBytes)' : 'the buffer budget of all channels (agent.maxBufferedBytes)';
          this.violation(new ReplyTooLargeError(`the agent's reply reached ${e.bytes} bytes, over ${limit}; it was dropped and the channel resynced`));
        } else if (p === 'request' && e.type === 'invalid') {
          this.violation(new ProtocolViolationError(`the agent sent an invalid reply line (${e.reason}): ${JSON.stringify(e.preview)}`));
        } else if (this.afterSentinel) {
          this.rescan(e.type === 'oversize' ? e.bytes : e.preview.length);
        } else {
          this.stale(e.type === 'oversize' ? e.bytes : e.preview.length);
        }
        return;
      case 'message':
        return this.onMessage(p, e.value, e.bytes);
    }
  }

  private onMessage(p: Exchange, msg: JsonObject, bytes: number): void {
    if (p === 'sync' || (p === 'fence' && this.afterSentinel)) {
      if (this.afterSentinel && msg.return === this.syncId) return this.answer(this.early ?? { ok: true, value: {} });
      return this.rescan(bytes);
    }
    // request, or the fenced command's own reply before the sentinel
    const id = this.reqId;
    if (id !== undefined && 'id' in msg && msg.id !== id) {
      this.owner.onWireStray(msg);
      return this.stale(bytes);
    }
    if (id !== undefined && !('id' in msg) && !('error' in msg)) return this.stale(bytes);
    const reply = toReply(msg);
    if (p === 'fence') {
      if (this.early === undefined && reply) this.early = reply;
      else this.stale(bytes);
      return;
    }
    if (!reply) return this.violation(new ProtocolViolationError(`the agent sent a reply with neither return nor error: ${stringifyJson(msg).slice(0, 120)}`));
    this.answer(reply);
  }

  /** A line after a sentinel that is not ours: skip to the next sentinel. */
  private rescan(bytes: number): void {
    this.stale(bytes);
    this.afterSentinel = false;
    this.decoder.discardUntilSentinel();
  }

  private stale(bytes: number): void {
    if (bytes > 0) this.owner.onWireStale(bytes);
  }

  private lost(err: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.socket.destroy();
    this.decoder.reset();
    let detail = err ? `the connection to the agent failed: ${err.message}` : 'the agent closed the connection';
    if (!this.connected) detail = `cannot connect to the agent: ${err ? err.message : 'the socket closed'}`;
    // The guest went down right after accepting shutdown/suspend: that is their success. An
    // error line that made it out before the close is still the command's answer.
    const fenceReply = this.pending === 'fence' ? (this.early ?? { ok: true, value: {} }) : undefined;
    this.pending = undefined;
    this.follows = false;
    this.owner.onWireClose(this, new ConnectionLostError(detail, err), fenceReply);
  }
}

function newRequestId(): number {
  if (nextRequestId >= MAX_ID) nextRequestId = 1;
  return nextRequestId++;
}

/** random bytes for sync ids, taken 8 at a time (one randomBytes call per 512 ids instead of one per id) */
const idBytes = Buffer.alloc(4096);
let idAt = idBytes.length;

/** A fresh random id in [1, 2^53 - 1]: a stale sync reply can never match it by accident. */
function newSyncId(): number {
  if (idAt === idBytes.length) {
    randomFillSync(idBytes);
    idAt = 0;
  }
  // 21 + 32 random bits
  const n = (idBytes.readUInt32BE(idAt) & 0x1f_ffff) * 2 ** 32 + idBytes.readUInt32BE(idAt + 4);
  idAt += 8;
  return n === 0 ? 1 : n;
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
