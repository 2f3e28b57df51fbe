/**
 * Issue 16, item 6: answers that do not mislead. Every 4xx carries a `detail` that says what is
 * wrong and what to change (the field, the limit, the content type to send, where to look), and
 * three answers that used to mislead: exec with a `wait` that runs out (202 with `exited: false`
 * and the pid), a 415 that names the content type expected, and the ssh keys of a user without
 * authorized_keys (200, an empty list). Simulator only.
 */
import type { FastifyInstance, InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

const TOKEN = 'reader-token-0123456789abcdef';
const JSON_CT = { 'content-type': 'application/json' };

let fleet: SimFleet;
let vm: SimAgent;
let app: FastifyInstance;
let authApp: FastifyInstance;

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'pd' });
  app = await makeRoutesApp({ vms: [{ name: 'pd', endpoint: vm.endpoint }], config: { exec: { maxWaitSeconds: 5 } } });
  authApp = await makeRoutesApp({
    vms: [{ name: 'pd', endpoint: vm.endpoint }],
    config: { auth: { anonymousScopes: [], tokens: [{ name: 'reader', token: TOKEN, scopes: ['read'] }] } },
  });
}, 60_000);

afterAll(async () => {
  await app?.close();
  await authApp?.close();
  await fleet?.close();
});

interface Case {
  name: string;
  req: { method: string; url: string; headers?: Record<string, string>; payload?: string };
  status: number;
  code: string;
  /** what the detail must say: the field, the limit, the remedy */
  detail: RegExp;
  auth?: boolean;
}

const CASES: Case[] = [
  { name: 'text body', req: { method: 'PUT', url: '/v1/vms/pd/time', headers: { 'content-type': 'text/plain' }, payload: 'now' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', detail: /"text\/plain".*send it with Content-Type: application\/json/ },
  { name: 'xml body where none is taken', req: { method: 'POST', url: '/v1/vms/pd/agent/sync', headers: { 'content-type': 'application/xml' }, payload: '<a/>' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', detail: /"application\/xml".*Content-Type: application\/json/ },
  { name: 'xml body', req: { method: 'POST', url: '/v1/vms/pd/fstrim', headers: { 'content-type': 'application/xml' }, payload: '<a/>' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', detail: /Content-Type: application\/json/ },
  { name: 'int64 overflow', req: { method: 'PUT', url: '/v1/vms/pd/time', headers: JSON_CT, payload: '{"time": 9223372036854775808}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.time must be at most 9223372036854775807 \(a signed 64-bit integer\)$/ },
  { name: 'int64 overflow (fstrim)', req: { method: 'POST', url: '/v1/vms/pd/fstrim', headers: JSON_CT, payload: '{"minimum": 18446744073709551616}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.minimum must be at most 9223372036854775807/ },
  { name: 'uint64 overflow (memory block)', req: { method: 'PATCH', url: '/v1/vms/pd/memory/blocks', headers: JSON_CT, payload: '{"mem-blks": [{"phys-index": 18446744073709551616, "online": true}]}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.mem-blks\.0\.phys-index must be at most 18446744073709551615 \(an unsigned 64-bit integer\)$/ },
  { name: 'int64 overflow (vcpus)', req: { method: 'PATCH', url: '/v1/vms/pd/vcpus', headers: JSON_CT, payload: '{"vcpus": [{"logical-id": 9223372036854775808, "online": true}]}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.vcpus\.0\.logical-id must be at most 9223372036854775807 \(a signed 64-bit integer\)$/ },
  { name: 'upload offset beyond 2^53', req: { method: 'PUT', url: '/v1/vms/pd/files/content?path=/tmp/x&offset=9223372036854775808', headers: { 'content-type': 'application/octet-stream' }, payload: 'x' }, status: 400, code: 'VALIDATION_FAILED', detail: /^querystring\.offset must be <= 9007199254740991$/ },
  { name: 'negative time', req: { method: 'PUT', url: '/v1/vms/pd/time', headers: JSON_CT, payload: '{"time": -1}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.time must be >= 0$/ },
  { name: 'time with useHostClock', req: { method: 'PUT', url: '/v1/vms/pd/time', headers: JSON_CT, payload: '{"time": 5, "useHostClock": true}' }, status: 400, code: 'VALIDATION_FAILED', detail: /not have both time and useHostClock/ },
  { name: 'invalid base64 stdin', req: { method: 'POST', url: '/v1/vms/pd/exec', headers: JSON_CT, payload: '{"path": "/bin/true", "input-data": "!!!"}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.input-data must be base64/ },
  { name: 'stdin given twice', req: { method: 'POST', url: '/v1/vms/pd/exec', headers: JSON_CT, payload: '{"path": "/bin/true", "input-data": "aGk=", "inputText": "hi"}' }, status: 400, code: 'VALIDATION_FAILED', detail: /not have both input-data and inputText/ },
  { name: 'exec wait over the maximum', req: { method: 'POST', url: '/v1/vms/pd/exec', headers: JSON_CT, payload: '{"path": "/bin/true", "wait": 60}' }, status: 400, code: 'VALIDATION_FAILED', detail: /maximum of 5 s \(exec\.maxWaitSeconds\)/ },
  { name: 'invalid base64 write', req: { method: 'POST', url: '/v1/vms/pd/files/handles/1/write', headers: JSON_CT, payload: '{"buf-b64": "@@@"}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.buf-b64 must be base64/ },
  { name: 'query not UTF-8 percent-encoding', req: { method: 'GET', url: '/v1/vms/pd/files/content?path=/tmp/%C3%28' }, status: 400, code: 'VALIDATION_FAILED', detail: /^querystring\/path is not valid percent-encoding of UTF-8 text/ },
  { name: 'query with a lone %', req: { method: 'GET', url: '/v1/vms/pd/files/content?path=/tmp/100%' }, status: 400, code: 'VALIDATION_FAILED', detail: /^querystring\/path is not valid percent-encoding/ },
  { name: 'write count over the buffer', req: { method: 'POST', url: '/v1/vms/pd/files/handles/1/write', headers: JSON_CT, payload: '{"buf-b64": "aGk=", "count": 99}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^count 99 is more than the 2 bytes of buf-b64$/ },
  { name: 'file open mode', req: { method: 'POST', url: '/v1/vms/pd/files/handles', headers: JSON_CT, payload: '{"path": "/tmp/x", "mode": "rw"}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.mode must be one of "r", .*"a\+b"$/ },
  { name: 'seek offset beyond 2^53', req: { method: 'POST', url: '/v1/vms/pd/files/handles/1/seek', headers: JSON_CT, payload: '{"offset": 9223372036854775808, "whence": "set"}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.offset must be <= 9007199254740991$/ },
  { name: 'unknown member', req: { method: 'PUT', url: '/v1/vms/pd/time', headers: JSON_CT, payload: '{"tme": 1}' }, status: 400, code: 'VALIDATION_FAILED', detail: /^body\.tme is not allowed \(did you mean time\?\); accepted: time, useHostClock$/ },
  { name: 'invalid JSON', req: { method: 'PUT', url: '/v1/vms/pd/time', headers: JSON_CT, payload: '{"time": ' }, status: 400, code: 'VALIDATION_FAILED', detail: /^the body is not valid JSON/ },
  { name: 'pid not a number', req: { method: 'GET', url: '/v1/vms/pd/exec/abc' }, status: 400, code: 'VALIDATION_FAILED', detail: /^params\.pid must be a whole number in decimal digits/ },
  { name: 'unknown VM', req: { method: 'GET', url: '/v1/vms/nope/time' }, status: 404, code: 'VM_NOT_FOUND', detail: /VM "nope" is not registered: GET \/v1\/vms lists/ },
  // not an empty list: a typo in a VM name must not look like "no handles open"
  { name: 'file handles of an unknown VM', req: { method: 'GET', url: '/v1/vms/nope/files/handles' }, status: 404, code: 'VM_NOT_FOUND', detail: /VM "nope" is not registered/ },
  { name: 'unknown route', req: { method: 'GET', url: '/v1/nothing' }, status: 404, code: 'NOT_FOUND', detail: /no route GET \/v1\/nothing: \/openapi\.json lists the routes/ },
  { name: 'wrong method', req: { method: 'DELETE', url: '/v1/vms/pd/time' }, status: 405, code: 'METHOD_NOT_ALLOWED', detail: /does not take DELETE; it takes GET, HEAD, PUT/ },
  { name: 'trailing slash', req: { method: 'GET', url: '/v1/vms/pd/time/' }, status: 404, code: 'NOT_FOUND', detail: /no route GET \/v1\/vms\/pd\/time\/: \/openapi\.json lists the routes/ },
  { name: 'unknown lease', req: { method: 'DELETE', url: '/v1/vms/pd/fsfreeze?leaseId=nope' }, status: 409, code: 'LEASE_CONFLICT', detail: /no lease nope/ },
  { name: 'raw freeze', req: { method: 'POST', url: '/v1/vms/pd/qga/guest-fsfreeze-freeze', headers: JSON_CT, payload: '{}' }, status: 409, code: 'USE_FREEZE_API', detail: /go through POST\/DELETE \/v1\/vms\/pd\/fsfreeze/ },
  { name: 'range outside the file', req: { method: 'GET', url: '/v1/vms/pd/files/content?path=/etc/hostname', headers: { range: 'bytes=99999-' } }, status: 416, code: 'RANGE_NOT_SATISFIABLE', detail: /outside the file \(\d+ bytes\)/ },
  { name: 'VM name too long', req: { method: 'GET', url: `/v1/vms/${'a'.repeat(300)}` }, status: 414, code: 'URI_TOO_LONG', detail: /256 characters/ },
  { name: 'no token', auth: true, req: { method: 'GET', url: '/metrics' }, status: 401, code: 'UNAUTHENTICATED', detail: /send one of the tokens configured in auth\.tokens/ },
  { name: 'unknown token', auth: true, req: { method: 'GET', url: '/v1/vms/pd/time', headers: { authorization: 'Bearer not-a-token-at-all-000' } }, status: 401, code: 'UNAUTHENTICATED', detail: /unknown bearer token: send one of the tokens/ },
  { name: 'missing scope', auth: true, req: { method: 'PUT', url: '/v1/vms/pd/time', headers: { authorization: `Bearer ${TOKEN}`, ...JSON_CT }, payload: '{}' }, status: 403, code: 'FORBIDDEN', detail: /needs the "write" scope/ },
];

describe('4xx answers say what to change', () => {
  it.each(CASES)('$name → $status $code with a specific detail', async (c) => {
    const res = await (c.auth ? authApp : app).inject(c.req as InjectOptions);
    const problem = res.json<{ status: number; code: string; detail: string }>();
    expect([res.statusCode, problem.code, problem.status]).toEqual([c.status, c.code, c.status]);
    expect(String(res.headers['content-type'])).toMatch(/^application\/problem\+json/);
    expect(problem.detail).toMatch(c.detail);
  });

  it('every detail is specific: no bare framework phrases', async () => {
    for (const c of CASES) {
      const res = await (c.auth ? authApp : app).inject(c.req as InjectOptions);
      const { detail } = res.json<{ detail: string }>();
      expect(detail.length, c.name).toBeGreaterThan(20);
      expect(detail, c.name).not.toMatch(/^(Unsupported Media Type|Bad Request|Not Found|must NOT be valid)$/);
    }
  });
});

describe('errors[] of a 64-bit bound: the exact limit, not its double', () => {
  it.each([
    ['PUT', '/v1/vms/pd/time', '{"time": 9223372036854775808}', '/time', '<=', '9223372036854775807'],
    ['PATCH', '/v1/vms/pd/memory/blocks', '{"mem-blks": [{"phys-index": 18446744073709551616, "online": true}]}', '/mem-blks/0/phys-index', '<=', '18446744073709551615'],
  ])('%s %s', async (method, url, payload, path, comparison, limit) => {
    const res = await app.inject({ method: method as 'PUT', url, headers: JSON_CT, payload });
    const problem = res.json<{ errors: Array<{ path: string; message: string; params: Record<string, unknown> }> }>();
    expect(res.statusCode).toBe(400);
    const e = problem.errors.find((x) => x.path === path);
    expect(e).toMatchObject({ message: `must be ${comparison} ${limit}`, params: { comparison, limit } });
    // the doubles a plain JSON number would have said
    expect(res.body).not.toMatch(/9223372036854776000|18446744073709552000/);
  });
});

describe('freeze ttlSeconds out of range: always the configured bound (freeze.maxTtlSeconds, default 3600)', () => {
  const RANGE = 'body.ttlSeconds must be a whole number from 1 to 3600 (freeze.maxTtlSeconds)';
  const routes: Array<[string, string, (ttl: number) => unknown]> = [
    ['freeze', '/v1/vms/pd/fsfreeze', (ttl) => ({ ttlSeconds: ttl })],
    ['renew', '/v1/vms/pd/fsfreeze/renew', (ttl) => ({ leaseId: 'nope', ttlSeconds: ttl })],
    ['group freeze', '/v1/freeze-groups', (ttl) => ({ vms: ['pd'], ttlSeconds: ttl })],
  ];
  it.each(routes)('%s: 999999 (past the schema cap), 5000 (past the configured one) and 0 give the same 400', async (_name, url, body) => {
    for (const ttl of [999_999, 5_000, 0]) {
      const res = await app.inject({ method: 'POST', url, headers: JSON_CT, payload: JSON.stringify(body(ttl)) });
      const problem = res.json<{ code: string; detail: string; maxTtlSeconds: number }>();
      expect([res.statusCode, problem.code, problem.detail, problem.maxTtlSeconds], `ttlSeconds ${ttl}`).toEqual([400, 'VALIDATION_FAILED', RANGE, 3600]);
    }
    // nothing was frozen by any of them
    expect((await app.inject({ method: 'GET', url: '/v1/vms/pd/fsfreeze' })).json<{ status: string }>().status).toBe('thawed');
  });

  it('another configured value is the one named', async () => {
    const other = await makeRoutesApp({ vms: [{ name: 'pd', endpoint: vm.endpoint }], config: { freeze: { maxTtlSeconds: 600 } } });
    try {
      for (const ttl of [999_999, 601]) {
        const res = await other.inject({ method: 'POST', url: '/v1/vms/pd/fsfreeze', headers: JSON_CT, payload: JSON.stringify({ ttlSeconds: ttl }) });
        expect([res.statusCode, res.json<{ detail: string }>().detail]).toEqual([400, 'body.ttlSeconds must be a whole number from 1 to 600 (freeze.maxTtlSeconds)']);
      }
    } finally {
      await other.close();
    }
  });

  it('exec wait below 0 names the configured range too', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/vms/pd/exec', headers: JSON_CT, payload: '{"path": "/bin/true", "wait": -1}' });
    expect([res.statusCode, res.json<{ detail: string }>().detail]).toEqual([400, 'body.wait must be a number from 0 to 5 (exec.maxWaitSeconds)']);
  });
});

describe('validation details name what is accepted', () => {
  const post = async (url: string, payload: string) => {
    const res = await app.inject({ method: 'POST', url, headers: JSON_CT, payload });
    return { status: res.statusCode, ...res.json<{ code: string; detail: string }>() };
  };
  it('an unknown member names the closest accepted one and lists them', async () => {
    const r = await post('/v1/vms/pd/exec', '{"path": "/bin/true", "args": ["-x"]}');
    expect([r.status, r.code]).toEqual([400, 'VALIDATION_FAILED']);
    expect(r.detail).toBe('body.args is not allowed (did you mean arg?); accepted: path, arg, env, input-data, inputText, capture-output, wait');
    const far = await post('/v1/vms/pd/exec', '{"path": "/bin/true", "zzzzzz": 1}');
    expect([far.status, far.detail]).toEqual([400, 'body.zzzzzz is not allowed; accepted: path, arg, env, input-data, inputText, capture-output, wait']);
  });
  it('a value of none of the accepted forms: one sentence listing them, no anyOf', async () => {
    const r = await post('/v1/vms/pd/exec', '{"path": "/bin/true", "capture-output": "both"}');
    expect([r.status, r.code]).toEqual([400, 'VALIDATION_FAILED']);
    expect(r.detail).toBe('body.capture-output must be one of true, false, "none", "stdout", "stderr", "separated", "merged"');
  });
  it('an unknown member with a huge name: the answer stays small', async () => {
    const res = await app.inject({ method: 'PUT', url: '/v1/vms/pd/time', headers: JSON_CT, payload: JSON.stringify({ ['k'.repeat(200_000)]: 1 }) });
    expect([res.statusCode, res.json<{ code: string }>().code]).toEqual([400, 'VALIDATION_FAILED']);
    expect(res.body.length).toBeLessThan(4_096);
    expect(res.json<{ detail: string }>().detail).toMatch(/^body\.k+… \[\d+ characters left out\] …k+ is not allowed; accepted: time, useHostClock$/);
  });
  it('an agent error that echoes a huge argument is cut to 1 KiB in detail and qga.desc, head and tail kept', async () => {
    const path = `/${'a'.repeat(1_999_999)}`;
    const res = await app.inject({ method: 'POST', url: '/v1/vms/pd/exec', headers: JSON_CT, payload: JSON.stringify({ path }) });
    const p = res.json<{ code: string; detail: string; qga: { class: string; desc: string } }>();
    expect([res.statusCode, p.code]).toEqual([422, 'AGENT_ERROR']);
    expect(res.body.length).toBeLessThan(4_096);
    expect(p.detail.length).toBeLessThanOrEqual(1024);
    expect(p.detail.length).toBeGreaterThan(1000);
    expect(p.detail).toMatch(/^Guest agent command failed, error was 'Failed to execute child process “\/a+… \[\d+ characters left out\] …a+”/);
    expect(p.detail).toMatch(/a” \(No such file or directory\)'$/);
    expect(p.qga.desc).toBe(p.detail);
  });
});

describe('answers that used to mislead', () => {
  it('exec whose wait runs out: 202 with exited: false, the pid and its Location', async () => {
    const t0 = Date.now();
    const res = await app.inject({ method: 'POST', url: '/v1/vms/pd/exec', headers: JSON_CT, payload: JSON.stringify({ path: '/bin/sleep', arg: ['30'], wait: 0.3 }) });
    const elapsed = Date.now() - t0;
    expect(res.statusCode).toBe(202);
    const body = res.json<{ pid: number; exited: boolean }>();
    expect(body).toEqual({ pid: expect.any(Number), exited: false });
    expect(res.headers.location).toBe(`/v1/vms/pd/exec/${body.pid}`);
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(5_000);
  });

  it('exec without wait: 202 with the pid only (nobody looked at the process yet)', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/vms/pd/exec', headers: JSON_CT, payload: JSON.stringify({ path: '/bin/true' }) });
    expect(res.statusCode).toBe(202);
    expect(Object.keys(res.json<object>())).toEqual(['pid']);
  });

  it('ssh keys of a user without authorized_keys: 200 and an empty list', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/vms/pd/users/root/ssh-keys' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ keys: [] });
  });
});
