/**
 * Issue 12, item 5 — safe defaults: without tokens an anonymous caller may only read; a Host the
 * gateway does not answer to is 421 (DNS rebinding), a foreign Origin is 403 (CSRF from a web page
 * the operator visits), both before any body is read and before anything reaches the agent.
 */
import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { buildApp } from '../../src/app.js';
import { buildConfig } from '../../src/config/load.js';
import { allowedHostNames } from '../../src/http/plugins/origin.js';
import { agentCommands, expectProblem, startSim, type SimFleet } from '../integration/routes-support.js';

let fleet: SimFleet;
let vm: SimAgent;
let app: FastifyInstance;
let port: number;

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 's1' });
  // the shipped defaults: no auth section at all
  const config = buildConfig({ log: { level: 'silent' }, agent: { idleReleaseMs: 0 }, vms: [{ name: 's1', endpoint: vm.endpoint }] }, {}, 'safe-defaults test');
  app = await buildApp({ config, logger: pino({ level: 'silent' }), env: {} });
  port = Number(new URL(await app.listen({ host: '127.0.0.1', port: 0 })).port);
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

/** A raw request with exactly these headers; resolves with the status code and whether the server closed. */
function exchange(lines: string[], body = ''): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => s.write(`${lines.join('\r\n')}\r\nConnection: close\r\n\r\n${body}`));
    let got = '';
    s.on('data', (d) => (got += d.toString('utf8')));
    s.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1]), text: got }));
    s.on('error', reject);
    s.setTimeout(5_000, () => s.destroy(new Error('no answer')));
  });
}

describe('without tokens', () => {
  it('anonymous callers may read', async () => {
    expect((await app.inject({ method: 'GET', url: '/v1/vms/s1/ping' })).statusCode).toBe(200);
  });

  it('anonymous callers may not write or administer, and nothing reaches the agent', async () => {
    const before = agentCommands(vm).length;
    await expectProblem(app, { method: 'POST', url: '/v1/vms/s1/shutdown', payload: {} }, 403, 'FORBIDDEN');
    await expectProblem(app, { method: 'POST', url: '/v1/vms/s1/fsfreeze', payload: {} }, 403, 'FORBIDDEN');
    await expectProblem(app, { method: 'POST', url: '/v1/vms/s1/qga/guest-ping', payload: {} }, 403, 'FORBIDDEN');
    await expectProblem(app, { method: 'POST', url: '/v1/vms', payload: { name: 'x', endpoint: vm.endpoint } }, 403, 'FORBIDDEN');
    expect(agentCommands(vm).slice(before)).toEqual([]);
  });
});

describe('Host and Origin', () => {
  it('a foreign Host is 421 MISDIRECTED_REQUEST (DNS rebinding), the gateway\'s own names pass', async () => {
    const rebound = await exchange(['GET /v1/vms/s1/ping HTTP/1.1', 'Host: attacker.example:8080']);
    expect(rebound.status).toBe(421);
    expect(rebound.text).toContain('"code":"MISDIRECTED_REQUEST"');
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'LOCALHOST']) {
      expect((await exchange(['GET /v1/vms/s1/ping HTTP/1.1', `Host: ${host}`])).status, host).toBe(200);
    }
    const hostless = await exchange(['GET /v1/vms/s1/ping HTTP/1.1']);
    expect(hostless.status).toBe(421);
    expect(hostless.text).toContain('"code":"MISDIRECTED_REQUEST"');
  });

  it('an absolute-form target is checked by its authority, not by the Host header beside it (RFC 9112 §3.2.2)', async () => {
    for (const target of ['http://attacker.example/v1/vms/s1/ping', `http://user@attacker.example:${port}/v1/vms/s1/ping`]) {
      const r = await exchange([`GET ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`]);
      expect(r.status, target).toBe(421);
      expect(r.text).toContain('"code":"MISDIRECTED_REQUEST"');
    }
    expect((await exchange([`GET http://127.0.0.1:${port}/v1/vms/s1/ping HTTP/1.1`, 'Host: attacker.example'])).status).toBe(200);
  });

  it('a browser Origin is 403 ORIGIN_FORBIDDEN before the body is read, and nothing reaches the agent', async () => {
    const before = agentCommands(vm).length;
    // the body is announced but never sent: an answer proves the check ran before reading it
    const r = await exchange(['POST /v1/vms/s1/ping HTTP/1.1', `Host: 127.0.0.1:${port}`, 'Origin: http://evil.example', 'Content-Type: application/json', 'Content-Length: 1000']);
    expect(r.status).toBe(403);
    expect(r.text).toContain('"code":"ORIGIN_FORBIDDEN"');
    expect(agentCommands(vm).slice(before)).toEqual([]);
    // a request without Origin (curl, scripts) is not affected
    expect((await exchange(['GET /v1/vms/s1/ping HTTP/1.1', `Host: 127.0.0.1:${port}`])).status).toBe(200);
  });

  it('allowedOrigins admits a configured origin; a wildcard bind without allowedHosts takes any Host', async () => {
    const c = buildConfig({ log: { level: 'silent' }, server: { allowedOrigins: ['https://ops.example'] } }, {}, 'origins');
    const withOrigin = await buildApp({ config: c, logger: pino({ level: 'silent' }), env: {} });
    try {
      expect((await withOrigin.inject({ method: 'GET', url: '/healthz', headers: { origin: 'https://ops.example' } })).statusCode).toBe(200);
      expect((await withOrigin.inject({ method: 'GET', url: '/healthz', headers: { origin: 'https://other.example' } })).statusCode).toBe(403);
    } finally {
      await withOrigin.close();
    }
    const tokens = [{ name: 'ops', token: 'x'.repeat(32), scopes: ['read' as const] }];
    expect(allowedHostNames(buildConfig({ server: { host: '0.0.0.0' }, auth: { tokens } }, {}, 'wild').server)).toBeUndefined();
    // the loopback names stay: the image's HEALTHCHECK probes 127.0.0.1 whatever names a proxy needs
    expect(allowedHostNames(buildConfig({ server: { host: '0.0.0.0', allowedHosts: ['gw.example'] }, auth: { tokens } }, {}, 'wild').server)).toEqual(new Set(['gw.example', 'localhost', '127.0.0.1', '::1']));
  });

  it('the host of cluster.advertiseUrl is always an allowed Host, beside server.allowedHosts', async () => {
    const c = buildConfig(
      { log: { level: 'silent' }, server: { allowedHosts: ['gw.example'] }, cluster: { advertiseUrl: 'https://Node1.Example:8443' } },
      {},
      'advertise',
    );
    const app = await buildApp({ config: c, logger: pino({ level: 'silent' }), env: {} });
    try {
      const status = async (host: string) => (await app.inject({ method: 'GET', url: '/healthz', headers: { host } })).statusCode;
      expect(await status('node1.example:8443')).toBe(200);
      expect(await status('gw.example')).toBe(200);
      expect(await status('node2.example:8443')).toBe(421);
      expect(await status('evil.example')).toBe(421);
      // loopback names always (local probes such as the Docker HEALTHCHECK; a rebinding page sends its own name)
      for (const h of ['localhost', '127.0.0.1:8080', '[::1]:8080']) expect(await status(h), h).toBe(200);
    } finally {
      await app.close();
    }
    expect(() => buildConfig({ cluster: { advertiseUrl: 'node1.example:8443' } }, {}, 'bad-advertise')).toThrow(/cluster\.advertiseUrl/);
  });
});
