/**
 * src/cluster/hop.ts (signed node-to-node calls) and the pure parts of src/cluster/forward.ts
 * (headers that cross, time bounds); cluster-forward.test.ts drives them end to end.
 */
import { describe, expect, it } from 'vitest';
import { FORWARD_CONTEXT, laneOf, outgoingHeaders, routeBound } from '../../src/cluster/forward.js';
import { ForwardAnswer, SMALL_ANSWER, WholeBody, type ForwardResponse } from '../../src/cluster/forward-answer.js';
import { HOP_HEADER, PRINCIPAL_HEADER, SIGNATURE_HEADER, signHop, verifyHop } from '../../src/cluster/hop.js';
import { makeApp, testConfig } from '../helpers/app.js';

const SECRET = 'a-shared-secret-of-at-least-32-characters';
const principal = { name: 'ops', scopes: ['read', 'write'], vms: ['web-*'] };

describe('hop signature', () => {
  it('verifies what it signed: entry node and principal with its globs', () => {
    const h = signHop(SECRET, { method: 'GET', url: '/v1/vms/web-1/ping', entryNode: 'node-a', principal, now: 1_000_000 });
    expect(Object.keys(h).sort()).toEqual([HOP_HEADER, PRINCIPAL_HEADER, SIGNATURE_HEADER].sort());
    expect(verifyHop(SECRET, h, 'GET', '/v1/vms/web-1/ping', 1_000_000)).toEqual({ entryNode: 'node-a', principal });
    expect(verifyHop(SECRET, h, 'get', '/v1/vms/web-1/ping', 1_059_999)?.entryNode).toBe('node-a');
  });

  it('refuses another secret, method, URL, node, principal, or a time outside ±60 s', () => {
    const h = signHop(SECRET, { method: 'POST', url: '/v1/vms/a/exec?x=1', entryNode: 'n1', principal, now: 5_000_000 });
    const ok = (headers: Record<string, string>, m = 'POST', u = '/v1/vms/a/exec?x=1', now = 5_000_000) => verifyHop(SECRET, headers, m, u, now) !== undefined;
    expect(ok(h)).toBe(true);
    expect(verifyHop(`${SECRET}x`, h, 'POST', '/v1/vms/a/exec?x=1', 5_000_000)).toBeUndefined();
    expect(ok(h, 'PUT')).toBe(false);
    expect(ok(h, 'POST', '/v1/vms/b/exec?x=1')).toBe(false);
    expect(ok({ ...h, [HOP_HEADER]: 'n2' })).toBe(false);
    const admin = Buffer.from(JSON.stringify({ name: 'ops', scopes: ['admin'] })).toString('base64url');
    expect(ok({ ...h, [PRINCIPAL_HEADER]: admin })).toBe(false);
    expect(ok(h, 'POST', '/v1/vms/a/exec?x=1', 5_060_001)).toBe(false);
    expect(ok(h, 'POST', '/v1/vms/a/exec?x=1', 4_939_999)).toBe(false);
    expect(ok({ ...h, [SIGNATURE_HEADER]: 'garbage' })).toBe(false);
    const { [SIGNATURE_HEADER]: _s, ...unsigned } = h;
    expect(ok(unsigned)).toBe(false);
  });

  it('refuses a validly signed principal of an unknown scope', () => {
    const h = signHop(SECRET, { method: 'GET', url: '/x', entryNode: 'n', principal: { name: 'p', scopes: ['root'] }, now: 1 });
    expect(verifyHop(SECRET, h, 'GET', '/x', 1)).toBeUndefined();
  });
});

describe('forwarded headers', () => {
  it('the client credentials, Origin, hop-by-hop and client-made hop headers do not cross; the rest does', () => {
    const ctx = { signal: new AbortController().signal, headersTimeout: 1234 };
    const out = outgoingHeaders(
      {
        authorization: 'Bearer secret-token', 'proxy-authorization': 'x', connection: 'keep-alive', 'keep-alive': 'timeout=5', te: 'trailers', upgrade: 'h2c',
        expect: '100-continue', origin: 'http://ui.example', [HOP_HEADER]: 'forged', [PRINCIPAL_HEADER]: 'forged', [SIGNATURE_HEADER]: 'forged', 'x-qga-node': 'forged',
        'idempotency-key': 'k1', 'if-match': '"e"', range: 'bytes=0-9', 'content-type': 'application/json', 'content-length': '2', host: 'b:1', 'x-request-id': 'client',
      },
      { [HOP_HEADER]: 'A', [SIGNATURE_HEADER]: 'sig', [PRINCIPAL_HEADER]: 'p', 'x-request-id': 'req-1' },
      ctx,
    );
    const { [FORWARD_CONTEXT]: carried, ...plain } = out as Record<string | symbol, unknown>;
    expect(carried).toBe(ctx);
    expect(plain).toEqual({
      'idempotency-key': 'k1', 'if-match': '"e"', range: 'bytes=0-9', 'content-type': 'application/json', 'content-length': '2', host: 'b:1',
      'x-request-id': 'req-1', [HOP_HEADER]: 'A', [SIGNATURE_HEADER]: 'sig', [PRINCIPAL_HEADER]: 'p',
    });
    // the per-request context rides on a symbol key: it survives reply-from's Object.assign copy
    expect((Object.assign({}, out) as Record<symbol, unknown>)[FORWARD_CONTEXT]).toBe(ctx);
  });

  // what the dispatch handler hands reply-from for an answer as undici delivers it
  const answer = (method: string, raw: Array<[string, string]>, body: string[]) => {
    let got: ForwardResponse | undefined;
    const h = new ForwardAnswer(method, undefined, 'B', undefined, (err, res) => {
      expect(err).toBeNull();
      got = res;
    });
    h.onConnect(() => undefined);
    h.onHeaders(200, raw.flatMap(([k, v]) => [Buffer.from(k), Buffer.from(v)]), () => undefined);
    for (const chunk of body) h.onData(Buffer.from(chunk));
    h.onComplete();
    return got as ForwardResponse;
  };

  it('answers lose hop-by-hop headers and name the node when it did not', () => {
    const streamed = answer('GET', [['Connection', 'keep-alive'], ['Keep-Alive', 'timeout=72'], ['Transfer-Encoding', 'chunked'], ['Content-Range', 'bytes 0-9/10'], ['ETag', '"x"']], []);
    expect(streamed.headers).toEqual({
      'content-range': 'bytes 0-9/10',
      etag: '"x"',
      'x-qga-node': 'B',
    });
    expect(answer('GET', [['X-Qga-Node', 'C']], []).headers).toEqual({ 'x-qga-node': 'C' });
  });

  it('an answer read whole comes without Date, X-Request-Id (the entry node gives its own) and Content-Length (set from its bytes); a streamed one keeps its length', () => {
    const raw: Array<[string, string]> = [['X-Request-Id', 'r-1'], ['Content-Type', 'application/json'], ['X-Qga-Node', 'C'], ['Content-Length', '7'], ['Date', 'Mon, 07 Dec 2026 08:00:00 GMT'], ['Connection', 'keep-alive'], ['Keep-Alive', 'timeout=5']];
    const whole = answer('GET', raw, ['{"a"', ':1}']);
    expect(whole.headers).toEqual({ 'content-type': 'application/json', 'x-qga-node': 'C' });
    expect(whole.body).toBeInstanceOf(WholeBody);
    expect((whole.body as WholeBody).bytes.toString()).toBe('{"a":1}');
    const head = answer('HEAD', raw, []);
    expect(head.headers).toEqual({ 'content-type': 'application/json', 'x-qga-node': 'C', 'content-length': '7' });
    expect(head.body).not.toBeInstanceOf(WholeBody);
    const big = answer('GET', [['Content-Length', String(SMALL_ANSWER + 1)]], []);
    expect(big.headers).toEqual({ 'content-length': String(SMALL_ANSWER + 1), 'x-qga-node': 'B' });
    expect(big.body).not.toBeInstanceOf(WholeBody);
  });
});

describe('headers bound of a forwarded request', () => {
  const config = testConfig({ config: { cluster: { forwardTimeoutMs: 2_000 }, exec: { maxWaitSeconds: 100 }, agent: { waitMaxSeconds: 50 } } });
  const bound = (schema: Record<string, unknown>, params: Record<string, unknown> = {}, query: Record<string, unknown> = {}) => routeBound(schema as never, config)(params, query);
  const waitIn = (name: string, from: string, extra: Record<string, unknown> = {}) => ({ type: 'object', properties: { [name]: { type: 'number', 'x-max-from': from, ...extra } } });

  it('forwardTimeoutMs, or the longest agent timeout of the route when longer', () => {
    expect(bound({ 'x-qga-command': 'guest-ping' })).toBe(5_000); // agent.timeouts.fast
    expect(bound({ 'x-qga-command': ['guest-fsfreeze-freeze', 'guest-ping'] })).toBe(300_000);
    expect(bound({})).toBe(2_000);
    // raw passthrough: the command in the path
    expect(bound({ 'x-qga-command': 'guest-*' }, { command: 'guest-fstrim' })).toBe(600_000);
  });

  it('plus the wait: from the query (capped), or the configured maximum for a body member not read before forwarding', () => {
    const status = { 'x-qga-command': 'guest-exec-status', querystring: waitIn('wait', 'exec.maxWaitSeconds') };
    expect(bound(status, {}, { wait: '5' })).toBe(60_000 + 5_000);
    expect(bound(status, {}, { wait: '99999' })).toBe(60_000 + 100_000);
    expect(bound(status, {}, { wait: 'x' })).toBe(60_000);
    expect(bound(status)).toBe(60_000);
    expect(bound({ 'x-qga-command': 'guest-exec', body: waitIn('wait', 'exec.maxWaitSeconds') })).toBe(10_000 + 100_000);
    // GET /v1/vms/{vm}/wait: timeout defaults to 30
    const wait = { querystring: waitIn('timeout', 'agent.waitMaxSeconds', { default: 30 }) };
    expect(bound(wait)).toBe(2_000 + 30_000);
    expect(bound(wait, {}, { timeout: '45' })).toBe(2_000 + 45_000);
    expect(bound(wait, {}, { timeout: '600' })).toBe(2_000 + 50_000);
    // a ttl is no wait
    expect(bound({ body: waitIn('ttlSeconds', 'freeze.maxTtlSeconds') })).toBe(2_000);
  });
});

describe('the lane of a forwarded route', () => {
  it('thaws and renewals one lane, freezes another, status reads and everything else the pool', () => {
    expect(laneOf('DELETE', '/v1/vms/:vm/fsfreeze')).toBe('thaw');
    expect(laneOf('POST', '/v1/vms/:vm/fsfreeze/renew')).toBe('thaw');
    expect(laneOf('POST', '/v1/vms/:vm/fsfreeze')).toBe('freeze');
    expect(laneOf('GET', '/v1/vms/:vm/fsfreeze')).toBeUndefined();
    expect(laneOf('HEAD', '/v1/vms/:vm/fsfreeze')).toBeUndefined();
    expect(laneOf('GET', '/v1/vms/:vm/ping')).toBeUndefined();
    expect(laneOf('POST', '/v1/vms/:vm/exec')).toBeUndefined();
    expect(laneOf('POST', '/v1/vms/:vm/fsfreezer')).toBeUndefined();
  });
});

describe('a gateway not in cluster mode', () => {
  it('refuses any request carrying hop headers (401), even validly signed, and serves the same request without them', async () => {
    const app = await makeApp();
    try {
      const url = '/v1/vms';
      const signed = signHop(SECRET, { method: 'GET', url, entryNode: 'elsewhere', principal: { name: 'ops', scopes: ['read', 'write', 'admin'] } });
      const r = await app.inject({ method: 'GET', url, headers: signed });
      expect(r.statusCode).toBe(401);
      expect(r.json().code).toBe('UNAUTHENTICATED');
      expect((await app.inject({ method: 'GET', url, headers: { [HOP_HEADER]: 'x' } })).statusCode).toBe(401);
      expect((await app.inject({ method: 'GET', url })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });
});
