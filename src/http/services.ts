/**
 * What the HTTP layer is handed: finished services, built by the composition root (gateway.ts).
 * Route plugins read them from `fastify.services` and never construct one.
 */
import type { Registry as MetricsRegistry } from 'prom-client';
import type { AgentService } from '../agent/service.js';
import type { ClusterService } from '../cluster/directory.js';
import type { RawPassthrough } from '../agent/raw.js';
import type { Config } from '../config/schema.js';
import type { ExecService } from '../exec/service.js';
import type { FilesService } from '../files/service.js';
import type { FreezeService } from '../freeze/service.js';
import type { AgentPool } from '../pool/pool.js';
import type { VmRegistry } from '../registry/registry.js';
import type { LeaseStore } from '../store/types.js';

export interface HttpServices {
  readonly config: Config;
  readonly store: LeaseStore;
  readonly registry: VmRegistry;
  readonly pool: AgentPool;
  readonly agent: AgentService;
  readonly freeze: FreezeService;
  readonly exec: ExecService;
  readonly files: FilesService;
  readonly raw: RawPassthrough;
  readonly metrics: MetricsRegistry;
  /** cluster mode (cluster.enabled): where every VM is served; undefined on a single gateway */
  readonly cluster?: ClusterService;
}
