/**
 * Paced refusals (issue 14 item 2, limits.refusalHoldMs) on a real listening gateway over the
 * simulator: a VM whose agent hangs on guest-ping (fault `hang`) keeps its one in-flight ping and
 * its queue (agent.maxQueue 1) full, so the next ping is refused 429 QUEUE_FULL; a principal at
 * limits.perPrincipalConcurrency is refused 429 RATE_LIMITED. Checked: the refusal is answered
 * refusalHoldMs later (both bounds), still 429 with Retry-After and the problem body; one held
 * answer per connection (a pipelined second one is not held); a client that leaves while held is
 * released from admission at once and gets nothing; shutdown sends held answers at once with
 * Connection: close; 0 answers at once; refusals are counted in qga_rejections_total and their
 * log lines sampled (one line at info per second, then the count of those left out).
 */
import http from 'node:http';
import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { buildApp } from '../../src/app.js';
import { testConfig } from '../helpers/app.js';
import { startSim, type SimFleet } from './routes-support.js';

const HOLD = 300;
const TOKENS = { a: 'refusal-hold-token-a-0123456789', b: 'refusal-hold-token-b-0123456789' };

let fleet: SimFleet;
let vm: SimAgent;

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'stall' });
});
afterAll(async () => {
  vm.clearFaults();
  await fleet.close();
});

interface Rig {
  app: FastifyInstance;
  url: string;
  port: number;
  lines: Array<Record<string, unknown>>;
  occupiers: Array<Promise<Answer>>;
}

let rig: Rig | undefined;
afterEach(async () => {
  vm.clearFaults();
  await rig?.app.close();
  rig = undefined;
});

async function start(refusalHoldMs: number, perPrincipalConcurrency = 4): Promise<Rig> {
  vm.clearFaults();
  vm.resetStats();
  vm.setFault({ command: 'guest-ping', kind: 'hang' });
  const config = testConfig({
    logLevel: 'info',
    vms: [{ name: 'stall', endpoint: vm.endpoint }],
    config: {
      limits: { refusalHoldMs, perPrincipalConcurrency },
      agent: { maxQueue: 1, idleReleaseMs: 0, timeouts: { fast: 60_000 } },
      server: { shutdownGraceMs: 200 },
      auth: {
        tokens: [
          { name: 'a', token: TOKENS.a, scopes: ['read'] },
          { name: 'b', token: TOKENS.b, scopes: ['read', 'admin'] },
        ],
      },
    },
  });
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const app = await buildApp({ config, logger, env: {} });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const r: Rig = { app, url, port: Number(new URL(url).port), lines, occupiers: [] };
  rig = r;
  // a fills the VM: one ping on the wire (hung), then one queued
  r.occupiers.push(get(r, '/v1/vms/stall/ping', 'a'));
  await until(() => vm.stats.commandLog.some((c) => c.command === 'guest-ping'));
  r.occupiers.push(get(r, '/v1/vms/stall/ping', 'a'));
  await until(() => {
    const ch = app.services.pool.stats().channels.find((c) => c.vm === 'stall');
    return ch?.queued === 1 && ch.inFlight === 1 && app.admission.inFlight({ token: 'a' }) === 2;
  });
  return r;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  json: Record<string, unknown>;
  ms: number;
}

/** one request on a connection of its own; `ms` from the request written to the answer read */
function get(r: Rig, path: string, who: keyof typeof TOKENS, id?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.get(
      `${r.url}${path}`,
      { agent: false, headers: { authorization: `Bearer ${TOKENS[who]}`, ...(id ? { 'x-request-id': id } : {}) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, unknown>) : {}, ms: performance.now() - t0 }));
      },
    );
    req.on('error', reject);
  });
}

async function until(cond: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error('condition not met in time');
    await new Promise((res) => setTimeout(res, 5));
  }
}

function expectQueueFull(x: Answer): void {
  expect(x.status).toBe(429);
  expect(x.headers['retry-after']).toBe('1');
  expect(x.headers['content-type']).toBe('application/problem+json; charset=utf-8');
  expect(x.json).toMatchObject({ type: 'urn:qga-gateway:problem:QUEUE_FULL', title: 'VM request queue is full', status: 429, code: 'QUEUE_FULL', vm: 'stall', instance: '/v1/vms/stall/ping' });
}

async function rejections(r: Rig): Promise<number> {
  const text = (await r.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${TOKENS.b}` } })).body;
  const m = /^qga_rejections_total\{code="429"\} (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

describe('limits.refusalHoldMs: paced 429s', () => {
  it('429 QUEUE_FULL is answered refusalHoldMs after the refusal, with Retry-After and the problem body; the admitted callers keep their places', async () => {
    const r = await start(HOLD);
    const x = await get(r, '/v1/vms/stall/ping', 'b');
    expectQueueFull(x);
    expect(x.ms).toBeGreaterThanOrEqual(HOLD - 10);
    expect(x.ms).toBeLessThan(HOLD + 500);
    expect(r.app.refusals.heldTotal).toBe(1);
    expect(r.app.refusals.size).toBe(0);
    // the admitted callers still wait for the agent, as without the hold
    expect(r.app.admission.inFlight({ token: 'a' })).toBe(2);
  });

  it('429 RATE_LIMITED (the principal at limits.perPrincipalConcurrency) is held too', async () => {
    const r = await start(HOLD);
    // a has 2 in flight; two more refused QUEUE_FULL are held and keep their admission slots (4)
    const held = [get(r, '/v1/vms/stall/ping', 'a'), get(r, '/v1/vms/stall/ping', 'a')];
    await until(() => r.app.refusals.size === 2 && r.app.admission.inFlight({ token: 'a' }) === 4);
    const x = await get(r, '/v1/vms/stall/ping', 'a');
    expect(x.status).toBe(429);
    expect(x.headers['retry-after']).toBe('1');
    expect(x.json).toMatchObject({ type: 'urn:qga-gateway:problem:RATE_LIMITED', status: 429, code: 'RATE_LIMITED' });
    expect(x.ms).toBeGreaterThanOrEqual(HOLD - 10);
    expect(x.ms).toBeLessThan(HOLD + 500);
    for (const h of await Promise.all(held)) expectQueueFull(h);
    expect(r.app.refusals.heldTotal).toBe(3);
  });

  it('0 answers at once', async () => {
    const r = await start(0);
    const x = await get(r, '/v1/vms/stall/ping', 'b');
    expectQueueFull(x);
    expect(x.ms).toBeGreaterThanOrEqual(0);
    expect(x.ms).toBeLessThan(150);
    expect(r.app.refusals.heldTotal).toBe(0);
  });

  it('one held answer per connection: of two pipelined refusals only the first is held; both are answered, in order', async () => {
    const r = await start(HOLD);
    const sock = net.connect(r.port, '127.0.0.1');
    let text = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (text += d));
    const t0 = performance.now();
    const req = (id: string) => `GET /v1/vms/stall/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKENS.b}\r\nX-Request-Id: ${id}\r\n\r\n`;
    sock.write(req('pipe-1') + req('pipe-2'));
    await until(() => (text.match(/HTTP\/1\.1 429/g) ?? []).length === 2);
    const ms = performance.now() - t0;
    sock.destroy();
    expect(r.app.refusals.heldTotal).toBe(1);
    expect(text.indexOf('x-request-id: pipe-1')).toBeLessThan(text.indexOf('x-request-id: pipe-2'));
    expect(text.match(/retry-after: 1\r\n/g)).toHaveLength(2);
    // the second waits behind the first on the wire (HTTP/1.1 answers in order)
    expect(ms).toBeGreaterThanOrEqual(HOLD - 10);
    expect(ms).toBeLessThan(HOLD + 500);
  });

  it('a client that leaves while held: its admission slot is freed at once, nothing is sent, the hold empties', async () => {
    const r = await start(HOLD);
    const sock = net.connect(r.port, '127.0.0.1');
    let got = '';
    sock.on('data', (d: Buffer) => (got += d.toString()));
    sock.write(`GET /v1/vms/stall/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKENS.b}\r\n\r\n`);
    await until(() => r.app.refusals.size === 1);
    expect(r.app.admission.inFlight({ token: 'b' })).toBe(1);
    const t0 = performance.now();
    sock.destroy();
    await until(() => r.app.admission.inFlight({ token: 'b' }) === 0);
    expect(performance.now() - t0).toBeLessThan(HOLD);
    await until(() => r.app.refusals.size === 0);
    expect(got).toBe('');
    expect(r.lines.filter((l) => (l.level as number) >= 40)).toEqual([]);
  });

  it('shutdown sends the held answers at once, with Connection: close', async () => {
    const r = await start(10_000);
    const pending = get(r, '/v1/vms/stall/ping', 'b');
    await until(() => r.app.refusals.size === 1);
    // (a hung agent would hold the channel's close for its sync timeout: not what is measured here)
    vm.clearFaults();
    const t0 = performance.now();
    const closing = r.app.close();
    rig = undefined;
    const x = await pending;
    const after = performance.now() - t0;
    expectQueueFull(x);
    expect(x.headers.connection).toBe('close');
    expect(after).toBeGreaterThanOrEqual(0);
    expect(after).toBeLessThan(1_000);
    await closing;
  });

  it('refusals are counted in qga_rejections_total and their log lines sampled: 20 in a burst give one line at info, then one line with the 19 left out', async () => {
    const r = await start(HOLD, 64);
    const before = await rejections(r);
    const t0 = performance.now();
    const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => get(r, '/v1/vms/stall/ping', 'b', `burst-${i}`)));
    for (const x of burst) expectQueueFull(x);
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect((await rejections(r)) - before).toBe(20);
    await until(() => r.lines.some((l) => l.status === 429 && l.suppressed === 19 && l.requestId === undefined), 3_000);
    const perRequest = r.lines.filter((l) => typeof l.requestId === 'string' && l.requestId.startsWith('burst-'));
    expect(perRequest).toHaveLength(1);
    expect(perRequest[0]).toMatchObject({ level: 30, status: 429, sampled: true, suppressed: 0, route: '/v1/vms/:vm/ping' });
    expect(r.lines.filter((l) => l.status === 429 && (l.level as number) >= 40)).toEqual([]);
    const summary = r.lines.filter((l) => l.status === 429 && l.requestId === undefined);
    expect(summary).toHaveLength(1);
    expect(summary[0]).toMatchObject({ level: 30, msg: '19 more 429 answers not logged in the last second' });
  });
});
