/**
 * Prometheus metrics of freezes, on the gateway's registry (src/gateway.ts registers them beside
 * the pool's). Observed from the thaw engine's events and, for the gauge, read from the lease
 * store at scrape time. No VM names in labels (a fleet would make them unbounded).
 *   qga_freeze_auto_thaws_total       thaws the gateway did on its own at a lease's deadline
 *                                     (local timer, sweeper, start-up reconciliation)
 *   qga_freeze_duration_seconds       freeze (lease creation) to thaw, per thawed VM
 *   qga_freeze_leases_active          leases in the store (live, or expired and awaiting their thaw)
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { LeaseStore } from '../store/types.js';
import type { ThawEngine } from './thaw.js';

export function registerFreezeMetrics(registry: Registry, engine: ThawEngine, store: LeaseStore): void {
  const autoThaws = new Counter({
    name: 'qga_freeze_auto_thaws_total',
    help: 'VM thaws the gateway sent on its own at a lease deadline (local timer, deadline sweep, start-up reconciliation)',
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'qga_freeze_duration_seconds',
    help: 'Time from the freeze (lease creation, store clock) to the thaw that reached the agent, per VM',
    buckets: [0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [registry],
  });
  let last = 0;
  new Gauge({
    name: 'qga_freeze_leases_active',
    help: 'Freeze leases in the lease store (live, or expired and awaiting their thaw); a freeze group counts once',
    registers: [registry],
    async collect() {
      // a store that cannot be read keeps the last value: a scrape must not fail with it
      last = await store.listSessions().then((s) => s.length, () => last);
      this.set(last);
    },
  });
  engine.observe({
    thawed(ev) {
      if (ev.auto) autoThaws.inc();
      if (ev.freezeMs !== undefined) duration.observe(Math.max(0, ev.freezeMs) / 1000);
    },
  });
}
