/**
 * Fleet gauges, read at scrape time from what the agent service knows (no agent is asked):
 *   qga_agent_up{vm}   1 the agent answered last time, 0 its last connect or handshake failed
 *                      (VMs never contacted are not listed)
 *   qga_vm_frozen{vm}  1 frozen (through a lease of ours, or found frozen outside the gateway), else 0
 * With metrics.perVmLabels false (very large fleets) each is one series without labels: the number
 * of VMs up, and the number frozen. qga_agent_down then counts the VMs down.
 */
import { Gauge, type Registry } from 'prom-client';
import type { AgentService } from './service.js';

export interface FleetMetricsOptions {
  perVmLabels: boolean;
}

export function registerFleetMetrics(registry: Registry, agent: AgentService, opts: FleetMetricsOptions): void {
  // a VM that left the registry (and was not forgotten yet) is not exported
  const registered = (vm: string): boolean => agent.registry.resolve(vm) !== undefined;
  const frozenVms = (): Set<string> => new Set([...agent.knownFrozen(), ...agent.externalFreezes().map((f) => f.vm)].filter(registered));
  if (opts.perVmLabels) {
    new Gauge({
      name: 'qga_agent_up',
      help: 'Whether the VM\'s guest agent answered its last handshake or call (1) or the last connect or handshake failed (0); VMs never contacted are absent',
      labelNames: ['vm'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [vm, state] of agent.states.all()) if (state !== 'unknown' && registered(vm)) this.set({ vm }, state === 'up' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'qga_vm_frozen',
      help: 'Whether the VM\'s guest filesystems are frozen (through a gateway lease or outside the gateway)',
      labelNames: ['vm'],
      registers: [registry],
      collect() {
        this.reset();
        const frozen = frozenVms();
        for (const [vm] of agent.states.all()) if (registered(vm)) this.set({ vm }, frozen.has(vm) ? 1 : 0);
        for (const vm of frozen) this.set({ vm }, 1);
      },
    });
    return;
  }
  const count = (state: string): number => {
    let n = 0;
    for (const [vm, s] of agent.states.all()) if (s === state && registered(vm)) n++;
    return n;
  };
  new Gauge({
    name: 'qga_agent_up',
    help: 'VMs whose guest agent answered its last handshake or call (metrics.perVmLabels is off)',
    registers: [registry],
    collect() {
      this.set(count('up'));
    },
  });
  new Gauge({
    name: 'qga_agent_down',
    help: 'VMs whose last agent connect or handshake failed (metrics.perVmLabels is off)',
    registers: [registry],
    collect() {
      this.set(count('down'));
    },
  });
  new Gauge({
    name: 'qga_vm_frozen',
    help: 'VMs whose guest filesystems are frozen, through a gateway lease or outside it (metrics.perVmLabels is off)',
    registers: [registry],
    collect() {
      this.set(frozenVms().size);
    },
  });
}
