/**
 * One simulated VM running qemu-ga: the single long-lived JSON parser, the strictly sequential
 * command loop, the agent-owned output stream (stale replies go to the next client), faults, and
 * the guest state. Nothing here touches the host beyond its own listening socket.
 */
import { join } from 'node:path';
import type { Endpoint, JsonObject } from '../src/qga/types.js';
import { newProcessState, type AgentRuntime, type ProcessState } from './commands/index.js';
import { Dispatcher, errorBody } from './dispatch.js';
import { FaultSet, type FaultSpec, type MatchedFaults } from './faults.js';
import { ChannelListener } from './listener.js';
import { Outbox } from './outbox.js';
import type { QObj } from './qobject.js';
import { defaultGuestState, type GuestState } from './state.js';
import { JsonStreamer, type StreamEvent } from './streamer.js';
import { traitsFor, type VersionTraits } from './version.js';
import { buildReply, type ReplyPlan } from './replies.js';
import { CommandLog, type SimStats, type SimVmOptions } from './types.js';

export type { CommandLogEntry, SimStats, SimVmOptions } from './types.js';

const INPUT_PAUSE_AT = 10_000;
const INPUT_RESUME_AT = 1_000;

type QueueItem = { kind: 'request'; req: QObj } | { kind: 'parse-error'; desc: string };

export class SimAgent {
  readonly name: string;
  readonly version: string;
  readonly state: GuestState;
  private readonly traits: VersionTraits;
  private readonly dispatcher: Dispatcher;
  private readonly listener: ChannelListener;
  private readonly outbox: Outbox;
  private readonly faults = new FaultSet();
  private readonly timeScale: number;
  private proc: ProcessState = newProcessState();
  private streamer!: JsonStreamer;
  private queue: QueueItem[] = [];
  private busy = false;
  private pending = 0;
  private maxPending = 0;
  private delimitNext = false;
  private power: 'on' | 'off' | 'rebooting' = 'on';
  private bootInput: Buffer[] = [];
  private hangRelease: (() => void) | undefined;
  private closed = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly sleepers = new Set<() => void>();
  private readonly log = new CommandLog();
  private readonly runtime: AgentRuntime;

  constructor(dir: string, private readonly opts: SimVmOptions) {
    this.name = opts.name;
    this.version = opts.version ?? '10.0.0';
    this.timeScale = opts.timeScale ?? 1;
    const traits = traitsFor(this.version);
    if (opts.execTruncatedFlags) traits.execTruncatedFixed = opts.execTruncatedFlags === 'fixed';
    this.traits = traits;
    this.state = defaultGuestState(opts.hostname ?? opts.name);
    this.state.frozen = opts.frozen ?? false;
    this.dispatcher = new Dispatcher(this.version, traits, new Set(opts.disabled ?? []), new Set(opts.lacks ?? []));
    this.outbox = new Outbox(() => this.listener.endActive());
    this.listener = new ChannelListener(opts.tcp ? 'tcp' : 'unix', opts.socketPath ?? join(dir, `${opts.name}.sock`), {
      input: (chunk) => this.onInput(chunk),
      served: (s) => this.outbox.attach(s),
      left: () => {
        this.outbox.detach();
        this.releaseHang();
      },
    });
    this.newStreamer();
    this.runtime = this.makeRuntime();
  }

  get endpoint(): Endpoint {
    return this.listener.endpoint;
  }

  get stats(): SimStats {
    return {
      connections: this.listener.connections,
      maxConcurrentCommands: this.maxPending,
      commandLog: this.log.entries(),
      openHandles: this.proc.handles.size,
      execRecords: this.proc.execs.size,
      frozen: this.state.frozen,
      connected: this.listener.connected,
      waitingClients: this.listener.waitingClients,
      pendingOutputBytes: this.outbox.pendingBytes,
      queuedRequests: this.queue.length,
    };
  }

  /** Forget the counters and the command log (not the guest state). */
  resetStats(): void {
    this.maxPending = this.pending;
    this.log.clear();
  }

  setFault(spec: FaultSpec): void {
    this.faults.add(spec);
  }

  clearFaults(): void {
    this.faults.clear();
    this.releaseHang();
  }

  addFile(path: string, data: Buffer): void {
    this.state.files.setRegular(path, data);
  }

  addVirtualFile(path: string, size: number, seed = 1): void {
    this.state.files.setVirtual(path, size, seed);
  }

  readFile(path: string): Buffer | undefined {
    return this.state.files.read(path);
  }

  /** Start listening (called by Simulator.addVm). */
  async start(): Promise<void> {
    await this.listener.listen();
  }

  /** Stop listening and drop the clients; the agent keeps running (state, handles, pending replies). */
  async kill(): Promise<void> {
    this.releaseHang();
    await this.listener.close();
  }

  /** Listen again on the same endpoint; after a guest power-off this boots the guest again. */
  async restart(): Promise<void> {
    if (this.closed) throw new Error(`simulated VM ${this.name} is closed`);
    if (this.power === 'off') this.boot();
    await this.listener.listen();
  }

  /**
   * The agent process restarts (crash, service restart, package upgrade) while the guest runs on:
   * the connection drops, requests not yet answered and replies not yet read are lost, open file
   * handles and exec records are forgotten, the parser starts afresh. The guest state stays, and so
   * does a freeze: qemu-ga keeps it in its state file (`qga.state.isfrozen`) and comes back in
   * frozen mode with the filesystems still frozen.
   */
  async restartProcess(): Promise<void> {
    if (this.closed) throw new Error(`simulated VM ${this.name} is closed`);
    this.releaseHang();
    await this.listener.close();
    this.proc = newProcessState();
    this.newStreamer();
    this.queue = [];
    this.pending = 0;
    this.outbox.clear();
    this.delimitNext = false;
    await this.listener.listen();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.releaseHang();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const wake of [...this.sleepers]) wake();
    await this.listener.close();
  }

  // ---- input side -------------------------------------------------------------------------

  private newStreamer(): void {
    this.streamer = new JsonStreamer((ev) => this.onMessage(ev));
  }

  private onInput(chunk: Buffer): void {
    if (this.power === 'rebooting') {
      this.bootInput.push(Buffer.from(chunk));
      return;
    }
    if (this.power !== 'on') return;
    this.streamer.feed(chunk);
    if (this.queue.length > INPUT_PAUSE_AT) this.listener.pauseInput();
    this.kick();
  }

  private onMessage(ev: StreamEvent): void {
    if (ev.ok) {
      this.queue.push({ kind: 'request', req: ev.value });
      this.pending++;
      if (this.pending > this.maxPending) this.maxPending = this.pending;
    } else {
      this.queue.push({ kind: 'parse-error', desc: this.traits.detailedParseErrors ? ev.desc : 'Invalid JSON syntax' });
    }
  }

  // ---- the single-threaded command loop ------------------------------------------------------

  private kick(): void {
    if (!this.busy) void this.runQueue();
  }

  private async runQueue(): Promise<void> {
    this.busy = true;
    try {
      while (this.queue.length > 0 && this.power === 'on' && !this.closed) {
        const item = this.queue.shift() as QueueItem;
        if (this.queue.length === INPUT_RESUME_AT) this.listener.resumeInput();
        if (item.kind === 'parse-error') {
          this.send({ rsp: errorBody('GenericError', item.desc) });
          continue;
        }
        try {
          await this.execute(item.req);
        } finally {
          this.pending--;
        }
      }
    } finally {
      this.busy = false;
    }
  }

  private async execute(req: QObj): Promise<void> {
    const name = Dispatcher.commandName(req);
    this.log.record(name ?? '', req);
    const f: MatchedFaults = name === undefined ? { delayMs: 0, hang: false } : this.faults.take(name);
    if (f.delayMs > 0) await this.sleep(f.delayMs);
    if (f.hang) {
      await new Promise<void>((resolve) => {
        this.hangRelease = resolve;
      });
      return;
    }
    if (this.closed || this.power !== 'on') return;
    if (f.error) {
      this.send({ rsp: this.dispatcher.withId(errorBody(f.error.class, f.error.desc), req) });
      return;
    }
    const { rsp } = await this.dispatcher.dispatch(req, this.runtime);
    if (rsp === undefined) return;
    this.send({ rsp, fault: f.reply, req });
  }

  private send(plan: ReplyPlan): void {
    const delimited = this.delimitNext;
    this.delimitNext = false;
    buildReply(plan, delimited, this.outbox, (o: JsonObject, r?: QObj) => (r ? this.dispatcher.withId(o, r) : o));
  }

  private releaseHang(): void {
    const release = this.hangRelease;
    this.hangRelease = undefined;
    release?.();
  }

  // ---- power and process lifetime -------------------------------------------------------------

  /**
   * A fresh agent process in a freshly booted guest: disk contents survive, nothing else. After a
   * reboot the host connection stayed up, so requests already received are still answered.
   */
  private boot(keepQueue = false): void {
    this.proc = newProcessState();
    this.newStreamer();
    if (!keepQueue) {
      this.queue = [];
      this.pending = 0;
      this.outbox.clear();
    }
    this.delimitNext = false;
    this.state.frozen = false;
    this.state.frozenCount = 0;
    this.power = 'on';
    const early = this.bootInput;
    this.bootInput = [];
    for (const chunk of early) this.onInput(chunk);
  }

  private timer(fn: () => void, ms: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  private sleep(ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        this.sleepers.delete(wake);
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  private shutdownGuest(mode: string): void {
    if (mode === 'reboot') {
      // the host connection stays up; bytes sent meanwhile reach the new agent after boot
      this.power = 'rebooting';
      this.timer(() => {
        this.boot(true);
        this.kick();
      }, (this.opts.rebootMs ?? 1000) * this.timeScale);
      return;
    }
    this.power = 'off';
    this.timer(() => {
      this.outbox.clear();
      this.listener.endActive();
      void this.listener.close();
    }, this.opts.shutdownDelayMs ?? 100);
  }

  private makeRuntime(): AgentRuntime {
    const agent = this; // getters below must see the current process state after a reboot
    return {
      get state() {
        return agent.state;
      },
      get proc() {
        return agent.proc;
      },
      version: this.version,
      traits: this.traits,
      timeScale: this.timeScale,
      now: () => Date.now(),
      sleep: (ms) => agent.sleep(ms),
      setDelimited: () => {
        agent.delimitNext = true;
      },
      commandTable: () => agent.dispatcher.commandTable(agent.state.frozen),
      setFrozen: (frozen) => {
        agent.state.frozen = frozen;
      },
      shutdown: (mode) => agent.shutdownGuest(mode),
    };
  }
}
