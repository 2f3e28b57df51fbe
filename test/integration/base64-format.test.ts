/**
 * `format: byte` (base64: exec stdin, handle writes) is checked by a loop (app.ts isBase64), not
 * ajv-formats' regex, which recursed once per 4 characters and overflowed V8's stack on ~3.4 MB:
 * a 500 INTERNAL for any stdin or handle write that large (outside probe). Same verdicts as that
 * regex on short strings; a 4 MB stdin is accepted, one over exec.maxInputBytes is a 413.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isBase64 } from '../../src/app.js';
import { makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

// ajv-formats' own `byte` pattern, for comparison on strings short enough for it
const AJV_BYTE = /^(?:[a-z0-9+/]{4})*(?:[a-z0-9+/]{2}==|[a-z0-9+/]{3}=)?$/i;

describe('isBase64', () => {
  it("agrees with ajv-formats' byte regex on 20,000 random short strings and on the edge cases", () => {
    const alphabet = 'AZaz09+/=-_ \n\u00e9';
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const cases = ['', 'QQ==', 'QUI=', 'QUJD', '====', 'A===', 'QQ=', 'Q===', 'QUJD\n', 'QU=D', 'QUJDQQ==', '////', '++++'];
    for (let i = 0; i < 20_000; i++) cases.push(Array.from({ length: Math.floor(rnd() * 13) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join(''));
    for (const c of cases) expect(isBase64(c), JSON.stringify(c)).toBe(AJV_BYTE.test(c));
  });
});

describe('large base64 bodies through the routes', () => {
  let fleet: SimFleet;
  let app: FastifyInstance;
  beforeAll(async () => {
    fleet = await startSim();
    const vm = await fleet.add({ name: 'b64' });
    app = await makeRoutesApp({ vms: [{ name: 'b64', endpoint: vm.endpoint }] });
  });
  afterAll(async () => {
    await app?.close();
    await fleet?.close();
  });

  it('4 MB of stdin is accepted (was 500: stack overflow in the format check)', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/vms/b64/exec', payload: { path: '/bin/cat', 'input-data': Buffer.alloc(4_000_000, 0x61).toString('base64') } });
    expect(r.statusCode, r.body.slice(0, 300)).toBe(202);
  });

  it('malformed base64 of that size is a 400 naming the member, not a 500', async () => {
    const bad = `${Buffer.alloc(4_000_000, 0x61).toString('base64').slice(0, -4)}!!!!`;
    const r = await app.inject({ method: 'POST', url: '/v1/vms/b64/exec', payload: { path: '/bin/cat', 'input-data': bad } });
    expect(r.statusCode, r.body.slice(0, 300)).toBe(400);
    expect(r.json<{ code: string; detail: string }>()).toMatchObject({ code: 'VALIDATION_FAILED', detail: expect.stringMatching(/input-data/) });
  });
});
