/**
 * AgentPool: VM name → its Channel. Channels are made on first use, hold a socket only while
 * used (the channel's idle release), and at most `maxOpen` hold one at a time; past that the
 * least recently used channel with nothing to do is made to let go. Channel objects that stayed
 * socketless for `dropIdleMs` are forgotten, so memory stays bounded across thousands of VMs.
 *
 * The pool is the ONE ChannelEvents emitter of every channel it makes: a channel emits its
 * state, command, resync, stale and orphan events (each naming its VM) straight into the pool, and
 * metrics, logs and the files service subscribe to the pool once.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { GatewayError, errors } from '../errors.js';
import { Channel, type ChannelOptions } from '../qga/channel.js';
import { defaultSpec } from '../qga/commands.js';
import { ChannelEvents, type CommandEvent, type StateEvent } from '../qga/events.js';
import type { ChannelStats, Endpoint, ExecuteOptions, JsonObject, JsonValue } from '../qga/types.js';

export interface AgentPoolOptions {
  /** where a VM's agent is; undefined = no such VM */
  resolve: (vm: string) => Endpoint | undefined;
  channelOptions: Omit<ChannelOptions, 'vm' | 'endpoint' | 'events'>;
  /** a VM's own idle release (overrides channelOptions.idleReleaseMs); read when its channel is made */
  idleReleaseOf?: (vm: string) => number | undefined;
  /** channels holding (or opening) a socket at the same time */
  maxOpen?: number;
  /** forget a channel object after this long without a socket or work (default 10 min) */
  dropIdleMs?: number;
  /** replaceable factory (tests); a channel it makes reports to the pool if given `events` */
  createChannel?: (vm: string, endpoint: Endpoint, events: ChannelEvents) => Channel;
  logger?: Logger;
}

export interface PoolStats {
  /** channels holding or opening a socket */
  open: number;
  ready: number;
  queued: number;
  inFlight: number;
  channels: ChannelStats[];
}

export type PoolCommandEvent = CommandEvent;
export type PoolStateEvent = StateEvent;

const SWEEP_EVERY_MS = 60_000;

export class AgentPool extends ChannelEvents {
  private readonly opts: AgentPoolOptions;
  private readonly maxOpen: number;
  private readonly dropIdleMs: number;
  private readonly now: () => number;
  private readonly channels = new Map<string, Channel>();
  /** channels closed but still draining, until their close() settles */
  private readonly retiring = new Map<Channel, Promise<void>>();
  /**
   * Every channel admitted to open a socket (admit() said yes), current or retiring: a superset of
   * those holding one, pruned as admit() walks it, least recently used first (a channel goes to
   * the end when it is admitted and whenever a job of its settles: its lastUsedAt order). admit()
   * finds its victim at the front instead of walking every channel the pool knows (thousands of
   * socketless ones under churn) or every admitted one (maxOpen of them) per socket opened.
   */
  private readonly admitted = new Set<Channel>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(opts: AgentPoolOptions) {
    super();
    this.opts = opts;
    this.maxOpen = opts.maxOpen ?? 1000;
    this.dropIdleMs = opts.dropIdleMs ?? 600_000;
    this.now = opts.channelOptions.now ?? (() => performance.now());
    this.on('command', (e: CommandEvent) => this.used(e.vm));
  }

  /** The VM's channel, made lazily; replaced when the VM's endpoint changed. */
  channel(vm: string): Channel {
    if (this.closed) throw errors.shuttingDown('the agent pool is closed', { vm });
    const endpoint = this.opts.resolve(vm);
    if (!endpoint) throw errors.vmNotFound(vm);
    const existing = this.channels.get(vm);
    if (existing && sameEndpoint(existing.endpoint, endpoint) && existing.state !== 'closing' && existing.state !== 'closed') {
      return existing;
    }
    if (existing) this.retire(vm, existing);
    const ch = this.opts.createChannel
      ? this.opts.createChannel(vm, endpoint, this)
      : new Channel({ ...this.opts.channelOptions, ...this.ownSettings(vm), vm, endpoint, events: this });
    ch.setAdmission((urgent) => this.admit(ch, urgent));
    this.channels.set(vm, ch);
    this.armSweep();
    return ch;
  }

  /**
   * Run a command on the VM's channel (a socket is opened only within maxOpen: see admit()).
   * A priority job (freeze, thaw) goes to the channel the agent is serving: a channel removed
   * (freeze and thaw release theirs) but still draining its line holds the agent's one client
   * slot, and a new channel would wait behind that whole line.
   */
  execute(vm: string, command: string, args?: JsonObject, opts?: ExecuteOptions): Promise<JsonValue> {
    let ch: Channel;
    try {
      ch = (opts?.priority && this.serving(vm)) || this.channel(vm);
    } catch (err) {
      return Promise.reject(err);
    }
    return ch.execute(command, args, opts);
  }

  private ownSettings(vm: string): { idleReleaseMs?: number } {
    const idleReleaseMs = this.opts.idleReleaseOf?.(vm);
    return idleReleaseMs === undefined ? {} : { idleReleaseMs };
  }

  /** The VM's channel (current or draining) that connected first and still holds its socket. */
  private serving(vm: string): Channel | undefined {
    const endpoint = this.opts.resolve(vm);
    if (!endpoint) return undefined;
    let best: Channel | undefined;
    let bestAt = Infinity;
    const current = this.channels.get(vm);
    for (const ch of [...(current ? [current] : []), ...this.retiring.keys()]) {
      if (ch.vm !== vm || ch.state === 'closed' || !ch.holdsSocket || !sameEndpoint(ch.endpoint, endpoint)) continue;
      const at = ch.stats().connectedAt ?? Infinity;
      if (!best || at < bestAt) [best, bestAt] = [ch, at];
    }
    return best;
  }

  /**
   * The deadline a command gets when its caller names none: its catalog class (an unknown
   * command is treated as the catalog says, see defaultSpec) at the configured timeouts.
   */
  defaultTimeoutMs(command: string): number {
    const { catalog, timeouts } = this.opts.channelOptions;
    return timeouts[(catalog(command) ?? defaultSpec(command)).timeout];
  }

  /** how long the VM's channel keeps an idle socket (its own setting, else the pool's; 0 = for ever) */
  idleReleaseMsOf(vm: string): number {
    return this.opts.idleReleaseOf?.(vm) ?? this.opts.channelOptions.idleReleaseMs ?? 30_000;
  }

  /** one deadline for a whole resync (the handshake), as configured */
  get syncTimeoutMs(): number {
    return this.opts.channelOptions.syncTimeoutMs ?? 5000;
  }

  has(vm: string): boolean {
    return this.channels.has(vm);
  }

  /** The VM's current channel if one exists; never makes one. */
  peek(vm: string): Channel | undefined {
    return this.channels.get(vm);
  }

  /**
   * Close and forget the VM's channel (e.g. the VM was deregistered). Waits for that VM's
   * channels only (the current one and any still draining from an endpoint change), not for
   * other VMs' channels that happen to be draining.
   */
  async remove(vm: string): Promise<void> {
    const ch = this.channels.get(vm);
    if (ch) this.retire(vm, ch);
    const mine = [...this.retiring].filter(([c]) => c.vm === vm).map(([, p]) => p);
    await Promise.all(mine);
  }

  stats(): PoolStats {
    const out: PoolStats = { open: 0, ready: 0, queued: 0, inFlight: 0, channels: [] };
    for (const ch of this.channels.values()) {
      const s = ch.stats();
      if (ch.holdsSocket) out.open++;
      if (s.state === 'ready') out.ready++;
      out.queued += s.queued;
      out.inFlight += s.inFlight;
      out.channels.push(s);
    }
    return out;
  }

  /** Accept nothing new, let every channel drain, close all sockets. */
  async close(): Promise<void> {
    this.closed = true;
    this.stopSweep();
    const all = [...this.channels.entries()];
    for (const [vm, ch] of all) this.retire(vm, ch);
    while (this.retiring.size > 0) await Promise.all([...this.retiring.values()]);
  }

  /** Fail everything waiting or in flight on every channel at once. */
  destroy(err?: Error): void {
    this.closed = true;
    this.stopSweep();
    for (const ch of [...this.channels.values(), ...this.retiring.keys()]) ch.destroy(err);
    this.channels.clear();
    this.admitted.clear();
  }

  // ---------------------------------------------------------------------------------------------

  /**
   * Asked by a channel right before it opens a socket. Past maxOpen, the least recently used
   * channel with nothing queued or in flight releases its socket; if none can, the answer is
   * QUEUE_FULL, except for an urgent channel (a freeze or thaw waits in it): that one opens its
   * socket beyond maxOpen. Draining (retiring) channels count: their sockets are just as open.
   */
  private admit(incoming: Channel, urgent = false): GatewayError | undefined {
    this.admitted.delete(incoming);
    let victim: Channel | undefined;
    // below maxOpen even counting those that let go of their socket since: no walk at all
    if (this.admitted.size >= this.maxOpen) {
      for (const ch of this.admitted) {
        if (!ch.holdsSocket) {
          // let go of its socket since: admitted again (and added back) before it opens another
          this.admitted.delete(ch);
          if (this.admitted.size < this.maxOpen) break;
          continue;
        }
        // the victim: the least recently used current channel with nothing to do (a retiring one
        // is closing already)
        if (ch.busy || this.channels.get(ch.vm) !== ch) continue;
        victim = ch;
        break;
      }
    }
    if (this.admitted.size < this.maxOpen) return this.admitted.add(incoming), undefined;
    if (victim?.release()) {
      this.admitted.delete(victim);
      this.opts.logger?.debug({ vm: victim.vm, for: incoming.vm }, 'released least recently used agent connection');
      return this.admitted.add(incoming), undefined;
    }
    if (urgent) {
      this.opts.logger?.warn({ vm: incoming.vm, maxOpen: this.maxOpen }, 'all agent connections busy: opening one more for a freeze or thaw');
      return this.admitted.add(incoming), undefined;
    }
    return errors.queueFull(incoming.vm, `all ${this.maxOpen} agent connections are busy`);
  }

  /** A job of the VM's channel settled: it is now the most recently used. */
  private used(vm: string): void {
    const ch = this.channels.get(vm);
    if (ch !== undefined && this.admitted.delete(ch)) this.admitted.add(ch);
  }

  private retire(vm: string, ch: Channel): void {
    if (this.channels.get(vm) === ch) this.channels.delete(vm);
    // closed: no longer counted against maxOpen nor kept alive by the set (h11 F4: retired channels
    // stayed in it, with their sessions and last errors, until maxOpen of them had piled up)
    const p: Promise<void> = ch.close().finally(() => {
      this.retiring.delete(ch);
      this.admitted.delete(ch);
    });
    this.retiring.set(ch, p);
  }

  private armSweep(): void {
    if (this.sweepTimer || this.closed) return;
    this.sweepTimer = setInterval(() => this.sweep(), Math.min(SWEEP_EVERY_MS, Math.max(this.dropIdleMs, 10)));
    this.sweepTimer.unref();
  }

  private stopSweep(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  /** Forget channels that hold nothing: no socket, no work, unused for dropIdleMs. */
  sweep(): void {
    const cutoff = this.now() - this.dropIdleMs;
    for (const [vm, ch] of this.channels) {
      if (ch.state === 'idle' && !ch.busy && ch.lastUsedAt <= cutoff) this.retire(vm, ch);
    }
    if (this.channels.size === 0) this.stopSweep();
  }
}

function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  if (a.type === 'unix' && b.type === 'unix') return a.path === b.path;
  if (a.type === 'tcp' && b.type === 'tcp') return a.host === b.host && a.port === b.port;
  return false;
}
