/**
 * The store's Redis client, built from store.* for the three topologies ioredis knows:
 *
 * - one server: `url` (redis:// or rediss:// for TLS; `redis://user:password@host:port/db`);
 * - Sentinel: `sentinels` (host:port) + `sentinelName`; ioredis asks the sentinels for the master
 *   at every (re)connect, so after a failover it lands on the promoted replica;
 * - Cluster: `clusterNodes` (seed host:port); ioredis reads the slot map and follows MOVED/ASK.
 *
 * `username` + `passwordFile` authenticate to the data nodes, and with Sentinel to the sentinels too
 * (configure them with the same ACL user). TLS is on for rediss:// and whenever `tls` is given
 * (`tls: {}` = the system's CAs); with Sentinel it is used for the sentinels and the data nodes.
 *
 * Every topology gets the fail-fast settings the store relies on (see redis.ts): no offline queue,
 * no retry per request, no resend after a reconnect, a command timeout, a connect timeout and a
 * capped background reconnect. On Cluster, a MOVED/ASK is followed at once (the command did not
 * run), a closed connection or CLUSTERDOWN fails the command at once (retryDelayOnFailover and
 * retryDelayOnClusterDown 0: ioredis would otherwise re-send it later, possibly after the caller
 * was answered 503) and the slot map is refreshed in the background.
 *
 * The password is never part of a message or log line: describeRedisTarget() leaves it out, and
 * lastRedisError() keeps the server's or the socket's own words (WRONGPASS…, certificate errors).
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

export type RedisClient = Redis | Cluster;

export interface RedisTlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  servername?: string;
}

/** Where the store's Redis is: exactly one of url, sentinels (+ sentinelName), clusterNodes. */
export interface RedisTarget {
  url?: string;
  sentinels?: string[];
  sentinelName?: string;
  clusterNodes?: string[];
  username?: string;
  /** a file holding the password (one line; a trailing newline is dropped) */
  passwordFile?: string;
  tls?: RedisTlsFiles;
}

export interface RedisTiming {
  commandTimeoutMs: number;
  connectTimeoutMs: number;
}

/** background reconnects: never faster than 100 ms apart, never slower than 2 s */
const reconnectDelay = (times: number): number => Math.min(100 * times, 2_000);

/** The password in `file`, its trailing newline dropped. */
export function readPasswordFile(file: string): string {
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
}

/** host:port (IPv6 as [::1]:port) as ioredis wants it. */
export function parseHostPort(entry: string): { host: string; port: number } {
  const i = entry.lastIndexOf(':');
  const host = entry.slice(0, i).replace(/^\[|\]$/g, '');
  return { host, port: Number(entry.slice(i + 1)) };
}

/** Node's TLS options from the configured files (read now; a missing file throws here, at start). */
function tlsOptions(tls: RedisTlsFiles | undefined, on: boolean): ConnectionOptions | undefined {
  if (!tls && !on) return undefined;
  const t = tls ?? {};
  return {
    ...(t.caFile ? { ca: readFileSync(t.caFile) } : {}),
    ...(t.certFile ? { cert: readFileSync(t.certFile) } : {}),
    ...(t.keyFile ? { key: readFileSync(t.keyFile) } : {}),
    ...(t.servername ? { servername: t.servername } : {}),
  };
}

/** A redis:// or rediss:// URL as ioredis options; undefined for anything else ioredis parses itself. */
function fromUrl(url: string): { opts: RedisOptions; tls: boolean } | undefined {
  if (!/^rediss?:\/\//i.test(url)) return undefined;
  const u = new URL(url);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : undefined;
  return {
    tls: u.protocol.toLowerCase() === 'rediss:',
    opts: {
      host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
      port: u.port ? Number(u.port) : 6379,
      ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      ...(db !== undefined && Number.isInteger(db) ? { db } : {}),
    },
  };
}

/** The client for `target`, connecting in the background (lazyConnect off). */
export function connectRedis(target: RedisTarget, timing: RedisTiming): RedisClient {
  const password = target.passwordFile ? readPasswordFile(target.passwordFile) : undefined;
  const auth: RedisOptions = {
    ...(target.username ? { username: target.username } : {}),
    ...(password !== undefined ? { password } : {}),
  };
  const failFast = {
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: timing.commandTimeoutMs,
    connectTimeout: timing.connectTimeoutMs,
  } satisfies RedisOptions;

  let client: RedisClient;
  if (target.clusterNodes?.length) {
    const tls = tlsOptions(target.tls, false);
    const options: ClusterOptions = {
      enableOfflineQueue: false,
      // off: the check (CLUSTER INFO) goes to a random node, and without an offline queue it fails
      // with 'Connection is closed.' whenever that node's connection is still being made, which
      // restarts the whole connect (ready took 0.1 s to over 10 s). RedisStore.ready() waits for
      // every master's connection instead (helper R's edit)
      enableReadyCheck: false,
      lazyConnect: false,
      clusterRetryStrategy: reconnectDelay,
      retryDelayOnFailover: 0,
      retryDelayOnClusterDown: 0,
      retryDelayOnTryAgain: 100,
      retryDelayOnMoved: 0,
      maxRedirections: 16,
      slotsRefreshTimeout: Math.max(1_000, timing.commandTimeoutMs),
      slotsRefreshInterval: 5_000,
      redisOptions: { ...failFast, ...auth, ...(tls ? { tls } : {}) },
    };
    client = new Cluster(target.clusterNodes.map(parseHostPort), options);
  } else if (target.sentinels?.length) {
    const tls = tlsOptions(target.tls, false);
    client = new Redis({
      ...failFast,
      ...auth,
      enableOfflineQueue: false,
      lazyConnect: false,
      retryStrategy: reconnectDelay,
      sentinels: target.sentinels.map(parseHostPort),
      name: target.sentinelName,
      role: 'master',
      ...(target.username ? { sentinelUsername: target.username } : {}),
      ...(password !== undefined ? { sentinelPassword: password } : {}),
      sentinelRetryStrategy: reconnectDelay,
      sentinelCommandTimeout: timing.commandTimeoutMs,
      // no failoverDetector: its disconnect on +switch-master, landing while a reconnect is asking
      // the sentinels, ends the client for good (ioredis 6: status 'end', "Connection is closed.").
      // A dead master closes the connection anyway, and a demoted one answers READONLY (below).
      ...(tls ? { tls, sentinelTLS: tls, enableTLSForSentinelMode: true } : {}),
      // a demoted master (READONLY) is left for the one the sentinels name now; nothing is resent
      reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 1 : false),
    });
  } else {
    const url = target.url;
    if (!url) throw new Error('store: one of redisUrl, sentinels or clusterNodes is required');
    const parsed = fromUrl(url);
    const tls = tlsOptions(target.tls, parsed?.tls ?? false);
    const common: RedisOptions = { ...failFast, enableOfflineQueue: false, lazyConnect: false, retryStrategy: reconnectDelay, ...(tls ? { tls } : {}) };
    // the URL's user and password win over username/passwordFile (config allows only one of them)
    client = parsed ? new Redis({ ...common, ...auth, ...parsed.opts }) : new Redis(url, { ...common, ...auth });
  }
  track(client);
  return client;
}

/**
 * Calls `fn` with a data node's connection each time it becomes ready: the client itself for one
 * server or Sentinel, every node's connection on Cluster (for SCRIPT LOAD on each master).
 */
export function onNodeReady(client: RedisClient, fn: (node: Redis) => void): void {
  if (client instanceof Cluster) {
    const hook = (node: Redis) => node.on('ready', () => fn(node));
    client.on('+node', hook);
    for (const node of client.nodes('all')) hook(node);
  } else {
    client.on('ready', () => fn(client));
  }
}

/** per client: the last connection error, and the last telling one (not a bare socket reset) */
const lastErrors = new WeakMap<RedisClient, { last: string; telling?: string }>();

/** a socket-level error that says nothing of why (a server that refuses TLS or a login often just resets) */
const BARE = /^(write |read )?(ECONNRESET|EPIPE)$|^Connection is closed\.$|^socket hang up$/;

function track(client: RedisClient): void {
  const note = (e: unknown) => {
    const msg = e instanceof Error ? e.message : String(e);
    const prev = lastErrors.get(client);
    lastErrors.set(client, { last: msg, telling: BARE.test(msg) ? prev?.telling : msg });
  };
  // ioredis emits 'error' on every failed (re)connect; callers learn of outages from rejections
  client.on('error', note);
  if (client instanceof Cluster) client.on('node error', note);
  client.on('ready', () => lastErrors.delete(client));
}

/**
 * The last connection error since the client was last ready (WRONGPASS, ECONNREFUSED, a TLS
 * certificate error…), to say why the store is unavailable; undefined when it is ready. A bare
 * reset is followed by the last telling error of the same outage (a TLS server that refuses a
 * client without a certificate sends its alert on one attempt and just resets on another).
 */
export function lastRedisError(client: RedisClient): string | undefined {
  if (client.status === 'ready') return undefined;
  const e = lastErrors.get(client);
  if (!e) return undefined;
  return e.telling && e.telling !== e.last ? `${e.last}; before that: ${e.telling}` : e.last;
}

/** Where the store connects, for messages and logs: never the password. */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.clusterNodes?.length) return `Redis Cluster (${target.clusterNodes.join(', ')})`;
  if (target.sentinels?.length) return `Redis Sentinel master "${target.sentinelName ?? ''}" (${target.sentinels.join(', ')})`;
  const url = target.url ?? '';
  // the user stays, the password goes: redis://user:secret@host → redis://user@host
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/@:]*)(:[^/@]*)?@/i, (_m, scheme: string, user: string) => (user ? `${scheme}${user}@` : scheme));
}
