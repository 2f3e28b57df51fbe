/**
 * Request logging (issue 16 item 2), on a real gateway process (src/server.ts, its own logger) at
 * the default level `info`, over the simulator: one line per request with the fields people join
 * on, X-Request-Id accepted / generated / replaced and carried into the agent-call and audit lines,
 * scrapes not logged, rejections counted and their lines sampled, 401/403 audited, and the last
 * lines written out on SIGTERM (asynchronous log writes are flushed in the shutdown path).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { spawnGateway, type Gateway } from '../e2e/freeze-gateways.js';
import { startSim, type SimFleet } from './routes-support.js';

const TOKEN = 'request-log-token-0123456789';
const GENERATED = /^[0-9a-f]{8}-[0-9a-z]+$/;

let fleet: SimFleet;
let vm: SimAgent;
let dir: string;
let gw: Gateway;

type Line = Record<string, unknown>;

function lines(g: Gateway): Line[] {
  const out: Line[] = [];
  for (const l of g.log().split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as Line);
    } catch {
      // a line cut by the end of the buffer read so far
    }
  }
  return out;
}

/** wait (bounded) until the log has lines matching `pred` */
async function waitFor(g: Gateway, pred: (l: Line) => boolean, count = 1, ms = 5_000): Promise<Line[]> {
  const until = Date.now() + ms;
  for (;;) {
    const found = lines(g).filter(pred);
    if (found.length >= count || Date.now() > until) return found;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function send(method: string, url: string, opts: { id?: string; token?: string | null; json?: unknown } = {}): Promise<{ status: number; id: string | null }> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? TOKEN : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (opts.id !== undefined) headers['x-request-id'] = opts.id;
  let body: string | undefined;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const r = await fetch(gw.url + url, { method, headers, body, signal: AbortSignal.timeout(15_000) });
  await r.arrayBuffer();
  return { status: r.status, id: r.headers.get('x-request-id') };
}

beforeAll(async () => {
  fleet = await startSim();
  // guest-get-users disabled by the guest admin (qemu-ga -b): a 403 that is not an access denial
  vm = await fleet.add({ name: 'logvm', disabled: ['guest-get-users'] });
  dir = await mkdtemp(path.join(os.tmpdir(), 'qga-reqlog-'));
  gw = await spawnGateway('reqlog', dir, {
    log: { level: 'info' },
    auth: {
      tokens: [
        { name: 'ops', token: TOKEN, scopes: ['read', 'write', 'admin'] },
        { name: 'reader', token: 'request-log-reader-0123456789', scopes: ['read'] },
        { name: 'limited', token: 'request-log-limited-0123456789', scopes: ['read'], vms: ['logvm'] },
      ],
    },
    agent: { timeouts: { fast: 500 } },
    vms: [{ name: 'logvm', endpoint: vm.endpoint }],
  });
}, 90_000);

afterAll(async () => {
  await gw?.stop();
  await fleet?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('request log: one line per request (child process, level info)', () => {
  it('one line per request, when it ends, with method, route pattern, vm, status, ms, request id and principal', async () => {
    const r = await send('GET', '/v1/vms/logvm/ping');
    expect(r.status).toBe(200);
    expect(r.id).toMatch(GENERATED);
    const found = await waitFor(gw, (l) => l.requestId === r.id);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ level: 30, method: 'GET', route: '/v1/vms/:vm/ping', vm: 'logvm', status: 200, requestId: r.id, principal: 'ops' });
    expect(typeof found[0].ms).toBe('number');
    expect(found[0].ms as number).toBeGreaterThan(0);
    expect(found[0].ms as number).toBeLessThan(5_000);
    // Fastify's own "incoming request" / "request completed" pair is gone
    expect(lines(gw).filter((l) => l.msg === 'incoming request' || l.msg === 'request completed')).toEqual([]);
  });

  it('X-Request-Id: a valid one is echoed and logged, an invalid one replaced by a generated one, generated ones differ', async () => {
    const given = 'Abc-123:x.y_z';
    const a = await send('GET', '/v1/vms/logvm/ping', { id: given });
    expect(a.id).toBe(given);
    expect(await waitFor(gw, (l) => l.requestId === given)).toHaveLength(1);

    for (const bad of ['has space', 'x'.repeat(129), 'semi;colon', '']) {
      const b = await send('GET', '/v1/vms/logvm/ping', { id: bad });
      expect(b.status).toBe(200);
      expect(b.id).toMatch(GENERATED);
      expect(await waitFor(gw, (l) => l.requestId === b.id)).toHaveLength(1);
    }
    const max = 'm'.repeat(128);
    expect((await send('GET', '/v1/vms/logvm/ping', { id: max })).id).toBe(max);
    const c = await send('GET', '/v1/vms/logvm/ping');
    const d = await send('GET', '/v1/vms/logvm/ping');
    expect(c.id).toMatch(GENERATED);
    expect(d.id).toMatch(GENERATED);
    expect(c.id).not.toBe(d.id);
  });

  it('the request id is in the agent-call lines (an agent timeout) and in the answer', async () => {
    vm.setFault({ command: 'guest-ping', kind: 'no-reply' });
    try {
      const r = await send('GET', '/v1/vms/logvm/ping', { id: 'agent-timeout-1' });
      expect(r.status).toBe(504);
      expect(r.id).toBe('agent-timeout-1');
    } finally {
      vm.clearFaults();
    }
    const failed = await waitFor(gw, (l) => l.requestId === 'agent-timeout-1' && l.msg === 'request failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ level: 40, code: 'AGENT_TIMEOUT', vm: 'logvm', command: 'guest-ping' });
    const line = await waitFor(gw, (l) => l.requestId === 'agent-timeout-1' && l.route === '/v1/vms/:vm/ping');
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({ status: 504 });
  });

  it('the request id is in the audit records of a mutating agent call', async () => {
    const r = await send('POST', '/v1/vms/logvm/qga/guest-set-user-password', { id: 'audit-raw-1', json: { username: 'root', password: 'cGFzcw==', crypted: false } });
    expect(r.status).toBe(200);
    const audit = await waitFor(gw, (l) => l.audit === true && l.requestId === 'audit-raw-1');
    expect(audit.length).toBeGreaterThanOrEqual(1);
    for (const l of audit) expect(l).toMatchObject({ by: 'ops', vm: 'logvm' });
    expect(await waitFor(gw, (l) => l.requestId === 'audit-raw-1' && l.route === '/v1/vms/:vm/qga/:command')).toHaveLength(1);
  });

  it('the request id is in the raw passthrough audit record and the freeze / thaw / forced thaw lines; an automatic thaw has none', { timeout: 20_000 }, async () => {
    const call = async (method: string, url: string, id: string, json?: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
      const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}`, 'x-request-id': id };
      if (json !== undefined) headers['content-type'] = 'application/json';
      const r = await fetch(gw.url + url, { method, headers, body: json === undefined ? undefined : JSON.stringify(json), signal: AbortSignal.timeout(15_000) });
      expect(r.headers.get('x-request-id')).toBe(id);
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    expect((await call('POST', '/v1/vms/logvm/qga/guest-get-time', 'rid-raw', {})).status).toBe(200);
    const f1 = await call('POST', '/v1/vms/logvm/fsfreeze', 'rid-freeze', { ttlSeconds: 60 });
    expect(f1.status).toBe(201);
    expect((await call('DELETE', `/v1/vms/logvm/fsfreeze?leaseId=${String(f1.body.leaseId)}`, 'rid-thaw')).status).toBe(200);
    expect((await call('POST', '/v1/vms/logvm/fsfreeze', 'rid-freeze-2', { ttlSeconds: 60 })).status).toBe(201);
    expect((await call('DELETE', '/v1/vms/logvm/fsfreeze?force=true', 'rid-force')).status).toBe(200);

    const one = async (pred: (l: Line) => boolean): Promise<Line> => {
      const found = await waitFor(gw, pred);
      expect(found).toHaveLength(1);
      return found[0];
    };
    expect(await one((l) => l.audit === true && l.action === 'raw' && l.command === 'guest-get-time')).toMatchObject({ level: 40, by: 'ops', vm: 'logvm', command: 'guest-get-time', requestId: 'rid-raw' });
    const frozen = await waitFor(gw, (l) => l.msg === 'frozen', 2);
    expect(frozen.map((l) => l.requestId)).toEqual(['rid-freeze', 'rid-freeze-2']);
    for (const l of frozen) expect(l).toMatchObject({ vms: ['logvm'], frozen: { logvm: f1.body.frozen } });
    const thawed = await waitFor(gw, (l) => l.msg === 'thawed', 2);
    expect(thawed.map((l) => [l.requestId, l.trigger])).toEqual([
      ['rid-thaw', 'caller'],
      ['rid-force', 'force'],
    ]);
    expect(await one((l) => l.audit === true && l.action === 'force-thaw')).toMatchObject({ level: 40, by: 'ops', vm: 'logvm', requestId: 'rid-force' });
    // the agent-command records of the same calls carry the same id
    const commands = lines(gw).filter((l) => l.action === 'agent-command' && typeof l.command === 'string' && l.command.startsWith('guest-fsfreeze-'));
    expect(commands.map((l) => `${String(l.phase)} ${String(l.command)} ${String(l.requestId)}`)).toEqual([
      'start guest-fsfreeze-freeze rid-freeze',
      'end guest-fsfreeze-freeze rid-freeze',
      'start guest-fsfreeze-thaw rid-thaw',
      'end guest-fsfreeze-thaw rid-thaw',
      'start guest-fsfreeze-freeze rid-freeze-2',
      'end guest-fsfreeze-freeze rid-freeze-2',
      'start guest-fsfreeze-thaw rid-force',
      'end guest-fsfreeze-thaw rid-force',
    ]);

    // the lease's deadline: the gateway's own thaw, no request id on any of its lines
    const f3 = await call('POST', '/v1/vms/logvm/fsfreeze', 'rid-freeze-3', { ttlSeconds: 1 });
    expect(f3.status).toBe(201);
    const t0 = performance.now();
    const auto = await one((l) => l.audit === true && l.action === 'auto_thaw');
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(auto).toMatchObject({ by: 'gateway', vm: 'logvm', leaseId: f3.body.leaseId, holder: 'ops' });
    expect(auto).not.toHaveProperty('requestId');
    const autoThawed = (await waitFor(gw, (l) => l.msg === 'thawed', 3))[2];
    expect(autoThawed).toMatchObject({ vm: 'logvm', trigger: 'local-timer' });
    expect(autoThawed).not.toHaveProperty('requestId');
    const autoCommands = lines(gw).filter((l) => l.action === 'agent-command' && l.command === 'guest-fsfreeze-thaw' && l.by === 'gateway');
    expect(autoCommands.map((l) => [l.phase, l.requestId])).toEqual([
      ['start', undefined],
      ['end', undefined],
    ]);
  });

  it('a freeze group: its frozen and thawed lines and its forced-thaw record carry the request id', async () => {
    const call = async (method: string, url: string, id: string, json?: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
      const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}`, 'x-request-id': id };
      if (json !== undefined) headers['content-type'] = 'application/json';
      const r = await fetch(gw.url + url, { method, headers, body: json === undefined ? undefined : JSON.stringify(json), signal: AbortSignal.timeout(15_000) });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    const g1 = await call('POST', '/v1/freeze-groups', 'rid-group', { vms: ['logvm'], ttlSeconds: 60 });
    expect(g1.status).toBe(201);
    expect((await call('DELETE', `/v1/freeze-groups/${String(g1.body.id)}?leaseId=${String(g1.body.leaseId)}`, 'rid-group-thaw')).status).toBe(200);
    const g2 = await call('POST', '/v1/freeze-groups', 'rid-group-2', { vms: ['logvm'], ttlSeconds: 60 });
    expect(g2.status).toBe(201);
    expect((await call('DELETE', `/v1/freeze-groups/${String(g2.body.id)}?force=true`, 'rid-group-force')).status).toBe(200);
    const ids = ['rid-group', 'rid-group-thaw', 'rid-group-2', 'rid-group-force'];
    const mine = await waitFor(gw, (l) => ids.includes(String(l.requestId)) && (l.msg === 'frozen' || l.msg === 'thawed' || l.action === 'force-thaw-group'), 5);
    expect(mine.map((l) => `${String(l.msg === 'frozen' || l.msg === 'thawed' ? l.msg : l.action)} ${String(l.requestId)}`)).toEqual([
      'frozen rid-group',
      'thawed rid-group-thaw',
      'frozen rid-group-2',
      'force-thaw-group rid-group-force',
      'thawed rid-group-force',
    ]);
    expect(mine[3]).toMatchObject({ audit: true, by: 'ops', group: g2.body.id });
  });

  it('a client that goes away before its answer still gets its one line: status 499, aborted, written when the connection closes', async () => {
    // a freeze whose client leaves while the agent takes its time (the freeze itself goes on)
    vm.setFault({ command: 'guest-fsfreeze-freeze', kind: 'delay', ms: 1_000, times: 1 });
    const id = 'abandoned-freeze-1';
    const ac = new AbortController();
    const gone = fetch(`${gw.url}/v1/vms/logvm/fsfreeze`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'x-request-id': id, 'content-type': 'application/json' },
      body: JSON.stringify({ ttlSeconds: 60 }),
      signal: ac.signal,
    }).catch(() => 'aborted');
    const sent = await waitFor(gw, (l) => l.requestId === id && l.command === 'guest-fsfreeze-freeze');
    expect(sent).toHaveLength(1);
    ac.abort();
    expect(await gone).toBe('aborted');
    const found = await waitFor(gw, (l) => l.requestId === id && l.route !== undefined);
    expect(found).toEqual([expect.objectContaining({ level: 30, method: 'POST', route: '/v1/vms/:vm/fsfreeze', vm: 'logvm', status: 499, aborted: true, principal: 'ops' })]);
    // the freeze went on without its client: its own line comes, and no second request line
    expect(await waitFor(gw, (l) => l.requestId === id && l.msg === 'frozen')).toHaveLength(1);
    expect(lines(gw).filter((l) => l.requestId === id && l.route !== undefined)).toHaveLength(1);
    // and it is in the metrics once, as 499 (a proxy giving up on long calls is visible there too)
    const text = await (await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    expect(text).toMatch(/^qga_http_request_duration_seconds_count\{method="POST",route="\/v1\/vms\/:vm\/fsfreeze",status="499"\} 1$/m);
    const thaw = await fetch(`${gw.url}/v1/vms/logvm/fsfreeze?force=true`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(15_000) });
    expect(thaw.status).toBe(200);
  });

  it('health and metrics scrapes are not logged at info', async () => {
    for (const p of ['/healthz', '/readyz', '/metrics']) expect((await send('GET', p, { id: `scrape${p.replace('/', '-')}` })).status).toBe(200);
    // a request after them: its line is written after theirs would have been
    const after = await send('GET', '/v1/vms/logvm/ping', { id: 'after-scrapes' });
    expect(await waitFor(gw, (l) => l.requestId === after.id)).toHaveLength(1);
    expect(lines(gw).filter((l) => typeof l.requestId === 'string' && l.requestId.startsWith('scrape-'))).toEqual([]);
  });

  it('401 and 403 are audit records, one per request, never sampled', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await send('GET', '/v1/vms', { id: `denied-401-${i}`, token: 'unknown-token-0123456789abcdef' });
      expect(r).toEqual({ status: 401, id: `denied-401-${i}` });
    }
    for (let i = 0; i < 3; i++) expect((await send('PUT', '/v1/vms/logvm/time', { id: `denied-403-${i}`, token: 'request-log-reader-0123456789', json: {} })).status).toBe(403);
    const d401 = await waitFor(gw, (l) => typeof l.requestId === 'string' && l.requestId.startsWith('denied-401-'), 3);
    const d403 = await waitFor(gw, (l) => typeof l.requestId === 'string' && l.requestId.startsWith('denied-403-'), 3);
    expect(d401).toHaveLength(3);
    expect(d403).toHaveLength(3);
    for (const l of d401) expect(l).toMatchObject({ level: 40, audit: true, action: 'denied', status: 401, by: 'anonymous', principal: 'anonymous' });
    for (const l of d403) expect(l).toMatchObject({ level: 40, audit: true, action: 'denied', status: 403, by: 'reader', vm: 'logvm', route: '/v1/vms/:vm/time' });
  });

  it('a refused scrape is audited and counted: /metrics without a token or with a wrong one (401), or with a token limited to some VMs (403: the metrics name every VM)', async () => {
    const before = { r401: await rejections('401'), r403: await rejections('403') };
    expect((await send('GET', '/metrics', { id: 'metrics-denied-1', token: null })).status).toBe(401);
    expect((await send('GET', '/metrics', { id: 'metrics-denied-2', token: 'unknown-token-0123456789abcdef' })).status).toBe(401);
    expect((await send('GET', '/metrics', { id: 'metrics-denied-3', token: 'request-log-limited-0123456789' })).status).toBe(403);
    const denied = await waitFor(gw, (l) => typeof l.requestId === 'string' && l.requestId.startsWith('metrics-denied-'), 3);
    expect(denied.map((l) => [l.status, l.by])).toEqual([
      [401, 'anonymous'],
      [401, 'anonymous'],
      [403, 'limited'],
    ]);
    for (const l of denied) expect(l).toMatchObject({ level: 40, audit: true, action: 'denied', route: '/metrics' });
    expect(await rejections('401')).toBe(before.r401 + 2);
    expect(await rejections('403')).toBe(before.r403 + 1);
  });

  it('a request refused by the router (a path parameter too long: 414) has its one line and its metric', async () => {
    const r = await send('GET', `/v1/vms/${'a'.repeat(3000)}`, { id: 'router-414' });
    expect(r.status).toBe(414);
    const lines414 = await waitFor(gw, (l) => l.requestId === 'router-414');
    expect(lines414).toHaveLength(1);
    expect(lines414[0]).toMatchObject({ status: 414, route: 'unmatched', method: 'GET' });
    const text = await (await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    expect(text).toMatch(/^qga_http_request_duration_seconds_count\{method="GET",route="unmatched",status="414"\} 1$/m);
  });

  it("a 403 COMMAND_DISABLED (the guest admin's choice) is an ordinary request line, not an access denial", async () => {
    const r = await send('GET', '/v1/vms/logvm/users', { id: 'disabled-1' });
    expect(r.status).toBe(403);
    const [line] = await waitFor(gw, (l) => l.requestId === 'disabled-1');
    expect(line).toMatchObject({ level: 30, status: 403, vm: 'logvm', route: '/v1/vms/:vm/users' });
    expect(line.audit).toBeUndefined();
    expect(line.action).toBeUndefined();
  });

  it('rejections are counted and sampled: 50 404s in under a second give one line, then one line with the 49 left out', async () => {
    const before = await rejections('404');
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) expect(await send('GET', `/v1/nothing-here-${i}`, { id: `nf-${i}` })).toEqual({ status: 404, id: `nf-${i}` });
    const burstMs = performance.now() - t0;
    expect(burstMs).toBeLessThan(1_000);
    const summary = await waitFor(gw, (l) => l.status === 404 && l.suppressed === 49 && l.requestId === undefined, 1, 3_000);
    const summaryAt = performance.now() - t0;
    expect(summary).toHaveLength(1);
    expect(summary[0]).toMatchObject({ level: 30, msg: '49 more 404 answers not logged in the last second' });
    expect(summaryAt).toBeGreaterThanOrEqual(900);
    expect(summaryAt).toBeLessThan(2_000);
    const logged = lines(gw).filter((l) => typeof l.requestId === 'string' && l.requestId.startsWith('nf-'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ requestId: 'nf-0', status: 404, route: 'unmatched', sampled: true, suppressed: 0 });
    expect((await rejections('404')) - before).toBe(50);
  });
});

async function rejections(code: string): Promise<number> {
  const r = await fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const text = await r.text();
  const m = new RegExp(`^qga_rejections_total\\{code="${code}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

describe('request log: flushed on SIGTERM; pretty output', () => {
  it('the lines of the last requests and of the shutdown are written out before the process exits', { timeout: 30_000 }, async () => {
    const g = await spawnGateway('reqlog-term', dir, { log: { level: 'info' }, vms: [{ name: 'logvm', endpoint: vm.endpoint }] });
    try {
      const ids = Array.from({ length: 20 }, (_, i) => `last-${i}`);
      await Promise.all(ids.map((id) => fetch(`${g.url}/v1/vms/logvm/ping`, { headers: { 'x-request-id': id } }).then((r) => r.arrayBuffer())));
      g.signal('SIGTERM');
      expect(await g.exit).toBe(0);
      const all = lines(g);
      expect(all.filter((l) => typeof l.requestId === 'string' && l.requestId.startsWith('last-')).map((l) => l.requestId).sort()).toEqual([...ids].sort());
      expect(all.filter((l) => l.msg === 'shutting down')).toHaveLength(1);
    } finally {
      await g.stop();
    }
  });

  it('log.pretty: true writes one readable line per request instead of JSON', { timeout: 30_000 }, async () => {
    const g = await spawnGateway('reqlog-pretty', dir, { log: { level: 'info', pretty: true }, vms: [{ name: 'logvm', endpoint: vm.endpoint }] });
    try {
      const r = await fetch(`${g.url}/v1/vms/logvm/ping`, { headers: { 'x-request-id': 'pretty-1' } });
      expect(r.status).toBe(200);
      const until = Date.now() + 5_000;
      let line: string | undefined;
      while (!line && Date.now() < until) {
        line = g.log().split('\n').find((l) => l.includes('pretty-1'));
        if (!line) await new Promise((res) => setTimeout(res, 20));
      }
      expect(line).toBeDefined();
      expect(line!.startsWith('{')).toBe(false);
      expect(line).toContain('GET /v1/vms/:vm/ping 200');
      expect(line).toContain('"principal":"anonymous"');
    } finally {
      await g.stop();
    }
  });
});
