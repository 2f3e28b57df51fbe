/**
 * The store.* checks of loadConfig with store.type redis: exactly one topology (redisUrl, sentinels
 * + sentinelName, clusterNodes), the password and TLS files readable, each credential given in one
 * place. No problem line ever quotes a URL or a password file's content.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { errorMessage } from '../util/unknown.js';
import type { Config } from './schema.js';

type Env = Record<string, string | undefined>;

/** REDIS_URL overrides the file's Redis, whatever topology the file names (applied before the schema). */
export function applyRedisUrlEnv(raw: Record<string, unknown>, env: Env): void {
  if (!env.REDIS_URL) return;
  const store = raw.store;
  if (store === null || typeof store !== 'object' || Array.isArray(store)) return;
  const s = store as Record<string, unknown>;
  delete s.sentinels;
  delete s.sentinelName;
  delete s.clusterNodes;
}

function errno(e: unknown): string {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : errorMessage(e);
}

function readable(file: string, key: string, problems: string[]): boolean {
  try {
    accessSync(file, constants.R_OK);
    return true;
  } catch (e) {
    problems.push(`${key}: cannot read ${file}: ${errno(e)}`);
    return false;
  }
}

/**
 * What ioredis takes without a scheme: a port, a socket path, or a host (name, IPv4, [IPv6]) with
 * an optional port. Anything else (`not a url`) ioredis would take as a host name and retry for
 * ever; it is refused here.
 */
const SCHEMELESS = /^(?:\d{1,5}|\/\S+|(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?)$/;

/** The parts of a redis:// or rediss:// URL the checks need; undefined for a port, host[:port] or socket path. */
function urlParts(url: string): { tls: boolean; user: boolean; password: boolean } | 'invalid' | undefined {
  if (!url.includes('://')) {
    if (!SCHEMELESS.test(url)) return 'invalid';
    const port = /(?:^|:)(\d{1,5})$/.exec(url);
    if (port && !url.startsWith('/') && (Number(port[1]) < 1 || Number(port[1]) > 65535)) return 'invalid';
    return undefined;
  }
  if (!/^rediss?:\/\//i.test(url)) return 'invalid';
  try {
    const u = new URL(url);
    return { tls: u.protocol.toLowerCase() === 'rediss:', user: u.username !== '', password: u.password !== '' };
  } catch {
    return 'invalid';
  }
}

export function storeChecks(c: Config, problems: string[]): void {
  const s = c.store;
  if (s.type !== 'redis') return;
  const given = (['redisUrl', 'sentinels', 'clusterNodes'] as const).filter((k) => s[k] !== undefined);
  if (given.length === 0) problems.push('store.redisUrl: required when store.type is redis (or store.sentinels with store.sentinelName, or store.clusterNodes)');
  if (given.length > 1) problems.push(`store: ${given.join(' and ')} are both set; give exactly one of redisUrl, sentinels, clusterNodes`);
  if (s.sentinels !== undefined && s.sentinelName === undefined) problems.push('store.sentinelName: required with store.sentinels (the master name the sentinels monitor)');
  if (s.sentinelName !== undefined && s.sentinels === undefined) problems.push('store.sentinelName: only used with store.sentinels, which is not set');
  for (const [k, list] of [['sentinels', s.sentinels], ['clusterNodes', s.clusterNodes]] as const) {
    list?.forEach((entry, i) => {
      const port = Number(entry.slice(entry.lastIndexOf(':') + 1));
      if (port < 1 || port > 65535) problems.push(`store.${k}.${i}: port ${port} is not 1-65535`);
    });
  }
  const url = s.redisUrl === undefined ? undefined : urlParts(s.redisUrl);
  if (url === 'invalid') problems.push('store.redisUrl: not a valid redis:// or rediss:// URL, host[:port] or socket path (the value is not repeated here: it may hold a password)');
  if (url && url !== 'invalid') {
    if (url.password && s.passwordFile !== undefined) problems.push('store.passwordFile: store.redisUrl already carries a password; give it in one place');
    if (url.user && s.username !== undefined) problems.push('store.username: store.redisUrl already names a user; give it in one place');
    if (!url.tls && s.tls !== undefined) problems.push('store.tls: store.redisUrl is redis:// (plain); use rediss:// for TLS');
  }
  if (s.passwordFile !== undefined && readable(s.passwordFile, 'store.passwordFile', problems)) {
    try {
      if (readFileSync(s.passwordFile, 'utf8').replace(/\r?\n$/, '') === '') problems.push(`store.passwordFile: ${s.passwordFile} is empty`);
    } catch (e) {
      problems.push(`store.passwordFile: cannot read ${s.passwordFile}: ${errno(e)}`);
    }
  }
  const tls = s.tls;
  if (tls) {
    if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) problems.push('store.tls: certFile and keyFile go together (a client certificate and its key)');
    for (const k of ['caFile', 'certFile', 'keyFile'] as const) {
      const f = tls[k];
      if (f !== undefined) readable(f, `store.tls.${k}`, problems);
    }
  }
}
