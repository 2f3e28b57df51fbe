/** Builds the configured lease store. The Redis one connects in the background and fails fast meanwhile. */
import type { Config } from '../config/schema.js';
import { MemoryStore } from './memory.js';
import { RedisStore } from './redis.js';
import type { RedisTarget } from './redis-connect.js';
import { ENDED_RETENTION_MS, type LeaseStore } from './types.js';

export function createStore(config: Pick<Config, 'store' | 'freeze'>): LeaseStore {
  const s = config.store;
  // a lease can be held up to freeze.maxTotalSeconds: remember how one ended at least as long
  const endedRetentionMs = Math.max(ENDED_RETENTION_MS, config.freeze.maxTotalSeconds * 1000);
  if (s.type === 'redis') {
    return new RedisStore({ ...redisTarget(s), keyPrefix: s.keyPrefix, commandTimeoutMs: s.commandTimeoutMs, endedRetentionMs });
  }
  return new MemoryStore({ endedRetentionMs, ...(config.freeze.stateFile ? { persistPath: config.freeze.stateFile } : {}) });
}

/**
 * Where the store's Redis is, from store.*: exactly one of redisUrl (REDIS_URL), sentinels +
 * sentinelName, clusterNodes (loadConfig checks it), with username, passwordFile and tls.
 */
export function redisTarget(s: Config['store']): RedisTarget {
  const given = [s.redisUrl, s.sentinels, s.clusterNodes].filter((x) => x !== undefined).length;
  if (given !== 1) throw new Error('store: exactly one of redisUrl, sentinels or clusterNodes is required when store.type is redis');
  return {
    ...(s.redisUrl !== undefined ? { url: s.redisUrl } : {}),
    ...(s.sentinels !== undefined ? { sentinels: s.sentinels, sentinelName: s.sentinelName } : {}),
    ...(s.clusterNodes !== undefined ? { clusterNodes: s.clusterNodes } : {}),
    ...(s.username !== undefined ? { username: s.username } : {}),
    ...(s.passwordFile !== undefined ? { passwordFile: s.passwordFile } : {}),
    ...(s.tls !== undefined ? { tls: s.tls } : {}),
  };
}

export { MemoryStore } from './memory.js';
export { connectRedis, describeRedisTarget, lastRedisError, type RedisClient, type RedisTarget } from './redis-connect.js';
export { RedisStore } from './redis.js';
export type * from './types.js';
export { vmKey, groupKey, parseKey, vmOfKey, groupOfSession } from './types.js';
