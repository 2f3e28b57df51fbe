/**
 * cluster.* cross-field checks (issue 17), called by load.ts's semantic checks. Cluster mode lives
 * in the store's Redis, so it needs store.type redis; other nodes reach this one at advertiseUrl;
 * node-to-node calls are signed with the secret in secretFile (never logged, only its length is
 * checked). The node id defaults to the host name.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { errorMessage } from '../util/unknown.js';
import type { Config } from './schema.js';

/** the shortest cluster secret accepted */
export const CLUSTER_SECRET_MIN = 32;

export function clusterChecks(c: Config, problems: string[]): void {
  const k = c.cluster;
  if (k.heartbeatIntervalMs * 3 > k.heartbeatTtlMs) {
    problems.push(`cluster.heartbeatIntervalMs: ${k.heartbeatIntervalMs} is more than a third of cluster.heartbeatTtlMs (${k.heartbeatTtlMs}); a node would be seen gone between two heartbeats`);
  }
  if (!k.enabled) return;
  if (k.id === undefined) {
    const host = hostname().split('.')[0] ?? '';
    if (/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(host)) k.id = host;
    else problems.push(`cluster.id: required (the host name "${host.slice(0, 64)}" is not a valid node id)`);
  }
  if (c.store.type !== 'redis') problems.push('cluster.enabled: needs store.type redis (membership and the VM directory live in Redis)');
  if (k.advertiseUrl === undefined) problems.push('cluster.advertiseUrl: required when cluster.enabled (the URL other nodes reach this one at)');
  if (k.secretFile === undefined) {
    problems.push('cluster.secretFile: required when cluster.enabled (a file with the secret every node shares)');
    return;
  }
  let secret = '';
  try {
    secret = readFileSync(k.secretFile, 'utf8').trim();
  } catch (e) {
    const code = e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : errorMessage(e);
    problems.push(`cluster.secretFile: cannot read ${k.secretFile}: ${code}`);
    return;
  }
  if (secret.length < CLUSTER_SECRET_MIN) problems.push(`cluster.secretFile: the secret in ${k.secretFile} is shorter than ${CLUSTER_SECRET_MIN} characters`);
}
