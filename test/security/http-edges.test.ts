/**
 * Issue 12, item 12 — edges an outside schema fuzzer found: every error raised below the routes is
 * problem+json with a stable code, a VM with the longest legal name stays reachable (and
 * removable), a JSON null is not an object, a known path with another method is a 405.
 */
import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { listen } from '../helpers/app.js';
import { agentCommands, expectProblem, makeRoutesApp, startSim, type SimFleet } from '../integration/routes-support.js';

let fleet: SimFleet;
let vm: SimAgent;
let app: FastifyInstance;
let base: URL;

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'edge' });
  app = await makeRoutesApp({ vms: [{ name: 'edge', endpoint: vm.endpoint }], config: { registry: { allowApiRegistration: true } } });
  base = new URL(await listen(app));
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

/** One raw HTTP exchange on a fresh socket: what the server wrote before it closed. */
function rawExchange(request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: base.hostname, port: Number(base.port) }, () => s.write(request));
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.setTimeout(5_000, () => s.destroy(new Error('no answer within 5 s')));
  });
}

function problemOf(response: string): { status: number; type: string; body: Record<string, unknown> } {
  const [head, body] = response.split('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
  const type = /content-type: ([^\r\n]+)/i.exec(head)?.[1] ?? '';
  return { status, type, body: JSON.parse(body) as Record<string, unknown> };
}

describe('HTTP edges', () => {
  it('the raw passthrough answers with a JSON content type', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/vms/edge/qga/guest-ping', payload: {} });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
  });

  it('a VM with a 128-character name can be registered, reached and deleted', async () => {
    const name = `v${'x'.repeat(127)}`;
    const other = await fleet.add({ name: 'edge-long' });
    const reg = await app.inject({ method: 'POST', url: '/v1/vms', payload: { name, endpoint: other.endpoint } });
    expect(reg.statusCode).toBe(201);
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${name}` })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: `/v1/vms/${name}/ping` })).statusCode).toBe(200);
    expect((await app.inject({ method: 'DELETE', url: `/v1/vms/${name}` })).statusCode).toBe(204);
    await expectProblem(app, { method: 'GET', url: `/v1/vms/${name}` }, 404, 'VM_NOT_FOUND');
  });

  it('labels are bounded: at most 64, keys of 1–128 characters without control characters or "=" (the filter label=k=v could never match one), values of at most 256; 400 beyond, nothing registered', async () => {
    const other = await fleet.add({ name: 'edge-labels' });
    const labels = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
    const register = (l: Record<string, string>) => app.inject({ method: 'POST', url: '/v1/vms', payload: { name: 'labelled', endpoint: other.endpoint, labels: l } });
    for (const bad of [labels(65), { ['k'.repeat(129)]: 'v' }, { '': 'v' }, { 'a\u0001b': 'v' }, { 'a=b': 'v' }, { k: 'v'.repeat(257) }]) {
      const r = await register(bad);
      expect(r.statusCode, JSON.stringify(Object.keys(bad).slice(0, 2))).toBe(400);
      expect(r.json()).toMatchObject({ code: 'VALIDATION_FAILED' });
    }
    await expectProblem(app, { method: 'GET', url: '/v1/vms/labelled' }, 404, 'VM_NOT_FOUND');
    const ok = await register({ ...labels(63), ['k'.repeat(128)]: 'v'.repeat(256) });
    expect(ok.statusCode).toBe(201);
    expect(Object.keys((await app.inject({ method: 'GET', url: '/v1/vms/labelled' })).json().labels)).toHaveLength(64);
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/labelled' })).statusCode).toBe(204);
  });

  it('numbers in the path and the query string are decimal digits: 0x10, 1e1, +5, " 5", 5.0 are 400 naming the parameter, never read as numbers', async () => {
    for (const bad of ['0x10', '1e1', '%2B5', '%205', '5.0', '0b11']) {
      const r = await app.inject({ method: 'GET', url: `/v1/vms?limit=${bad}` });
      expect(r.statusCode, bad).toBe(400);
      expect(r.json()).toMatchObject({ code: 'VALIDATION_FAILED', detail: expect.stringMatching(/^querystring\.limit must be a whole number in decimal digits/) });
      // a path parameter too: the pid of an exec
      const p = await app.inject({ method: 'GET', url: `/v1/vms/edge/exec/${bad}` });
      expect(p.statusCode, `pid ${bad}`).toBe(400);
      expect(p.json().detail).toMatch(/^params\.pid must be a whole number in decimal digits/);
    }
    expect((await app.inject({ method: 'GET', url: '/v1/vms?limit=5' })).statusCode).toBe(200);
    expect(agentCommands(vm).filter((c) => c === 'guest-exec-status')).toEqual([]);
  });

  it('a body in a content coding (gzip…) is 415 before it is read, never parsed or written as the compressed bytes; identity passes', async () => {
    const before = agentCommands(vm).length;
    for (const coding of ['gzip', 'br', 'deflate, gzip']) {
      const r = await app.inject({ method: 'POST', url: '/v1/vms/edge/qga/guest-ping', payload: '{}', headers: { 'content-type': 'application/json', 'content-encoding': coding } });
      expect(r.statusCode, coding).toBe(415);
      expect(r.json()).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE', acceptEncoding: ['identity'] });
      expect(r.json().detail).toContain(`Content-Encoding: ${coding}`);
    }
    const upload = await app.inject({ method: 'PUT', url: '/v1/vms/edge/files/content?path=/tmp/x', payload: Buffer.from([0x1f, 0x8b, 8, 0]), headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' } });
    expect(upload.statusCode).toBe(415);
    expect(agentCommands(vm).slice(before)).toEqual([]);
    const plain = await app.inject({ method: 'POST', url: '/v1/vms/edge/qga/guest-ping', payload: '{}', headers: { 'content-type': 'application/json', 'content-encoding': 'identity' } });
    expect(plain.statusCode).toBe(200);
    // no body, nothing to decode
    expect((await app.inject({ method: 'GET', url: '/v1/vms/edge/ping', headers: { 'content-encoding': 'gzip' } })).statusCode).toBe(200);
  });

  it('a NUL in a guest file path or in an exec path, argument or environment entry is 400, and nothing reaches the agent', async () => {
    const before = agentCommands(vm).length;
    const bad = [
      app.inject({ method: 'GET', url: '/v1/vms/edge/files/content?path=/tmp/a%00.txt' }),
      app.inject({ method: 'PUT', url: '/v1/vms/edge/files/content?path=%00', payload: Buffer.from('x'), headers: { 'content-type': 'application/octet-stream' } }),
      app.inject({ method: 'POST', url: '/v1/vms/edge/files/handles', payload: { path: '\u0000' } }),
      app.inject({ method: 'POST', url: '/v1/vms/edge/exec', payload: { path: '/bin/echo\u0000' } }),
      app.inject({ method: 'POST', url: '/v1/vms/edge/exec', payload: { path: '/bin/echo', arg: ['a\u0000b'] } }),
      app.inject({ method: 'POST', url: '/v1/vms/edge/exec', payload: { path: '/bin/echo', env: ['A=\u0000'] } }),
    ];
    for (const r of await Promise.all(bad)) {
      expect(r.statusCode, r.body).toBe(400);
      expect(r.json()).toMatchObject({ code: 'VALIDATION_FAILED' });
    }
    expect(agentCommands(vm).slice(before)).toEqual([]);
    // an empty argument is still an argument
    expect((await app.inject({ method: 'POST', url: '/v1/vms/edge/exec', payload: { path: '/bin/echo', arg: [''], wait: 5 } })).statusCode).toBe(200);
  });

  it('an upload sent as a multipart form (curl -F) is 415 before the file is touched; any other type, or none, is the bytes', async () => {
    const before = agentCommands(vm).length;
    for (const type of ['multipart/form-data; boundary=x', 'Multipart/Mixed; boundary=y']) {
      const r = await app.inject({ method: 'PUT', url: '/v1/vms/edge/files/content?path=/tmp/typed', payload: Buffer.from('--x\r\n'), headers: { 'content-type': type } });
      expect(r.statusCode, type).toBe(415);
      expect(r.json()).toMatchObject({ code: 'UNSUPPORTED_MEDIA_TYPE', accept: ['application/octet-stream'] });
    }
    expect(agentCommands(vm).slice(before)).toEqual([]);
    // curl --data-binary sends application/x-www-form-urlencoded with the raw bytes
    for (const headers of [{}, { 'content-type': 'Application/Octet-Stream; charset=binary' }, { 'content-type': 'application/x-www-form-urlencoded' }, { 'content-type': 'text/plain' }]) {
      const ok = await app.inject({ method: 'PUT', url: '/v1/vms/edge/files/content?path=/tmp/typed', payload: Buffer.from('bytes'), headers });
      expect(ok.statusCode, JSON.stringify(headers)).toBe(200);
    }
  });

  it('a path parameter over the limit is 414 URI_TOO_LONG as problem+json', async () => {
    await expectProblem(app, { method: 'GET', url: `/v1/vms/${'y'.repeat(300)}` }, 414, 'URI_TOO_LONG');
  });

  it('a JSON null body is not an object: 400, and nothing reaches the agent', async () => {
    const before = agentCommands(vm).length;
    const headers = { 'content-type': 'application/json' };
    await expectProblem(app, { method: 'POST', url: '/v1/vms/edge/shutdown', headers, payload: 'null' }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'POST', url: '/v1/vms/edge/fstrim', headers, payload: 'null' }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'POST', url: '/v1/vms/edge/qga/guest-ping', headers, payload: 'null' }, 400, 'VALIDATION_FAILED');
    expect(agentCommands(vm).slice(before)).toEqual([]);
    // an omitted body still means "no arguments"
    expect((await app.inject({ method: 'POST', url: '/v1/vms/edge/qga/guest-ping' })).statusCode).toBe(200);
  });

  it('a known path with a method it does not serve is 405 METHOD_NOT_ALLOWED with Allow', async () => {
    const r = await app.inject({ method: 'PUT', url: '/v1/vms/edge/ping' });
    expect(r.statusCode).toBe(405);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(r.json()).toMatchObject({ code: 'METHOD_NOT_ALLOWED', allow: ['GET', 'HEAD'] });
    expect(r.headers.allow).toBe('GET, HEAD');
    const listing = await app.inject({ method: 'PATCH', url: '/v1/vms' });
    expect(listing.statusCode).toBe(405);
    expect(String(listing.headers.allow).split(', ')).toEqual(['GET', 'HEAD', 'POST']);
    await expectProblem(app, { method: 'GET', url: '/v1/no-such-thing' }, 404, 'NOT_FOUND');
  });

  it('a request line over the server limit (a URL too long) is 414 URI_TOO_LONG as problem+json, sent whole or without its end', async () => {
    const url = `/v1/vms?label=${'a'.repeat(20 * 1024)}`;
    for (const request of [`GET ${url} HTTP/1.1\r\nHost: x\r\n\r\n`, `GET ${url}`]) {
      const res = problemOf(await rawExchange(request));
      expect(res.status).toBe(414);
      expect(res.type).toMatch(/^application\/problem\+json/);
      expect(res.body).toMatchObject({ code: 'URI_TOO_LONG', status: 414 });
    }
  });

  it('headers over the server limit are 431 HEADERS_TOO_LARGE as problem+json', async () => {
    const res = problemOf(await rawExchange(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`));
    expect(res.status).toBe(431);
    expect(res.type).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({ code: 'HEADERS_TOO_LARGE', status: 431 });
  });

  it('a malformed request is 400 VALIDATION_FAILED as problem+json', async () => {
    const res = problemOf(await rawExchange('GARBAGE\r\n\r\n'));
    expect(res.status).toBe(400);
    expect(res.type).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({ code: 'VALIDATION_FAILED', status: 400 });
  });
});
