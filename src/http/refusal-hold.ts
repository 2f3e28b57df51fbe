/**
 * Paced refusals (issue 14 item 2). A request refused for overload — 429 QUEUE_FULL (the VM's
 * queue, the pool's open sockets, the VM's file handles) or 429 RATE_LIMITED (the per-principal
 * limits) — is answered `limits.refusalHoldMs` after the refusal, not at once. Retry-After and
 * the problem body are those of an immediate answer. An HTTP/1.1 client waits for its answer
 * before it sends again, so a client that ignores Retry-After and retries at once comes back at
 * most once per hold instead of as fast as the event loop can refuse it: 200 such clients cost a
 * few thousand refusals a second instead of ~20,000, and the channels' replies keep their turns.
 * A client that got a slot is served as before: nothing here touches admitted requests.
 * Cluster mode: a node answers the 429s of requests another node forwarded to it at once (its
 * connections from that node carry other requests too); the entry node holds the relayed 429
 * (holdRelayed), so a storm is paced where its clients are connected, whichever node refused.
 *
 * Cost: no timer per request. Every refusal is held for the same time, so arrival order is due
 * order: the held answers wait in one FIFO (three parallel arrays) and ONE timer, armed for the
 * oldest, sends every answer that is due (within TICK_MS) when it fires. Bounds:
 * - at most one held answer per connection (a second, pipelined request on a connection that has
 *   one held is answered at once; Node writes the answers of a connection in order anyway);
 * - at most MAX_HELD held answers over the process; beyond, refusals are answered at once (as
 *   with refusalHoldMs 0: never worse than not holding);
 * - a client that goes away while held costs nothing more: its entry is dropped unsent when due
 *   (the response's 'close' has already released its admission slot);
 * - shutdown (release()) sends every held answer at once, with `Connection: close`, and holds no
 *   more.
 */
import type { FastifyReply } from 'fastify';
import type { GatewayError } from '../errors.js';

/** the most answers held at once over the process (server.maxConnections is 10,000 by default) */
export const MAX_HELD = 10_000;
/** answers due within this many ms of a tick go out with it (so one timer serves a batch) */
export const TICK_MS = 5;

/** Read-only view of the held refusals (tests, diagnostics): `app.refusals`. */
export interface RefusalHolds {
  readonly holdMs: number;
  /** answers held now */
  readonly size: number;
  /** answers held since start */
  readonly heldTotal: number;
  /**
   * Holds an overload refusal another node answered (cluster mode: a forwarded request's 429, its
   * status and headers already set on `reply`): `body` is sent on it when due. False: send it now.
   */
  holdRelayed(reply: FastifyReply, body: Buffer): boolean;
}

declare module 'fastify' {
  interface FastifyInstance {
    refusals: RefusalHolds;
  }
}

const HELD = Symbol('qga.refusalHeld');
type Marked = object & { [HELD]?: boolean };

export type SendRefusal = (reply: FastifyReply, err: GatewayError) => void;

export class RefusalHold implements RefusalHolds {
  private replies: Array<FastifyReply | undefined> = [];
  /** the refusal, or the body of a relayed one (holdRelayed) */
  private problems: Array<GatewayError | Buffer | undefined> = [];
  private due: number[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** answers held since start (tests, diagnostics) */
  heldTotal = 0;

  constructor(
    readonly holdMs: number,
    private readonly send: SendRefusal,
    readonly max = MAX_HELD,
  ) {}

  /** answers held now */
  get size(): number {
    return this.replies.length - this.head;
  }

  /**
   * Takes the refusal `err` to answer on `reply` later; false when it must be answered now (holding
   * off, shutting down, the cap reached, or this connection already has one held).
   */
  hold(reply: FastifyReply, err: GatewayError): boolean {
    return this.take(reply, err);
  }

  holdRelayed(reply: FastifyReply, body: Buffer): boolean {
    return this.take(reply, body);
  }

  private take(reply: FastifyReply, what: GatewayError | Buffer): boolean {
    if (this.holdMs <= 0 || this.closed || this.size >= this.max) return false;
    const conn = connectionOf(reply);
    if (conn !== undefined) {
      if (conn[HELD] === true) return false;
      conn[HELD] = true;
    }
    this.replies.push(reply);
    this.problems.push(what);
    this.due.push(performance.now() + this.holdMs);
    this.heldTotal++;
    this.timer ??= setTimeout(this.flush, this.holdMs).unref();
    return true;
  }

  /** Sends every held answer now, with `Connection: close`; holds no more (shutdown). */
  release(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.head < this.replies.length) this.answer(this.head++, true);
    this.reset();
  }

  private readonly flush = (): void => {
    this.timer = undefined;
    const until = performance.now() + TICK_MS;
    while (this.head < this.replies.length && this.due[this.head] <= until) this.answer(this.head++, false);
    if (this.head === this.replies.length) {
      this.reset();
      return;
    }
    // drop the sent prefix now and then, so the arrays do not grow while a storm lasts
    if (this.head >= 1024 && this.head * 2 >= this.replies.length) {
      this.replies.splice(0, this.head);
      this.problems.splice(0, this.head);
      this.due.splice(0, this.head);
      this.head = 0;
    }
    this.timer = setTimeout(this.flush, Math.max(TICK_MS, this.due[this.head] - performance.now())).unref();
  };

  private answer(i: number, closing: boolean): void {
    const reply = this.replies[i];
    const what = this.problems[i];
    this.replies[i] = undefined;
    this.problems[i] = undefined;
    if (reply === undefined || what === undefined) return;
    const conn = connectionOf(reply);
    if (conn !== undefined) conn[HELD] = false;
    // the client went away while held: nobody reads the answer
    if (reply.raw.destroyed || reply.request.raw.socket?.destroyed === true) return;
    if (closing) reply.header('connection', 'close');
    if (Buffer.isBuffer(what)) reply.send(what);
    else this.send(reply, what);
  }

  private reset(): void {
    this.replies.length = 0;
    this.problems.length = 0;
    this.due.length = 0;
    this.head = 0;
  }
}

/** the request's connection (an injected request has a stand-in socket; none: no per-connection bound) */
function connectionOf(reply: FastifyReply): Marked | undefined {
  return (reply.request.raw.socket as Marked | null) ?? undefined;
}
