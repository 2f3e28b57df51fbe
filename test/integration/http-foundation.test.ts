/**
 * The first HTTP surface against the REAL qemu-ga: registry routes, ping, agent info, forced sync,
 * service routes, auth and the problem+json error map.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startQemuGa } from '../helpers/qemu-ga.js';
import { makeApp } from '../helpers/app.js';

type Agent = Awaited<ReturnType<typeof startQemuGa>>;
let agent: Agent;
/** a second agent: a real agent socket serves one client at a time, so each app gets its own */
let agent2: Agent;
let agent3: Agent;
let app: FastifyInstance;
let authApp: FastifyInstance;
const dir = mkdtempSync(join(tmpdir(), 'qga-http-'));
const ADMIN = 'admin-token-0123456789abcdef';
const READER = 'read-token-0123456789abcdef';

beforeAll(async () => {
  [agent, agent2, agent3] = await Promise.all([startQemuGa(), startQemuGa(), startQemuGa()]);
  const vms = [
    { name: 'host', endpoint: { type: 'unix' as const, path: agent.socketPath } },
    { name: 'dead', endpoint: { type: 'unix' as const, path: join(dir, 'nobody-listens.sock') } },
  ];
  // agent3's folder is a registration root (by default only the configured VMs' folders are)
  app = await makeApp({ vms, config: { registry: { allowedSocketRoots: [dirname(agent3.socketPath)] } } });
  authApp = await makeApp({
    vms: [{ name: 'host', endpoint: { type: 'unix' as const, path: agent2.socketPath } }, vms[1]],
    config: {
      auth: {
        tokens: [
          { name: 'admin', token: ADMIN, scopes: ['read', 'write', 'admin'] },
          { name: 'reader', token: READER, scopes: ['read'], vms: ['ho*'] },
        ],
      },
    },
  });
});

afterAll(async () => {
  await app?.close();
  await authApp?.close();
  await Promise.all([agent?.stop(), agent2?.stop(), agent3?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

describe('foundation HTTP surface (real qemu-ga)', () => {
  it('GET /healthz', async () => {
    const r = await app.inject({ method: 'GET', url: '/healthz' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ status: 'ok' });
  });

  it('GET /v1/vms lists the configured VMs', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/vms' });
    expect(r.statusCode).toBe(200);
    const names = r.json().items.map((v: { name: string }) => v.name);
    expect(names).toEqual(['dead', 'host']);
  });

  it('GET /v1/vms/{vm}/ping answers through the real agent', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/vms/host/ping' });
    expect(r.statusCode).toBe(200);
    expect(r.json().ok).toBe(true);
    expect(r.json().rttMs).toBeGreaterThan(0);
  });

  it('GET /v1/vms/{vm}/agent returns guest-info verbatim', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/vms/host/agent' });
    expect(r.statusCode).toBe(200);
    const body = r.json();
    expect(body.version).toMatch(/^\d+\.\d+/);
    const fstrim = body.supported_commands.find((c: { name: string }) => c.name === 'guest-fstrim');
    expect(fstrim).toEqual({ name: 'guest-fstrim', enabled: false, 'success-response': true });
    const ping = body.supported_commands.find((c: { name: string }) => c.name === 'guest-ping');
    expect(ping.enabled).toBe(true);
  });

  it('GET /v1/vms/{vm} shows channel state and cached agent version', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/vms/host' });
    expect(r.statusCode).toBe(200);
    const body = r.json();
    expect(body.endpoint).toEqual({ type: 'unix', path: agent.socketPath });
    expect(body.source).toBe('config');
    expect(body.channel.state).toBe('ready');
    expect(body.agent.version).toMatch(/^\d+\.\d+/);
    expect(body.frozen).toBe(false);
  });

  it('POST /v1/vms/{vm}/agent/sync resyncs and reports the round trip', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/vms/host/agent/sync' });
    expect(r.statusCode).toBe(200);
    expect(r.json().synced).toBe(true);
  });

  it('unknown VM → 404 VM_NOT_FOUND as problem+json', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/vms/nope/ping' });
    expect(r.statusCode).toBe(404);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(r.json()).toMatchObject({ code: 'VM_NOT_FOUND', status: 404, vm: 'nope' });
  });

  it('bad VM name → 400 VALIDATION_FAILED naming the parameter', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/vms/-bad!/ping' });
    expect(r.statusCode).toBe(400);
    expect(r.json().code).toBe('VALIDATION_FAILED');
    expect(r.json().detail).toContain('params');
  });

  it('unreachable socket → 503 AGENT_UNAVAILABLE, quickly', async () => {
    const t0 = Date.now();
    const r = await app.inject({ method: 'GET', url: '/v1/vms/dead/ping' });
    expect(r.statusCode).toBe(503);
    expect(r.json().code).toBe('AGENT_UNAVAILABLE');
    expect(r.json().detail).toContain('ENOENT');
    // answered on the first failed connect, not after retrying until the command deadline (5 s)
    expect(Date.now() - t0).toBeLessThan(4_000);
  });

  it('unknown route → 404 problem', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/nothing-here' });
    expect(r.statusCode).toBe(404);
    expect(r.json().code).toBe('NOT_FOUND');
  });

  it('registers and deletes a VM through the API (admin), refusing duplicates and config VMs', async () => {
    const body = { name: 'api-vm', endpoint: { type: 'unix', path: agent3.socketPath } };
    const r1 = await app.inject({ method: 'POST', url: '/v1/vms', payload: body });
    expect(r1.statusCode).toBe(201);
    expect(r1.json().source).toBe('api');
    const r2 = await app.inject({ method: 'POST', url: '/v1/vms', payload: body });
    expect(r2.statusCode).toBe(409);
    const ping = await app.inject({ method: 'GET', url: '/v1/vms/api-vm/ping' });
    expect(ping.statusCode).toBe(200);
    const bad = await app.inject({ method: 'POST', url: '/v1/vms', payload: { ...body, name: 'x2', extra: 1 } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().detail).toContain('extra');
    const del = await app.inject({ method: 'DELETE', url: '/v1/vms/api-vm' });
    expect(del.statusCode).toBe(204);
    expect((await app.inject({ method: 'GET', url: '/v1/vms/api-vm' })).statusCode).toBe(404);
    const delCfg = await app.inject({ method: 'DELETE', url: '/v1/vms/host' });
    expect(delCfg.statusCode).toBe(403);
  });

  it('GET /metrics exposes Prometheus text with agent command counters', async () => {
    const r = await app.inject({ method: 'GET', url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain/);
    expect(r.body).toMatch(/qga_agent_commands_total\{command="guest-ping",outcome="ok"\} \d+/);
    expect(r.body).toContain('qga_channels_open');
  });
});

describe('auth', () => {
  it('requires a bearer token when tokens are configured, but not for /healthz', async () => {
    expect((await authApp.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    const r = await authApp.inject({ method: 'GET', url: '/v1/vms/host/ping' });
    expect(r.statusCode).toBe(401);
    expect(r.json().code).toBe('UNAUTHENTICATED');
    expect(r.headers['www-authenticate']).toContain('Bearer');
    const wrong = await authApp.inject({ method: 'GET', url: '/v1/vms/host/ping', headers: { authorization: 'Bearer not-a-real-token-at-all' } });
    expect(wrong.statusCode).toBe(401);
  });

  it('serves the documentation without a token (a browser sends none when it navigates): /docs, its page and assets, /openapi.json', async () => {
    const page = await authApp.inject({ method: 'GET', url: '/docs' });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('swagger');
    for (const url of ['/docs/', '/docs/static/swagger-ui.css', '/docs/static/swagger-initializer.js', '/docs/json']) {
      expect((await authApp.inject({ method: 'GET', url })).statusCode, url).toBe(200);
    }
    expect((await authApp.inject({ method: 'GET', url: '/openapi.json' })).statusCode).toBe(200);
    // nothing else became public with it
    expect((await authApp.inject({ method: 'GET', url: '/v1/vms' })).statusCode).toBe(401);
  });

  it('enforces scopes and VM globs', async () => {
    const h = { authorization: `Bearer ${READER}` };
    expect((await authApp.inject({ method: 'GET', url: '/v1/vms/host/ping', headers: h })).statusCode).toBe(200);
    const other = await authApp.inject({ method: 'GET', url: '/v1/vms/dead/ping', headers: h });
    expect(other.statusCode).toBe(403);
    expect(other.json().code).toBe('FORBIDDEN');
    const sync = await authApp.inject({ method: 'POST', url: '/v1/vms/host/agent/sync', headers: h });
    expect(sync.statusCode).toBe(403);
    const reg = await authApp.inject({ method: 'POST', url: '/v1/vms', headers: h, payload: { name: 'z', endpoint: { type: 'tcp', host: '127.0.0.1', port: 1 } } });
    expect(reg.statusCode).toBe(403);
    const list = await authApp.inject({ method: 'GET', url: '/v1/vms', headers: h });
    expect(list.json().items.map((v: { name: string }) => v.name)).toEqual(['host']);
    const admin = await authApp.inject({ method: 'POST', url: '/v1/vms/host/agent/sync', headers: { authorization: `Bearer ${ADMIN}` } });
    expect(admin.statusCode).toBe(200);
  });
});
