/**
 * Session: the ONE state machine of a channel's agent socket (its state and plumbing: session-core.ts).
 * It drains the channel's line one job at a time and alone decides when something took too long:
 * one Alarm rings for the earliest of every job's deadline (fixed when the job was accepted) and
 * the deadline of the current step (connectTimeoutMs; syncTimeoutMs for a whole resync and for
 * guest-info; the backoff delay; idleReleaseMs).
 *
 *               jobs wait,                                our id back              answer (a
 *               admitted (1)            open              (2)                      return or error)
 *   idle ──────────────────────► connecting ─────► syncing ────────────► info ─────────────────┐
 *    ▲                              ▲    │            │ ▲                  │                     ▼
 *    │                              │    │ error,     │ │ socket out of    │ lost, garbage,    ready ◄──┐
 *    │                              │    │ timeout    │ │ step (3)         │ timeout             │ │      │
 *    │                              │    ▼            │ └──────────────────┼─────────────────────┘ │      │ settled
 *    │                 full-jitter  │  handshake  ◄───┘ lost, timeout      │                head job │      │
 *    │                 delay        │  failed (4) ◄──────────────────────────┘                       ▼      │
 *    │ line empties    ┌────────────┘    │   │                                               inflight ───┘
 *    ├◄─────────── backoff ◄─ jobs wait ─┘   │ line empty                                        │
 *    ├◄──────────────────────────────────────┘                                                   │
 *    ├◄── ready, line empty: idleReleaseMs, release(), socket lost                               │
 *    └◄── socket gone, line empty (jobs wait: connecting) ◄──────────────────────────────────────┘
 *
 * (1) the pool's maxOpen, asked before every socket (after a backoff too); refused: the jobs fail
 *     (never refused while a priority job, freeze or thaw, waits: the pool exceeds maxOpen for it)
 * (2) on to info only when guest-info was not read on this socket (or invalidateInfo) and the job
 *     at the line's head needs it (every job but an info-free command, guest-ping: needsInfo in
 *     session-core.ts), or the channel's copy from an earlier socket is missing, invalidated or
 *     agent.infoMaxAgeMs old (infoFirst); else to ready. A ping run before the re-read goes without
 *     an id (pairing is in order after the fresh sync) and with the catalog's success-response: the
 *     copy of an earlier socket is kept for the fleet view and that decision only
 * (3) ready with jobs waiting: socket out of step → syncing on the SAME socket (0xFF + guest-sync-
 *     delimited, fresh random id; reason timeout, aborted, protocol-error or stale-data); guest-info
 *     stale and the head job needs it → info; else the head job → inflight
 * (4) the socket is destroyed; nobody listening (ENOENT, ECONNREFUSED…) fails the waiting jobs now
 * inflight, settled by: a reply or agent error; a sync job: the handshake's round trip, else its own
 *   sync · garbage or oversize → AGENT_PROTOCOL_ERROR, out of step · deadline or caller abort → at
 *   once, out of step (a late guest-file-open reply → 'orphan') · socket lost → an idempotent job
 *   goes back to the line head once (within its deadline), any other AGENT_UNAVAILABLE · a sync
 *   job's own sync unanswered in syncTimeoutMs, or arguments that do not serialize → socket
 *   destroyed, AGENT_UNAVAILABLE
 * close(): shows 'closing' (new work refused); at rest → closed, else when the line has drained.
 * destroy(): every waiting and running job fails now → closed.
 * Shown outside (ChannelState) is the phase, except: inflight shows 'ready', info keeps what was
 * shown before it, and a closing session shows 'closing' until it is closed.
 */
import { abortReason } from '../util/abort.js';
import { agentErrorToGatewayError } from './agent-errors.js';
import { auditSent } from './audit-trail.js';
import { parseAgentInfo } from './agent-info.js';
import { AgentConnection, ConnectionLostError, type AgentReply, type ProtocolViolationError, type WireListener } from './connection.js';
import type { CommandOutcome, ResyncReason } from './events.js';
import { ended, nobodyListens } from './outcomes.js';
import type { AbortHandler, Job } from './queue.js';
import { SessionCore } from './session-core.js';

export class Session extends SessionCore implements WireListener, AbortHandler {
  /** A job joined the line: its deadline is watched from now on. */
  accept(job: Job): void {
    this.lastUsed = job.acceptedAt;
    this.alarm.set(job.deadline, true);
    if (this.q.settling === 0) this.guard(this.advance);
  }

  onWireOpen(conn: AgentConnection): void {
    if (conn !== this.conn) return;
    this.connectedAt = this.now();
    this.infoStale = true;
    this.guard(this.startSync, 'connect');
  }

  onWireAnswer(conn: AgentConnection, reply: AgentReply): void {
    if (conn === this.conn) this.guard(this.answered, reply);
  }

  onWireViolation(conn: AgentConnection, err: ProtocolViolationError): void {
    if (conn !== this.conn) return;
    if (this.phase === 'info') return this.guard(this.handshakeFailed, err);
    this.resyncReason = 'protocol-error';
    this.guard(this.done, 'protocol-error', ended.garbage(this.vm, this.inFlight as Job, err));
  }

  onWireClose(conn: AgentConnection, err: ConnectionLostError, fenceReply?: AgentReply): void {
    if (conn !== this.conn) return;
    // a connection that was made (not a connect that failed) and closed by the agent's end
    if (this.connectedAt !== undefined) this.lostAt = this.now();
    this.dropConn();
    this.logger?.debug({ vm: this.vm, err: err.message }, 'agent connection closed');
    if (fenceReply) this.guard(this.answered, fenceReply);
    else if (this.phase === 'inflight') this.guard(this.lost, err);
    else if (this.phase === 'ready') this.guard(this.rest);
    // a gate was being asked: its job waits for the next socket, gated again there
    else if (this.phase === 'gating') this.guard(this.gateLost);
    else this.guard(this.handshakeFailed, err);
  }

  onCallerAbort(job: Job): void {
    if (job.settled) return;
    if (job.running) return this.guard(this.abandon, 'aborted', abortReason(job.signal as AbortSignal));
    this.q.finish(job, 'aborted', abortReason(job.signal as AbortSignal));
    this.guard(this.lineShrank);
  }

  /** At rest (idle, or ready with nothing on the wire): start what the line needs next. */
  private advance(): void {
    if (this.phase !== 'idle' && this.phase !== 'ready') return;
    const refused = this.q.length > 0 && !this.conn ? this.admission?.(this.q.urgent > 0) : undefined;
    if (refused) this.q.failWaiting('unavailable', (job) => ended.refused(this.vm, job, refused));
    const conn = this.conn;
    if (this.q.length === 0) return this.rest();
    if (!conn) return this.connect();
    if (conn.needsSync) return this.startSync(this.resyncReason ?? 'stale-data');
    const head = this.q.head as Job;
    if (this.infoFirst(head)) return this.startInfo(conn);
    if (head.gate !== undefined && !head.gated) return this.startGate(head);
    this.run(conn, this.q.shift() as Job);
  }

  /**
   * The head job's gate (ExecuteOptions.gate), asked now that the socket is held and nothing is on
   * it: whatever another process or lease did while the job waited has happened, and nothing else
   * reaches the agent until this job is sent. The job stays at the line's head meanwhile (an abort
   * or its deadline still takes it out); the step is bounded by syncTimeoutMs (then it is sent).
   */
  private startGate(job: Job): void {
    this.go('gating', this.s.syncTimeoutMs);
    this.gating = job;
    // this asking only: an answer to an earlier one (a socket lost meanwhile) is not taken
    const ask = ++this.gateAsks;
    const gate = job.gate as () => Promise<true | Error>;
    let asked: Promise<true | Error>;
    try {
      asked = gate();
    } catch {
      asked = Promise.resolve(true);
    }
    asked.then(
      (answer) => this.guard(this.gateAnswered, ask, answer),
      () => this.guard(this.gateAnswered, ask, true),
    );
  }

  private gateAnswered(ask: number, answer: true | Error): void {
    // the socket went meanwhile, or the step ran out (the job was let go), or another asking runs
    const job = this.gating;
    if (this.phase !== 'gating' || job === undefined || ask !== this.gateAsks) return;
    this.gating = undefined;
    this.toRest();
    if (!job.settled && this.q.head === job) {
      if (answer === true) job.gated = true;
      else this.q.finish(job, 'fenced', answer);
    }
    this.advance();
  }

  /** Nothing waits: finish a close, or keep the socket until idleReleaseMs, or show idle. */
  private rest(): void {
    this.freshRttMs = undefined;
    this.alarm.idle();
    if (this.state === 'closing') return this.finishClose();
    if (!this.conn) return this.go('idle');
    this.go('ready', this.s.idleReleaseMs > 0 ? this.s.idleReleaseMs : Infinity);
  }

  private connect(): void {
    this.go('connecting', this.s.connectTimeoutMs);
    try {
      this.conn = new AgentConnection(this.endpoint, this.s.maxReplyBytes, this, this.s.replyBudget);
    } catch (err) {
      this.handshakeFailed(err);
    }
  }

  private startSync(reason: ResyncReason): void {
    this.go('syncing', this.s.syncTimeoutMs);
    const head = this.q.head;
    this.resync(reason, head !== undefined && this.mayFollowSync(head) ? head : undefined);
  }

  /**
   * 0xFF + guest-sync-delimited with a fresh random id: for the handshake, or a forced sync job.
   * `follow`: the head job, a ping that needs no guest-info, written in the same write behind the
   * sync (its reply is the line after ours): run when the sync is answered, if still at the head.
   */
  private resync(reason: ResyncReason, follow?: Job): void {
    this.events.emit('resync', { vm: this.vm, reason });
    this.resyncReason = undefined;
    this.syncStartedAt = this.now();
    this.piped = follow;
    (this.conn as AgentConnection).sync(follow?.command);
  }

  private startInfo(conn: AgentConnection): void {
    this.go('info', this.s.syncTimeoutMs);
    conn.request('guest-info', undefined, false);
  }

  private handshakeFailed(err: unknown): void {
    this.dropConn();
    this.failures++;
    this.lastFailure = err instanceof Error ? err : new Error(String(err));
    this.logger?.debug({ vm: this.vm, err: this.lastFailure.message, failures: this.failures }, 'agent connect/sync failed');
    if (this.failures === 1) this.failingSince = this.now();
    // Nothing behind the path or port: retrying until each deadline would give the same answer.
    const errno = this.q.length > 0 ? nobodyListens(err) : undefined;
    if (errno) this.q.failWaiting('unavailable', (job) => ended.nobodyListens(this.vm, job, errno));
    // A socket that takes connections but never completes a handshake (a hung agent, or another
    // client holding the channel): jobs with long deadlines (a freeze or thaw: 300 s) do not wait
    // them out; after handshakeGiveUpMs of failed attempts they fail, never sent (the freeze
    // service retries a thaw with its own backoff; a freeze answers 503 instead of hanging)
    else if (this.q.length > 0 && this.now() - this.failingSince >= this.handshakeGiveUpMs()) {
      const ms = this.now() - this.failingSince;
      this.q.failWaiting('unavailable', (job) => ended.handshakesFailed(this.vm, job, this.failures, ms, this.lastFailure));
    }
    this.toRest();
    if (this.q.length === 0) return this.rest();
    const { initialMs, maxMs } = this.s.backoff;
    this.go('backoff', Math.random() * Math.min(maxMs, initialMs * 2 ** Math.min(this.failures - 1, 30)));
  }

  /** The head job goes on the wire (`sent`: it already is, written behind the sync just answered). */
  private run(conn: AgentConnection, job: Job, sent = false): void {
    const rttMs = this.freshRttMs;
    this.freshRttMs = undefined;
    // in flight before the phase is shown: a 'state' listener reading stats() counts the job there
    job.running = true;
    this.inFlight = job;
    this.go('inflight');
    this.lastUsed = this.now();
    if (sent) return auditSent(this.events, this.vm, job, this.lastUsed);
    if (job.kind === 'info') return this.agentInfo ? this.done('ok', this.agentInfo) : this.done('agent-error', this.infoError ?? ended.infoFailed(this.vm, job));
    if (job.kind === 'sync') {
      if (rttMs !== undefined) return this.done('ok', { rttMs });
      this.alarm.set((this.stepDeadline = this.lastUsed + this.s.syncTimeoutMs), true);
      return this.resync('requested');
    }
    // only a copy read on this socket (a job that needs none may run before it is read: needsInfo)
    const info = this.infoStale ? undefined : this.agentInfo;
    // guest-info's own word on success-response beats the catalog's; ids only where they are echoed
    const successResponse = info?.commands.get(job.command)?.successResponse ?? job.spec.successResponse;
    try {
      const withId = info?.echoesId === true;
      this.inFlightId = successResponse ? conn.request(job.command, job.args, withId) : conn.fence(job.command, job.args, withId);
      auditSent(this.events, this.vm, job, this.lastUsed);
    } catch (err) {
      // not even written (arguments that do not serialize): this socket is not trusted any more
      this.dropConn();
      this.done('unavailable', ended.failed(this.vm, job, err));
    }
  }

  private answered(reply: AgentReply): void {
    if (this.phase === 'inflight') {
      const job = this.inFlight as Job;
      if (job.kind === 'sync') return this.done('ok', { rttMs: this.now() - this.syncStartedAt });
      if (reply.ok) return this.done('ok', reply.value);
      return this.done('agent-error', agentErrorToGatewayError(reply.error, { vm: this.vm, command: job.command }));
    }
    if (this.phase === 'syncing') {
      this.freshRttMs = this.now() - this.syncStartedAt;
      const piped = this.piped;
      this.piped = undefined;
      const head = this.q.head;
      if (piped === undefined) {
        if (head !== undefined && this.infoFirst(head)) return this.startInfo(this.conn as AgentConnection);
      } else if (piped === head) {
        this.handshakeThrough();
        return this.run(this.conn as AgentConnection, this.q.shift() as Job, true);
      } else {
        // taken out of the line meanwhile (aborted, expired), or a priority job went ahead: the
        // reply on its way is stale, so the socket is out of step (the next job resyncs first)
        (this.conn as AgentConnection).abandon();
        this.resyncReason = 'aborted';
      }
    } else {
      // without guest-info, commands still work: matched in order, without ids
      this.agentInfo = reply.ok ? parseAgentInfo(reply.value) : undefined;
      this.infoError = reply.ok ? undefined : agentErrorToGatewayError(reply.error, { vm: this.vm, command: 'guest-info' });
      this.infoStale = false;
      this.infoReadAt = this.now();
    }
    this.handshakeThrough();
    this.advance();
  }

  /** how long connect/sync attempts may keep failing before the jobs waiting for them fail: three full handshakes */
  private handshakeGiveUpMs(): number {
    return this.s.connectTimeoutMs + 3 * this.s.syncTimeoutMs;
  }

  private handshakeThrough(): void {
    this.failures = 0;
    this.lastFailure = undefined;
    this.toRest();
  }

  private gateLost(): void {
    this.gating = undefined;
    this.toRest();
    this.advance();
  }

  /** The socket closed under the job on the wire. */
  private lost(err: ConnectionLostError): void {
    const job = this.inFlight as Job;
    const resendable = job.kind !== 'command' || job.spec.idempotent;
    if (!resendable || job.retried) return this.done('unavailable', ended.lost(this.vm, job, resendable, err));
    if (this.now() >= job.deadline) return this.done('unavailable', ended.lost(this.vm, job, true));
    this.offWire(job);
    job.retried = true;
    job.gated = false;
    this.q.requeue(job);
    this.logger?.debug({ vm: this.vm, command: job.command }, 'connection lost; resending idempotent command');
    this.advance();
  }

  /** Deadline or caller abort on the wire: the caller is answered now; the socket stays, out of step. */
  private abandon(outcome: CommandOutcome, error: Error): void {
    const job = this.inFlight as Job;
    this.resyncReason = outcome === 'timeout' ? 'timeout' : 'aborted';
    this.conn?.abandon();
    if (this.inFlightId !== undefined) this.mayOrphan(this.inFlightId, job.command, job.args);
    this.done(outcome, error);
  }

  /** The job on the wire is finished: settle it and go on with the line. */
  private done(outcome: CommandOutcome, result: unknown): void {
    const job = this.inFlight as Job;
    this.offWire(job);
    this.q.finish(job, outcome, result);
    this.advance();
  }

  private offWire(job: Job): void {
    job.running = false;
    this.inFlight = this.inFlightId = undefined;
    this.lastUsed = this.now();
    this.toRest();
  }

  /** Backoff lasts only while jobs wait. */
  private lineShrank(): void {
    if (this.phase !== 'backoff' || this.q.length > 0) return;
    this.toRest();
    this.advance();
  }

  protected tick(): void {
    const now = this.now();
    const { vm } = this;
    // Waiting jobs first: one that expires together with the job on the wire waited behind it.
    if (this.q.earliestDeadline() <= now) {
      if (this.phase === 'inflight' || this.phase === 'gating') this.q.failWaiting('timeout', (job) => ended.neverSent(vm, job), now);
      else this.q.failWaiting('unavailable', (job) => ended.notConnected(vm, job, this.lastFailure, this.phase), now);
      this.lineShrank();
    }
    const running = this.inFlight;
    if (running && running.deadline <= now) this.abandon('timeout', ended.noReply(vm, running));
    else if (this.stepDeadline <= now) this.stepExpired();
    if (this.phase === 'closed') return;
    this.alarm.set(Math.min(this.inFlight?.deadline ?? Infinity, this.q.earliestDeadline()), true);
    this.alarm.set(this.stepDeadline, this.phase !== 'ready');
  }

  private stepExpired(): void {
    const noReply = new Error(`no reply within ${this.s.syncTimeoutMs} ms`);
    switch (this.phase) {
      case 'connecting': {
        const err = new Error(`no connection within ${this.s.connectTimeoutMs} ms`);
        return this.handshakeFailed(new ConnectionLostError(`cannot connect to the agent: ${err.message}`, err));
      }
      case 'syncing':
      case 'info':
        return this.handshakeFailed(noReply);
      case 'inflight': // a forced sync that did not come back: the socket cannot be trusted any more
        this.dropConn();
        return this.done('unavailable', ended.failed(this.vm, this.inFlight as Job, noReply));
      case 'backoff':
        this.toRest();
        return this.advance();
      case 'gating': {
        // the gate did not answer in time: the job goes as if it had said yes
        const job = this.gating;
        this.gating = undefined;
        if (job !== undefined) job.gated = true;
        this.toRest();
        return this.advance();
      }
      case 'ready':
        if (this.release()) this.logger?.debug({ vm: this.vm }, 'released idle agent connection');
    }
  }
}
