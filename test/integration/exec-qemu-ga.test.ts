/**
 * Exec through the gateway against the real qemu-ga (7.2 here): output, exit codes, stdin as text
 * and base64, env, binary output, kept results, the reaper, and the bad-input mappings.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { startQemuGa, type QemuGa } from '../helpers/qemu-ga.js';
import { makeExecFilesApp, until } from './files-support.js';

let ga: QemuGa;
let app: FastifyInstance;

beforeAll(async () => {
  ga = await startQemuGa();
  app = await makeExecFilesApp({
    vms: [{ name: 'ga', endpoint: { type: 'unix', path: ga.socketPath } }],
    config: { exec: { maxWaitSeconds: 20, maxInputBytes: 1024, reaperIntervalMs: 100, reaperMaxIntervalMs: 200 } },
  });
});

afterAll(async () => {
  await app?.close();
  await ga?.stop();
});

async function run(payload: Record<string, unknown>) {
  const r = await app.inject({ method: 'POST', url: '/v1/vms/ga/exec', payload: { wait: 10, ...payload } });
  return { status: r.statusCode, body: r.json(), headers: r.headers };
}

describe('exec on the real qemu-ga', () => {
  test('/bin/echo with wait returns exit code, base64 and decoded text', async () => {
    const r = await run({ path: '/bin/echo', arg: ['hello', 'wörld'] });
    expect(r.status).toBe(200);
    expect(r.body.exited).toBe(true);
    expect(r.body.exitcode).toBe(0);
    expect(r.body.outText).toBe('hello wörld\n');
    expect(Buffer.from(r.body['out-data'], 'base64').toString()).toBe('hello wörld\n');
    expect(r.body['out-truncated']).toBe(false);
    expect(r.headers.location).toBe(`/v1/vms/ga/exec/${r.body.pid}`);
  });

  test('a non-zero exit and stderr', async () => {
    const r = await run({ path: '/bin/sh', arg: ['-c', 'echo oops >&2; exit 3'] });
    expect(r.status).toBe(200);
    expect(r.body.exitcode).toBe(3);
    expect(r.body.errText).toBe('oops\n');
    const f = await run({ path: '/bin/false' });
    expect(f.body.exitcode).toBe(1);
  });

  test('stdin as text and as base64', async () => {
    const t = await run({ path: '/bin/cat', inputText: 'line one\nline two\n' });
    expect(t.body.outText).toBe('line one\nline two\n');
    const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    const b = await run({ path: '/bin/cat', 'input-data': bytes.toString('base64') });
    expect(Buffer.from(b.body['out-data'], 'base64')).toEqual(bytes);
  });

  test('env is passed to the process', async () => {
    const r = await run({ path: '/usr/bin/env', env: ['GREETING=hi there', 'X=1'] });
    expect(r.body.outText.split('\n')).toEqual(expect.arrayContaining(['GREETING=hi there', 'X=1']));
  });

  test('binary output: base64 only, no outText', async () => {
    const r = await run({ path: '/usr/bin/printf', arg: ['\\377\\376abc'] });
    expect(r.status).toBe(200);
    expect(r.body.outText).toBeUndefined();
    expect(Buffer.from(r.body['out-data'], 'base64')).toEqual(Buffer.from([0xff, 0xfe, 0x61, 0x62, 0x63]));
  });

  test('without wait: 202 {pid}; GET polls; the final status stays readable after the agent forgot it', async () => {
    const r = await app.inject({ method: 'POST', url: '/v1/vms/ga/exec', payload: { path: '/bin/echo', arg: ['later'] } });
    expect(r.statusCode).toBe(202);
    const { pid } = r.json();
    expect(Object.keys(r.json())).toEqual(['pid']);
    const first = await app.inject({ method: 'GET', url: `/v1/vms/ga/exec/${pid}?wait=10` });
    expect(first.statusCode).toBe(200);
    expect(first.json()).toMatchObject({ pid, exited: true, exitcode: 0, outText: 'later\n' });
    // The agent deleted its record with that reply …
    await expect(app.services.agent.call('ga', 'guest-exec-status', { pid })).rejects.toMatchObject({ code: 'AGENT_ERROR' });
    // … yet a repeated GET (a client whose first answer was lost) gets the same result.
    const again = await app.inject({ method: 'GET', url: `/v1/vms/ga/exec/${pid}` });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toEqual(first.json());
  });

  test('wait runs out → 202 {pid}; the process is still running', async () => {
    const r = await run({ path: '/bin/sleep', arg: ['1'], wait: 0.2 });
    expect(r.status).toBe(202);
    const s = await app.inject({ method: 'GET', url: `/v1/vms/ga/exec/${r.body.pid}` });
    expect(s.json()).toMatchObject({ pid: r.body.pid, exited: false });
    const done = await app.inject({ method: 'GET', url: `/v1/vms/ga/exec/${r.body.pid}?wait=10` });
    expect(done.json()).toMatchObject({ exited: true, exitcode: 0 });
  });

  test('a process nobody polls is reaped: the agent record goes, the gateway keeps the result', async () => {
    const exec = app.services.exec;
    const r = await app.inject({ method: 'POST', url: '/v1/vms/ga/exec', payload: { path: '/bin/echo', arg: ['reaped'] } });
    const { pid } = r.json();
    expect(exec.tracker.get('ga', pid)).toBeDefined();
    await until(() => exec.tracker.get('ga', pid) === undefined, 10_000, 'the reaper to collect the process');
    await expect(app.services.agent.call('ga', 'guest-exec-status', { pid })).rejects.toMatchObject({ code: 'AGENT_ERROR' });
    const s = await app.inject({ method: 'GET', url: `/v1/vms/ga/exec/${pid}` });
    expect(s.statusCode).toBe(200);
    expect(s.json()).toMatchObject({ pid, exited: true, outText: 'reaped\n' });
    expect(s.json().collectedAt).toBeTypeOf('string');
  });

  test('a pid we never started → 404 with the agent error carried', async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/vms/ga/exec/999999' });
    expect(r.statusCode).toBe(404);
    expect(r.json()).toMatchObject({ code: 'NOT_FOUND', qga: { class: 'GenericError' } });
    expect(r.json().qga.desc).toMatch(/pid/);
  });

  test('bad input: missing program 422, wait over max 400, stdin over cap 413, both stdin forms 400', async () => {
    const missing = await run({ path: '/nonexistent/program' });
    expect(missing.status).toBe(422);
    expect(missing.body.code).toBe('AGENT_ERROR');
    expect(missing.body.qga.desc).toMatch(/No such file/);

    const relative = await run({ path: 'no-such-relative-program' });
    expect(relative.status).toBe(422);

    const wait = await run({ path: '/bin/true', wait: 21 });
    expect(wait.status).toBe(400);
    expect(wait.body.code).toBe('VALIDATION_FAILED');

    const big = await run({ path: '/bin/cat', inputText: 'x'.repeat(1025) });
    expect(big.status).toBe(413);
    expect(big.body.code).toBe('PAYLOAD_TOO_LARGE');
    const big64 = await run({ path: '/bin/cat', 'input-data': Buffer.alloc(1025).toString('base64') });
    expect(big64.status).toBe(413);

    const both = await run({ path: '/bin/cat', inputText: 'a', 'input-data': 'YQ==' });
    expect(both.status).toBe(400);
    const notB64 = await run({ path: '/bin/cat', 'input-data': 'not base64!' });
    expect(notB64.status).toBe(400);
  });

  test('capture-output modes: "separated" works on 7.2, "merged" needs 8.0 → 501', async () => {
    const sep = await run({ path: '/bin/sh', arg: ['-c', 'echo out; echo err >&2'], 'capture-output': 'separated' });
    expect(sep.body).toMatchObject({ outText: 'out\n', errText: 'err\n' });
    const none = await run({ path: '/bin/echo', arg: ['x'], 'capture-output': false });
    expect(none.status).toBe(200);
    expect(none.body['out-data']).toBeUndefined();
    const merged = await run({ path: '/bin/echo', 'capture-output': 'merged' });
    expect(merged.status).toBe(501);
    expect(merged.body.code).toBe('COMMAND_NOT_SUPPORTED');
  });
});
