/**
 * The light background probe and the recovery of down agents.
 *
 * - Every `agent.probeIntervalMs` (0 = off) each registered VM gets one probe: a sync handshake
 *   on its channel, released at once if the probe opened the socket (AgentService.probe), spread
 *   over the interval and at most PROBE_CONCURRENCY at a time, so a fleet of thousands costs a
 *   trickle of short connections. The first sweep starts with the probe (not one interval later:
 *   every VM would be `unknown` for a minute after each start), and a VM that appears in the
 *   registry (a socket found, a VM registered) is probed at once.
 * - A VM marked down is retried on its own schedule (retryInitialMs, doubling to retryMaxMs,
 *   agent.downRetryMaxMs: 1 s by default) until the agent answers: then it is up again, and calls
 *   stop failing fast.
 * - The registry tells of VMs whose record changed: a VM that went away (its discovered socket
 *   was removed: the VM stopped) is forgotten, and when it, or a VM marked down, appears again
 *   (the socket is back) it is retried at once instead of at its next retry.
 */
import type { Logger } from 'pino';
import type { AgentService } from './service.js';

export interface ProbeSettings {
  /** one probe of every VM per interval; 0 = no periodic probe (down VMs are still retried) */
  intervalMs: number;
  /** first retry of a down VM after this long, then doubling */
  retryInitialMs: number;
  retryMaxMs: number;
}

const PROBE_CONCURRENCY = 8;
/** the probe's calls are the gateway's own: not counted as agent commands (ExecuteOptions.background) */
const BACKGROUND = { background: true } as const;
/** names of VMs that went away while known, retried at once if they come back (bounded) */
const MAX_VANISHED = 10_000;

export class AgentProbe {
  private readonly retries = new Map<string, { timer: NodeJS.Timeout; delayMs: number }>();
  private readonly vanished = new Set<string>();
  private intervalTimer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private unsubscribeRegistry: (() => void) | undefined;
  private sweeping = false;
  private stopped = true;

  constructor(
    private readonly agent: AgentService,
    private readonly listVms: () => Promise<string[]>,
    private readonly settings: ProbeSettings,
    private readonly logger?: Logger,
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.unsubscribe = this.agent.states.onChange(({ vm, state }) => {
      if (state === 'down') this.scheduleRetry(vm, this.settings.retryInitialMs);
      else this.cancelRetry(vm);
    });
    this.unsubscribeRegistry = this.agent.registry.onChange((vm) => this.registryChanged(vm));
    for (const [vm, state] of this.agent.states.all()) if (state === 'down') this.scheduleRetry(vm, this.settings.retryInitialMs);
    if (this.settings.intervalMs > 0) {
      this.intervalTimer = setInterval(() => void this.sweep(), this.settings.intervalMs);
      this.intervalTimer.unref();
      // the first sweep now (spread as every sweep is), so states are known soon after a start
      setTimeout(() => void this.sweep(), 0).unref();
    }
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.unsubscribeRegistry?.();
    this.unsubscribeRegistry = undefined;
    this.vanished.clear();
    if (this.intervalTimer) clearInterval(this.intervalTimer);
    this.intervalTimer = undefined;
    for (const vm of [...this.retries.keys()]) this.cancelRetry(vm);
  }

  /** One probe of every registered VM, spread over (a part of) the interval. */
  async sweep(): Promise<void> {
    if (this.sweeping || this.stopped) return;
    this.sweeping = true;
    try {
      const vms = await this.listVms();
      // VMs gone from the registry (a discovery folder, the store) leave the fleet view
      for (const [vm] of [...this.agent.states.all()]) if (this.agent.registry.resolve(vm) === undefined) this.agent.forget(vm);
      const spreadMs = vms.length > 0 ? Math.min(1000, this.settings.intervalMs / 2 / Math.ceil(vms.length / PROBE_CONCURRENCY)) : 0;
      for (let i = 0; i < vms.length && !this.stopped; i += PROBE_CONCURRENCY) {
        // a VM already being retried has its own schedule
        const batch = vms.slice(i, i + PROBE_CONCURRENCY).filter((vm) => !this.retries.has(vm));
        await Promise.all(batch.map((vm) => this.agent.probe(vm, BACKGROUND)));
        if (spreadMs > 0) await new Promise((r) => setTimeout(r, spreadMs).unref());
      }
    } catch (err) {
      this.logger?.warn({ err }, 'agent probe sweep failed');
    } finally {
      this.sweeping = false;
    }
  }

  /** A VM's registry record appeared, changed or went away. */
  private registryChanged(vm: string): void {
    if (this.stopped) return;
    if (this.agent.registry.resolve(vm) === undefined) {
      // gone (a discovered socket removed: the VM stopped): forget it, and watch for its return
      if (this.agent.states.state(vm) !== 'unknown') {
        this.vanished.add(vm);
        if (this.vanished.size > MAX_VANISHED) this.vanished.delete(this.vanished.values().next().value as string);
      }
      this.cancelRetry(vm);
      this.agent.forget(vm);
      return;
    }
    // back (or its record changed while it is down): ask now, not at the next retry
    if (this.vanished.delete(vm) || this.agent.states.state(vm) === 'down') {
      this.cancelRetry(vm);
      this.scheduleRetry(vm, 0);
      return;
    }
    // new (a socket found, a VM registered): its state is known at once, not at the next sweep
    if (this.settings.intervalMs > 0 && this.agent.states.state(vm) === 'unknown' && !this.retries.has(vm)) {
      void this.agent.probe(vm, BACKGROUND).catch((err: unknown) => this.logger?.debug({ err, vm }, 'probe of a new VM failed'));
    }
  }

  private scheduleRetry(vm: string, delayMs: number): void {
    if (this.stopped || this.retries.has(vm)) return;
    const entry = { timer: setTimeout(() => void this.retry(vm, entry), delayMs), delayMs };
    entry.timer.unref();
    this.retries.set(vm, entry);
  }

  private cancelRetry(vm: string): void {
    const r = this.retries.get(vm);
    if (!r) return;
    clearTimeout(r.timer);
    this.retries.delete(vm);
  }

  private async retry(vm: string, entry: { delayMs: number }): Promise<void> {
    const up = await this.agent.probe(vm, BACKGROUND);
    // cancelled or replaced (e.g. retried at once when the socket came back) meanwhile
    if (this.retries.get(vm) !== entry) return;
    this.retries.delete(vm);
    if (up || this.stopped || this.agent.states.state(vm) !== 'down') return;
    const { delayMs } = entry;
    this.scheduleRetry(vm, delayMs === 0 ? this.settings.retryInitialMs : Math.min(this.settings.retryMaxMs, delayMs * 2));
  }
}
