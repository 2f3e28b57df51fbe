/**
 * Prometheus metrics of the agent pool. Protocol code knows nothing of them: channel and pool
 * events are observed from here, and gauges are read from pool.stats() at scrape time. Labels are
 * bounded: command names from the catalog, outcomes from a fixed set; never VM names, which would
 * grow without limit across a fleet.
 *
 * The process metrics of prom-client (process_cpu_user_seconds_total, nodejs_eventloop_lag_seconds,
 * nodejs_heap_size_used_bytes, …) keep their standard names, so stock Node.js dashboards work
 * (until 0.1 they were prefixed qga_gateway_). A guest-info answered from the copy cached at connect
 * is not an agent command and is not counted. Labelled children are made once and kept.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { commandSpec } from '../qga/commands.js';
import { outcomeLabel, type CommandEvent, type CommandOutcome } from '../qga/events.js';
import type { AgentPool } from './pool.js';


export function createMetrics(pool: AgentPool): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const commands = new Counter({
    name: 'qga_agent_commands_total',
    help: 'Agent commands completed, by command and outcome',
    labelNames: ['command', 'outcome'],
    registers: [registry],
  });
  const commandSeconds = new Histogram({
    name: 'qga_agent_command_duration_seconds',
    help: 'Agent command latency from acceptance to settlement (queue wait included), by command and outcome',
    labelNames: ['command', 'outcome'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
    registers: [registry],
  });
  const resyncs = new Counter({
    name: 'qga_channel_resyncs_total',
    help: 'Channel resynchronisations (0xFF + guest-sync-delimited) after connect, timeout or protocol error',
    labelNames: ['reason'],
    registers: [registry],
  });
  const stale = new Counter({
    name: 'qga_channel_stale_bytes_total',
    help: 'Bytes discarded as stale (replies left by earlier clients or abandoned commands)',
    registers: [registry],
  });
  // children per (command, outcome), made at first use: commands come from the catalog (others
  // fold into `other`) and outcomes from a fixed set, so this stays small
  const children = new Map<string, Map<string, { count: { inc(): void }; seconds: { observe(v: number): void } }>>();
  const childFor = (command: string, outcome: CommandOutcome) => {
    // unknown (passthrough) command names are folded into one label value
    const name = commandSpec(command) ? command : 'other';
    let byOutcome = children.get(name);
    if (byOutcome === undefined) {
      byOutcome = new Map();
      children.set(name, byOutcome);
    }
    let c = byOutcome.get(outcome);
    if (c === undefined) {
      const labels = { command: name, outcome: outcomeLabel(outcome) };
      c = { count: commands.labels(labels), seconds: commandSeconds.labels(labels) };
      byOutcome.set(outcome, c);
    }
    return c;
  };
  pool.on('command', (ev: CommandEvent) => {
    // a guest-info answered from the cache sent nothing to the agent: not an agent command; nor is
    // the gateway's own check (the probe, a down VM's retry: ~1/s per down VM, asked by nobody)
    if (ev.kind === 'info' || ev.background) return;
    const c = childFor(ev.command, ev.outcome);
    c.count.inc();
    c.seconds.observe(ev.durationMs / 1000);
  });
  pool.on('resync', (ev: { reason?: string }) => resyncs.inc({ reason: ev?.reason ?? 'unknown' }));
  pool.on('stale', (ev: { bytes?: number }) => stale.inc(ev?.bytes ?? 0));

  new Gauge({
    name: 'qga_channels',
    help: 'Agent channels by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      const counts = new Map<string, number>();
      for (const c of pool.stats().channels) counts.set(c.state, (counts.get(c.state) ?? 0) + 1);
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'qga_channels_open',
    help: 'Agent channels holding a socket',
    registers: [registry],
    collect() {
      this.set(pool.stats().open);
    },
  });
  new Gauge({
    name: 'qga_commands_queued',
    help: 'Commands waiting in VM queues',
    registers: [registry],
    collect() {
      this.set(pool.stats().queued);
    },
  });
  new Gauge({
    name: 'qga_commands_in_flight',
    help: 'Commands sent to agents and not yet answered',
    registers: [registry],
    collect() {
      this.set(pool.stats().inFlight);
    },
  });
  return registry;
}
