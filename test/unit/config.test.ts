import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, buildConfig, defaultStateDir, loadConfig } from '../../src/config/load.js';

const dir = mkdtempSync(join(tmpdir(), 'qga-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('config loading', () => {
  it('gives safe embedded defaults with no file', () => {
    const c = loadConfig(undefined, {});
    expect(c.server.host).toBe('127.0.0.1');
    expect(c.server.port).toBe(8080);
    expect(c.store.type).toBe('memory');
    expect(c.auth.tokens).toEqual([]);
    expect(c.agent.maxQueue).toBeGreaterThan(0);
    expect(c.freeze.maxTtlSeconds).toBeGreaterThanOrEqual(c.freeze.defaultTtlSeconds);
  });

  it('the shipped config/default.yaml is valid and keeps embedded freeze leases in a file', () => {
    const c = loadConfig('config/default.yaml', { QGA_GATEWAY_STATE_DIR: join(dir, 'state') });
    expect(c.store.type).toBe('memory');
    expect(c.server.host).toBe('127.0.0.1');
    expect(c.freeze.stateFile).toBe(join(dir, 'state', 'freeze-leases.json'));
  });

  it('resolves the embedded state file to an absolute path: explicit, QGA_GATEWAY_STATE_DIR, STATE_DIRECTORY, else a default directory', () => {
    expect(loadConfig(file('rel.yaml', 'freeze:\n  stateFile: var/x.json\n'), {}).freeze.stateFile).toBe(join(process.cwd(), 'var/x.json'));
    expect(loadConfig(undefined, { QGA_GATEWAY_STATE_DIR: '/srv/qga' }).freeze.stateFile).toBe('/srv/qga/freeze-leases.json');
    expect(loadConfig(undefined, { STATE_DIRECTORY: '/var/lib/qgs:/other' }).freeze.stateFile).toBe('/var/lib/qgs/freeze-leases.json');
    const d = defaultStateDir({ HOME: '/home/x' });
    expect(['/var/lib/qga-gateway', '/home/x/.local/state/qga-gateway']).toContain(d);
    // with Redis the same path (its `.held` journal of the leases the process holds); buildConfig
    // (code-built configs) leaves it unset
    expect(loadConfig(undefined, { REDIS_URL: 'redis://127.0.0.1:1', QGA_GATEWAY_STATE_DIR: '/srv/qga' }).freeze.stateFile).toBe('/srv/qga/freeze-leases.json');
    expect(buildConfig({}).freeze.stateFile).toBeUndefined();
  });

  it('HTTP server limits: defaults that cut slow clients, headers within the request timeout', () => {
    const c = buildConfig({});
    expect(c.server).toMatchObject({ headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000, maxConnections: 10_000 });
    expect(c.files.noProgressTimeoutMs).toBe(60_000);
    expect(c.freeze.handoverOnShutdown).toBe(false);
    expect(() => buildConfig({ server: { headersTimeoutMs: 5_000, requestTimeoutMs: 1_000 } })).toThrow(/server.headersTimeoutMs/);
  });

  it("bounds a VM's labels as the registration API does", () => {
    const vm = (labels: Record<string, string>) => ({ vms: [{ name: 'vm1', endpoint: { type: 'unix', path: '/tmp/vm1.sock' }, labels }] });
    expect(() => buildConfig(vm(Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']))))).toThrow(/vms\.0\.labels/);
    expect(() => buildConfig(vm({ ['k'.repeat(129)]: 'v' }))).toThrow(/vms\.0\.labels/);
    expect(() => buildConfig(vm({ k: 'v'.repeat(257) }))).toThrow(/vms\.0\.labels/);
    expect(buildConfig(vm({ env: 'prod' })).vms[0].labels).toEqual({ env: 'prod' });
  });

  it('names every bad key at once', () => {
    const p = file(
      'bad.yaml',
      [
        'server:',
        '  port: 99999',
        '  colour: blue',
        'agent:',
        '  maxQueue: 0',
        'vms:',
        '  - name: "bad name!"',
        '    endpoint: { type: unix, path: /tmp/x.sock }',
        'nonsense: 1',
      ].join('\n'),
    );
    let err: unknown;
    try {
      loadConfig(p, {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as ConfigError).message;
    for (const key of ['server.port', 'server.colour', 'agent.maxQueue', 'vms.0.name', 'nonsense']) {
      expect(msg).toContain(key);
    }
    expect((err as ConfigError).problems.length).toBeGreaterThanOrEqual(5);
  });

  it('reports every bad key even when a union swallows many schema errors', () => {
    let err: ConfigError | undefined;
    try {
      buildConfig({
        server: { port: -1 },
        log: { level: 'loud' },
        vms: [
          { name: 'a', endpoint: { type: 'unix', path: '' } },
          { name: 'b', endpoint: { type: 'tcp', host: 'h' } },
        ],
      });
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const text = err!.problems.join('\n');
    expect(text).toContain('server.port');
    expect(text).toMatch(/log\.level: must be one of fatal, error, warn, info, debug, trace, silent/);
    expect(text).toContain('vms.0.endpoint.path');
    expect(text).toMatch(/vms\.1\.endpoint: .*port/);
    // the folded union says nothing about the branch the value did not aim at
    expect(text).not.toMatch(/vms\.0\.endpoint: .*host/);
  });

  it("names the problems across keys in the same run as the schema's (not in a second round), leaving out those that read a refused key", () => {
    let err: ConfigError | undefined;
    try {
      buildConfig({
        server: { port: 99999, host: '0.0.0.0' },
        vms: [
          { name: 'a', endpoint: { type: 'unix', path: '/run/a.sock' } },
          { name: 'a', endpoint: { type: 'unix', path: '/run/b.sock' } },
        ],
        freeze: { defaultTtlSeconds: 'ten', maxTtlSeconds: 600, maxTotalSeconds: 60 },
      });
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const text = err!.problems.join('\n');
    // the schema's
    expect(text).toContain('server.port');
    expect(text).toContain('freeze.defaultTtlSeconds');
    // and the checks across keys, at once
    expect(text).toMatch(/vms\.1\.name: duplicate VM name "a"/);
    expect(text).toMatch(/freeze\.maxTtlSeconds: must not exceed freeze\.maxTotalSeconds/);
    expect(text).toMatch(/server\.host: "0\.0\.0\.0" is not loopback/);
    // not a verdict on a value of the wrong type
    expect(text).not.toMatch(/freeze\.defaultTtlSeconds: must not exceed/);
    expect(err!.problems).toHaveLength(new Set(err!.problems).size);
    // a whole section of the wrong type: its checks are left out, the others still run
    expect(() => buildConfig({ freeze: 5, server: { host: '0.0.0.0' } })).toThrow(/freeze: [^]*server\.host: "0\.0\.0\.0" is not loopback/);
  });

  it('checks tokens (env, file) and the read chunk against the reply cap at load time', () => {
    expect(() => buildConfig({ auth: { tokens: [{ name: 't', tokenEnv: 'GW_TOKEN', scopes: ['read'] }] } }, { GW_TOKEN: 'short' })).toThrow(/shorter than 16/);
    expect(() => buildConfig({ auth: { tokens: [{ name: 't', tokenFile: join(dir, 'missing-token'), scopes: ['read'] }] } })).toThrow(/cannot read/);
    expect(() => buildConfig({ agent: { maxReplyBytes: 1024 * 1024 }, files: { readChunkBytes: 1024 * 1024 } })).toThrow(/files\.readChunkBytes/);
  });

  it('refuses a non-loopback listen address without tokens', () => {
    expect(() => buildConfig({ server: { host: '0.0.0.0' } })).toThrow(/not loopback/);
    expect(() =>
      buildConfig({ server: { host: '0.0.0.0' }, auth: { tokens: [{ name: 'ops', token: 'x'.repeat(32), scopes: ['read'] }] } }),
    ).not.toThrow();
  });

  it('applies environment overrides and REDIS_URL implies the redis store', () => {
    const c = buildConfig({}, { PORT: '9000', REDIS_URL: 'redis://127.0.0.1:6390' });
    expect(c.server.port).toBe(9000);
    expect(c.store.type).toBe('redis');
    expect(() => buildConfig({}, { PORT: 'eighty' })).toThrow(/PORT/);
  });

  it('rejects duplicate VM names and YAML syntax errors', () => {
    expect(() =>
      buildConfig({
        vms: [
          { name: 'a', endpoint: { type: 'unix', path: '/x' } },
          { name: 'a', endpoint: { type: 'tcp', host: '127.0.0.1', port: 4000 } },
        ],
      }),
    ).toThrow(/duplicate/);
    expect(() => loadConfig(file('syntax.yaml', 'server: [unclosed'), {})).toThrow(/YAML/);
  });

  it('a YAML syntax error names the line and column, never the lines around it (they may hold a secret)', () => {
    const cases = [
      // a flow map left open (the parser that reports it quotes the following lines)
      'store: { type: redis, redisUrl: redis://u:REDISPW@h:1 \nlog: {}\n',
      'auth:\n  tokens:\n    - { name: a, token: SUPERSECRETTOKEN0123456789, scopes: [read] \nserver: {port: 1}\n',
      'server:\n  port: 1\n   host: "REDISPW\n',
    ];
    for (const text of cases) {
      let problems: string[] = [];
      try {
        loadConfig(file('secret-syntax.yaml', text), {});
      } catch (e) {
        if (e instanceof ConfigError) problems = e.problems;
      }
      expect(problems, text).toHaveLength(1);
      expect(problems[0]).toMatch(/^YAML syntax: .*line \d+, column \d+/);
      expect(problems[0]).not.toMatch(/REDISPW|SUPERSECRET|\n/);
    }
  });

  it('the server process refuses to start on a bad config, exit code 2, every key named', () => {
    const p = file('bad2.yaml', 'server:\n  port: -1\nstore:\n  type: cassandra\n');
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts', '--config', p], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('server.port');
    expect(r.stderr).toContain('store.type');
  });
});
