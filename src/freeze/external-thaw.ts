/**
 * freeze.externalThawAfterMs (default 0 = off): a VM found frozen with no lease of ours (frozen
 * outside the gateway: qm, a script on the agent socket, a backup tool that died) is thawed once
 * it has been seen frozen that long. Before the thaw the store is asked again (no lease of ours
 * may hold it) and the agent too (still frozen); the thaw and its outcome are audited.
 * Owned by the fleet-view work (issue 15 item 7); the rest of src/freeze is the freeze service's.
 */
import type { Logger } from 'pino';
import type { AgentService } from '../agent/service.js';
import type { LeaseLookup } from '../agent/state-external.js';
import { GATEWAY_ACTOR, type AuditLog } from '../util/audit.js';

export interface ExternalThawDeps {
  agent: AgentService;
  hasLease: LeaseLookup;
  audit: AuditLog;
  logger?: Pick<Logger, 'warn' | 'info'>;
  afterMs: number;
  clock?: () => number;
}

export class ExternalThaw {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private unsubscribe: (() => void) | undefined;
  private readonly clock: () => number;

  constructor(private readonly deps: ExternalThawDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  start(): void {
    if (this.deps.afterMs <= 0 || this.unsubscribe) return;
    this.unsubscribe = this.deps.agent.external.onChange(() => this.plan());
    this.plan();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** One timer per externally frozen VM, due `afterMs` after it was first seen frozen. */
  private plan(): void {
    const frozen = new Set(this.deps.agent.externalFreezes().map((f) => f.vm));
    for (const [vm, t] of this.timers) {
      if (frozen.has(vm)) continue;
      clearTimeout(t);
      this.timers.delete(vm);
    }
    for (const vm of frozen) {
      if (this.timers.has(vm)) continue;
      const since = this.deps.agent.external.sinceMs(vm) ?? this.clock();
      const t = setTimeout(() => void this.thaw(vm, since), Math.max(0, since + this.deps.afterMs - this.clock()));
      t.unref();
      this.timers.set(vm, t);
    }
  }

  private async thaw(vm: string, since: number): Promise<void> {
    const { agent, hasLease, audit, logger, afterMs } = this.deps;
    this.timers.delete(vm);
    if (agent.external.sinceMs(vm) !== since) return this.plan();
    const frozenSince = new Date(since).toISOString();
    try {
      if ((await hasLease(vm)) !== false) return;
      const status = await agent.call(vm, 'guest-fsfreeze-status');
      if (status !== 'frozen' || (await hasLease(vm)) !== false) return;
      audit.record({ action: 'external-thaw', by: GATEWAY_ACTOR, vm, frozenSince, afterMs }, `thawing ${vm}: frozen outside the gateway since ${frozenSince} (freeze.externalThawAfterMs)`);
      const result = await agent.call(vm, 'guest-fsfreeze-thaw', undefined, { priority: 'thaw' });
      audit.record({ action: 'external-thaw', by: GATEWAY_ACTOR, vm, frozenSince, outcome: 'thawed', filesystems: typeof result === 'number' ? result : undefined }, `thawed ${vm} (frozen outside the gateway)`);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      audit.record({ action: 'external-thaw', by: GATEWAY_ACTOR, vm, frozenSince, outcome: 'failed', error: message }, `thaw of ${vm} (frozen outside the gateway) failed; retried`);
      logger?.warn({ vm, err: message }, 'external-freeze thaw failed');
      // retried after another afterMs/4 (at least 1 s) while it stays frozen outside the gateway
      if (agent.external.sinceMs(vm) === since && this.unsubscribe) {
        const t = setTimeout(() => void this.thaw(vm, since), Math.max(1000, afterMs / 4));
        t.unref();
        this.timers.set(vm, t);
      }
    } finally {
      if (!this.timers.has(vm)) this.plan();
    }
  }
}
