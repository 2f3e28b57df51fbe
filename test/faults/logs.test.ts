/**
 * Fault matrix D8 (../shared/FAULTS.md): canary secrets never appear in any log line. The gateway
 * runs as a child process (src/server.ts, its own logger and redaction) at log level `debug`;
 * everything it prints (stdout and stderr) is searched for each canary — a token, a password, file
 * content and exec input — plain and base64-encoded, after success paths and error paths (agent
 * errors, validation errors that quote the body, malformed JSON, an unknown token, the raw
 * passthrough). The audit trail is there (the password change and the raw call are recorded), so
 * the search runs over a log that does describe these requests.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { spawnGateway, type Gateway } from '../e2e/freeze-gateways.js';
import { startSim, type SimFleet } from '../integration/routes-support.js';

const CANARY = {
  token: 'canary-token-5b8e2d4f6a1c9e07',
  unknownToken: 'canary-badtoken-1d2e3f4a5b6c7d8e',
  password: 'Canary-Pw-7f3a9c21e',
  file: 'canary-file-content-8c1f0b6d',
  input: 'canary-exec-input-3e9a7d2c',
};
const b64 = (s: string) => Buffer.from(s).toString('base64');
/** every form a canary could be logged in: plain, base64 of itself, and base64 of the forms the gateway sends */
const FORMS: Array<[string, string]> = Object.entries(CANARY).flatMap(([k, v]) => [
  [`${k} (plain)`, v],
  [`${k} (base64)`, b64(v)],
  [`${k} (base64, no padding)`, b64(v).replace(/=+$/, '')],
]);

let fleet: SimFleet;
let vm: SimAgent;
let dir: string;
let gw: Gateway;

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'logvm' });
  dir = await mkdtemp(path.join(os.tmpdir(), 'qga-logs-'));
  gw = await spawnGateway('logs', dir, {
    log: { level: 'debug' },
    auth: { tokens: [{ name: 'ops', token: CANARY.token, scopes: ['read', 'write', 'admin'] }] },
    vms: [{ name: 'logvm', endpoint: vm.endpoint }],
  });
}, 90_000);

afterAll(async () => {
  await gw?.stop();
  await fleet?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function send(method: string, url: string, opts: { json?: unknown; raw?: string | Buffer; type?: string; token?: string | null } = {}): Promise<number> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? CANARY.token : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let body: string | Buffer | undefined;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  } else if (opts.raw !== undefined) {
    headers['content-type'] = opts.type ?? 'application/octet-stream';
    body = opts.raw;
  }
  const r = await fetch(gw.url + url, { method, headers, body, signal: AbortSignal.timeout(15_000) });
  await r.arrayBuffer();
  return r.status;
}

describe('D8: secrets in logs (child process at log level debug)', () => {
  it('no canary (token, password, file content, exec input; plain or base64) appears in any log line, success or error path', { timeout: 60_000 }, async () => {
    const pw = '/v1/vms/logvm/users/root/password';
    const file = '/v1/vms/logvm/files/content?path=%2Ftmp%2Fcanary.txt';
    const statuses: Record<string, number> = {};
    // success paths
    statuses.password = await send('PUT', pw, { json: { password: CANARY.password, crypted: false } });
    statuses.fileWrite = await send('PUT', file, { raw: CANARY.file });
    statuses.fileRead = await send('GET', file);
    statuses.execText = await send('POST', '/v1/vms/logvm/exec', { json: { path: '/bin/cat', inputText: CANARY.input, 'capture-output': true } });
    statuses.execData = await send('POST', '/v1/vms/logvm/exec', { json: { path: '/bin/cat', 'input-data': b64(CANARY.input) } });
    statuses.raw = await send('POST', '/v1/vms/logvm/qga/guest-set-user-password', { json: { username: 'root', password: b64(CANARY.password), crypted: false } });
    // agent error paths
    vm.setFault({ command: 'guest-set-user-password', kind: 'error', class: 'GenericError', desc: 'chpasswd failed' });
    vm.setFault({ command: 'guest-file-write', kind: 'error', class: 'GenericError', desc: 'disk full' });
    vm.setFault({ command: 'guest-exec', kind: 'error', class: 'GenericError', desc: 'no such file' });
    statuses.passwordAgentError = await send('PUT', pw, { json: { password: CANARY.password, crypted: false } });
    statuses.fileAgentError = await send('PUT', file, { raw: CANARY.file });
    statuses.execAgentError = await send('POST', '/v1/vms/logvm/exec', { json: { path: '/bin/cat', inputText: CANARY.input } });
    statuses.rawAgentError = await send('POST', '/v1/vms/logvm/qga/guest-set-user-password', { json: { username: 'root', password: b64(CANARY.password), crypted: false } });
    vm.clearFaults();
    // validation and parse errors that carry the secrets in the body
    statuses.passwordInvalid = await send('PUT', pw, { json: { password: CANARY.password, crypted: 'maybe', extra: CANARY.password } });
    statuses.execInvalid = await send('POST', '/v1/vms/logvm/exec', { json: { path: '/bin/cat', inputText: CANARY.input, 'input-data': b64(CANARY.input) } });
    statuses.malformed = await send('PUT', pw, { raw: `{"password":"${CANARY.password}",`, type: 'application/json' });
    // authentication failures
    statuses.unknownToken = await send('GET', '/v1/vms', { token: CANARY.unknownToken });
    // a secret a caller puts in the query string: the logged request has the path only
    // (on a route without a query schema, so that it is served: GET /v1/vms refuses unknown parameters)
    statuses.queryAuthorized = await send('GET', `/v1/vms/logvm/ping?token=${CANARY.token}&password=${CANARY.password}`);
    statuses.queryUnauthorized = await send('GET', `/v1/vms?token=${CANARY.token}`, { token: CANARY.unknownToken });

    expect(statuses).toMatchObject({
      password: 204,
      fileWrite: 200,
      fileRead: 200,
      raw: 200,
      passwordAgentError: 422,
      fileAgentError: 422,
      execAgentError: 422,
      rawAgentError: 422,
      passwordInvalid: 400,
      execInvalid: 400,
      malformed: 400,
      unknownToken: 401,
      queryAuthorized: 200,
      queryUnauthorized: 401,
    });
    // without `wait`, exec answers 202 {pid} at once (routes/exec.ts)
    expect(statuses.execText).toBe(202);
    expect(statuses.execData).toBe(202);

    // the log is complete for these requests: debug lines, request lines, the audit records
    await new Promise<void>((r) => setImmediate(r));
    const lines = gw.log().split('\n').filter((l) => l.trim() !== '');
    // the log lines are JSON; Node's own warnings (a deprecation on stderr) are not, and are still searched below
    const parsed = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed.some((l) => l.level === 20)).toBe(true);
    expect(parsed.filter((l) => l.audit === true && l.action === 'raw').length).toBeGreaterThanOrEqual(2);
    // the audit trail of mutating commands is there too (the password change reached the agent), without arguments
    const pwRecs = parsed.filter((l) => l.audit === true && l.action === 'agent-command' && l.command === 'guest-set-user-password');
    const pwSent = vm.stats.commandLog.filter((c) => c.command === 'guest-set-user-password').length;
    expect(pwSent).toBe(4);
    expect(pwRecs.filter((l) => l.phase === 'start').length).toBe(pwSent);
    expect(pwRecs.filter((l) => l.phase === 'end').length).toBe(pwSent);
    for (const l of pwRecs) expect(Object.keys(l).filter((k) => /arg|password|buf|input/i.test(k))).toEqual([]);
    expect(lines.length).toBeGreaterThan(30);
    const leaks: string[] = [];
    for (const [what, needle] of FORMS) {
      for (const l of lines) if (l.includes(needle)) leaks.push(`${what}: ${l.slice(0, 300)}`);
    }
    expect(leaks, leaks.join('\n')).toEqual([]);
  });
});
