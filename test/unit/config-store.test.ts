/**
 * store.* checks with store.type redis (src/config/store-checks.ts): exactly one topology,
 * sentinelName with sentinels, readable password and TLS files, each credential in one place, and
 * never a password in a problem line.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, buildConfig } from '../../src/config/load.js';
import { describeRedisTarget } from '../../src/store/redis-connect.js';
import { redisTarget } from '../../src/store/index.js';

let dir: string;
let pwFile: string;
let emptyFile: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'qga-cfgstore-'));
  pwFile = path.join(dir, 'pw');
  emptyFile = path.join(dir, 'empty');
  await writeFile(pwFile, 's3cret-file-pw\n');
  await writeFile(emptyFile, '\n');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The problem lines buildConfig throws for `store` (with type redis), or [] when it is valid. */
function problems(store: Record<string, unknown>, env: Record<string, string> = {}): string[] {
  try {
    buildConfig({ store: { type: 'redis', ...store } }, env);
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
}

describe('store.* checks (redis)', () => {
  it('accepts each topology alone', () => {
    expect(problems({ redisUrl: 'rediss://app:pw@redis.example:6380/2' })).toEqual([]);
    expect(problems({ sentinels: ['10.0.0.1:26379', '10.0.0.2:26379'], sentinelName: 'qga', username: 'app', passwordFile: pwFile })).toEqual([]);
    expect(problems({ clusterNodes: ['10.0.0.1:7000'], tls: {} })).toEqual([]);
  });

  it('wants exactly one of redisUrl, sentinels, clusterNodes', () => {
    expect(problems({})).toEqual(['store.redisUrl: required when store.type is redis (or store.sentinels with store.sentinelName, or store.clusterNodes)']);
    expect(problems({ redisUrl: 'redis://h:1', clusterNodes: ['h:2'] })).toEqual(['store: redisUrl and clusterNodes are both set; give exactly one of redisUrl, sentinels, clusterNodes']);
  });

  it('sentinels need sentinelName, and sentinelName needs sentinels', () => {
    expect(problems({ sentinels: ['h:26379'] })).toEqual(['store.sentinelName: required with store.sentinels (the master name the sentinels monitor)']);
    expect(problems({ redisUrl: 'redis://h:1', sentinelName: 'x' })).toEqual(['store.sentinelName: only used with store.sentinels, which is not set']);
    expect(problems({ clusterNodes: ['h:70000'] })).toEqual(['store.clusterNodes.0: port 70000 is not 1-65535']);
  });

  it('REDIS_URL overrides the file’s sentinels and clusterNodes', () => {
    const c = buildConfig({ store: { type: 'redis', sentinels: ['h:26379'], sentinelName: 'm' } }, { REDIS_URL: 'redis://127.0.0.1:6390' });
    expect(c.store).toMatchObject({ redisUrl: 'redis://127.0.0.1:6390' });
    expect(c.store.sentinels).toBeUndefined();
    expect(c.store.sentinelName).toBeUndefined();
    expect(redisTarget(c.store)).toEqual({ url: 'redis://127.0.0.1:6390' });
  });

  it('the password file must be readable and not empty; a URL password and a file are not both given', () => {
    expect(problems({ redisUrl: 'redis://h:1', passwordFile: path.join(dir, 'missing') })).toEqual([`store.passwordFile: cannot read ${path.join(dir, 'missing')}: ENOENT`]);
    expect(problems({ redisUrl: 'redis://h:1', passwordFile: emptyFile })).toEqual([`store.passwordFile: ${emptyFile} is empty`]);
    const both = problems({ redisUrl: 'redis://u:url-secret-pw@h:1', passwordFile: pwFile, username: 'v' });
    expect(both).toEqual(['store.passwordFile: store.redisUrl already carries a password; give it in one place', 'store.username: store.redisUrl already names a user; give it in one place']);
    expect(both.join('\n')).not.toContain('url-secret-pw');
  });

  it('TLS: rediss:// for a URL, readable files, certFile with keyFile', () => {
    expect(problems({ redisUrl: 'redis://h:1', tls: { servername: 'x' } })).toEqual(['store.tls: store.redisUrl is redis:// (plain); use rediss:// for TLS']);
    expect(problems({ redisUrl: 'rediss://h:1', tls: { caFile: path.join(dir, 'ca.pem'), certFile: pwFile } })).toEqual([
      'store.tls: certFile and keyFile go together (a client certificate and its key)',
      `store.tls.caFile: cannot read ${path.join(dir, 'ca.pem')}: ENOENT`,
    ]);
  });

  it('an unusable URL is refused without repeating it (it may hold a password)', () => {
    const p = problems({ redisUrl: 'http://u:leaky-pw@h:1' });
    expect(p).toEqual(['store.redisUrl: not a valid redis:// or rediss:// URL, host[:port] or socket path (the value is not repeated here: it may hold a password)']);
  });

  it('without a scheme: a port, host[:port], [IPv6][:port] or socket path; anything else refused (ioredis would retry it as a host name for ever)', () => {
    for (const ok of ['6379', 'localhost', 'redis.example:6380', '10.0.0.7:6379', '[::1]:6379', '[fe80::1]', '/run/redis/redis.sock']) {
      expect(problems({ redisUrl: ok }), ok).toEqual([]);
    }
    for (const bad of ['not a url', 'host:port', 'h:0', 'h:70000', 'pw@h:1', 'h:1/0', '-h', '::1']) {
      expect(problems({ redisUrl: bad }), bad).toEqual([
        'store.redisUrl: not a valid redis:// or rediss:// URL, host[:port] or socket path (the value is not repeated here: it may hold a password)',
      ]);
    }
  });

  it('describes the target without the password', () => {
    expect(describeRedisTarget({ url: 'rediss://app:hunter2@redis.example:6380/0' })).toBe('rediss://app@redis.example:6380/0');
    expect(describeRedisTarget({ url: 'redis://:hunter2@h:1' })).toBe('redis://h:1');
    expect(describeRedisTarget({ sentinels: ['a:1', 'b:2'], sentinelName: 'm' })).toBe('Redis Sentinel master "m" (a:1, b:2)');
    expect(describeRedisTarget({ clusterNodes: ['a:1'] })).toBe('Redis Cluster (a:1)');
  });
});
