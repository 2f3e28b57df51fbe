import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, buildConfig, loadConfig } from '../../src/config/load.js';

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
    const c = loadConfig('config/default.yaml', {});
    expect(c.store.type).toBe('memory');
    expect(c.server.host).toBe('127.0.0.1');
    expect(c.freeze.stateFile).toBe('var/freeze-leases.json');
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

  it('the server process refuses to start on a bad config, exit code 2, every key named', () => {
    const p = file('bad2.yaml', 'server:\n  port: -1\nstore:\n  type: cassandra\n');
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts', '--config', p], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('server.port');
    expect(r.stderr).toContain('store.type');
  });
});
