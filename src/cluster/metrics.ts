/** The cluster part's gauges (README, metrics table), read from the node at scrape time. */
import { Gauge, type Registry as MetricsRegistry } from 'prom-client';
import type { NodeInfo } from './directory.js';

export interface ClusterMetricsSource {
  /** VMs served here whose name another live node also serves */
  conflicts(): number;
  nodes(): NodeInfo[];
  /** the directory could not be refreshed */
  stale(): boolean;
  /** shared VMs whose ownership lease this node holds */
  owned(): number;
}

export function registerClusterMetrics(registry: MetricsRegistry, src: ClusterMetricsSource): void {
  const gauge = (name: string, help: string, collect: (g: Gauge) => void, labelNames: string[] = []) =>
    registry.registerMetric(
      new Gauge({
        name,
        help,
        labelNames,
        registers: [],
        collect() {
          collect(this);
        },
      }),
    );
  gauge('qga_cluster_vm_conflicts', 'VMs served by this node whose name another live node also serves', (g) => g.set(src.conflicts()));
  gauge(
    'qga_cluster_nodes',
    'Cluster nodes in the member index, by state (alive: heartbeating; gone: stopped within the last 24 h)',
    (g) => {
      const all = src.nodes();
      g.set({ state: 'alive' }, all.filter((n) => n.alive).length);
      g.set({ state: 'gone' }, all.filter((n) => !n.alive).length);
    },
    ['state'],
  );
  gauge('qga_cluster_directory_stale', '1 while the cluster directory could not be refreshed from Redis (the last one is served)', (g) => g.set(src.stale() ? 1 : 0));
  gauge('qga_cluster_owned_vms', 'VMs reachable from several nodes whose ownership lease this node holds', (g) => g.set(src.owned()));
}
