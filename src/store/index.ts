/** Builds the configured lease store. The Redis one connects in the background and fails fast meanwhile. */
import type { Config } from '../config/schema.js';
import { MemoryStore } from './memory.js';
import { RedisStore } from './redis.js';
import { ENDED_RETENTION_MS, type LeaseStore } from './types.js';

export function createStore(config: Pick<Config, 'store' | 'freeze'>): LeaseStore {
  const s = config.store;
  // a lease can be held up to freeze.maxTotalSeconds: remember how one ended at least as long
  const endedRetentionMs = Math.max(ENDED_RETENTION_MS, config.freeze.maxTotalSeconds * 1000);
  if (s.type === 'redis') {
    if (!s.redisUrl) throw new Error('store.redisUrl is required when store.type is redis');
    return new RedisStore({ url: s.redisUrl, keyPrefix: s.keyPrefix, commandTimeoutMs: s.commandTimeoutMs, endedRetentionMs });
  }
  return new MemoryStore({ endedRetentionMs, ...(config.freeze.stateFile ? { persistPath: config.freeze.stateFile } : {}) });
}

export { MemoryStore } from './memory.js';
export { RedisStore } from './redis.js';
export type * from './types.js';
export { vmKey, groupKey, parseKey, vmOfKey, groupOfSession } from './types.js';
