/**
 * Prometheus metrics of the agent pool. Protocol code knows nothing of them: channel and pool
 * events are observed from here, and gauges are read from pool.stats() at scrape time. Labels are
 * bounded: command names from the catalog, outcomes from a fixed set; never VM names, which would
 * grow without limit across a fleet.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { commandSpec } from '../qga/commands.js';
import type { AgentPool } from './pool.js';

export interface CommandEvent {
  vm?: string;
  command: string;
  durationMs: number;
  outcome: string;
}

export function createMetrics(pool: AgentPool): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'qga_gateway_' });

  const commands = new Counter({
    name: 'qga_agent_commands_total',
    help: 'Agent commands completed, by command and outcome',
    labelNames: ['command', 'outcome'],
    registers: [registry],
  });
  const commandSeconds = new Histogram({
    name: 'qga_agent_command_duration_seconds',
    help: 'Agent command latency from acceptance to reply (queue wait included)',
    labelNames: ['command'],
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
  pool.on('command', (ev: CommandEvent) => {
    // unknown (passthrough) command names are folded into one label value
    const name = commandSpec(ev.command) ? ev.command : 'other';
    commands.inc({ command: name, outcome: ev.outcome });
    commandSeconds.observe({ command: name }, ev.durationMs / 1000);
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
