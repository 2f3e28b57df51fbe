/**
 * The error paths of every QGA route, table-driven against simulated agents: unknown VM (404),
 * bad VM name (400), a command the agent lacks (501) or has disabled (403) — refused from the
 * cached guest-info without sending it —, a frozen guest (409), an agent error (422, carrying
 * the QGA class and text). Then the raw passthrough's own rules, scopes and the body limit.
 */
import type { FastifyInstance, InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { agentCommands, body, expectProblem, makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

interface RouteCase {
  method: InjectOptions['method'];
  path: string;
  command: string;
  payload?: object;
}

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqrG3Xi1qv3dHh1yYVt0F1Rk8j2Hc0bLq0mJ3uN7adA a@host';

/** Every typed QGA route of this group with a valid request. */
const ROUTES: RouteCase[] = [
  { method: 'GET', path: '/time', command: 'guest-get-time' },
  { method: 'PUT', path: '/time', command: 'guest-set-time', payload: { useHostClock: true } },
  { method: 'GET', path: '/hostname', command: 'guest-get-host-name' },
  { method: 'GET', path: '/timezone', command: 'guest-get-timezone' },
  { method: 'GET', path: '/os', command: 'guest-get-osinfo' },
  { method: 'GET', path: '/load', command: 'guest-get-load' },
  { method: 'GET', path: '/network/interfaces', command: 'guest-network-get-interfaces' },
  { method: 'GET', path: '/network/routes', command: 'guest-network-get-route' },
  { method: 'GET', path: '/vcpus', command: 'guest-get-vcpus' },
  { method: 'PATCH', path: '/vcpus', command: 'guest-set-vcpus', payload: { vcpus: [{ 'logical-id': 1, online: true }] } },
  { method: 'GET', path: '/memory/blocks', command: 'guest-get-memory-blocks' },
  { method: 'PATCH', path: '/memory/blocks', command: 'guest-set-memory-blocks', payload: { 'mem-blks': [{ 'phys-index': 1, online: true }] } },
  { method: 'GET', path: '/memory/block-info', command: 'guest-get-memory-block-info' },
  { method: 'GET', path: '/disks', command: 'guest-get-disks' },
  { method: 'GET', path: '/disks/stats', command: 'guest-get-diskstats' },
  { method: 'GET', path: '/cpus/stats', command: 'guest-get-cpustats' },
  { method: 'GET', path: '/devices', command: 'guest-get-devices' },
  { method: 'GET', path: '/filesystems', command: 'guest-get-fsinfo' },
  { method: 'POST', path: '/fstrim', command: 'guest-fstrim', payload: {} },
  { method: 'GET', path: '/users', command: 'guest-get-users' },
  { method: 'PUT', path: '/users/admin/password', command: 'guest-set-user-password', payload: { password: 'secret' } },
  { method: 'GET', path: '/users/admin/ssh-keys', command: 'guest-ssh-get-authorized-keys' },
  { method: 'POST', path: '/users/admin/ssh-keys', command: 'guest-ssh-add-authorized-keys', payload: { keys: [KEY] } },
  { method: 'DELETE', path: `/users/admin/ssh-keys?key=${encodeURIComponent(KEY)}`, command: 'guest-ssh-remove-authorized-keys' },
  { method: 'POST', path: '/shutdown', command: 'guest-shutdown', payload: { mode: 'halt' } },
  { method: 'POST', path: '/suspend', command: 'guest-suspend-disk', payload: { mode: 'disk' } },
  { method: 'POST', path: '/suspend', command: 'guest-suspend-ram', payload: { mode: 'ram' } },
  { method: 'POST', path: '/suspend', command: 'guest-suspend-hybrid', payload: { mode: 'hybrid' } },
  { method: 'POST', path: '/qga/guest-get-host-name', command: 'guest-get-host-name', payload: {} },
];

const ALL_COMMANDS = [...new Set(ROUTES.map((r) => r.command))];

let fleet: SimFleet;
let app: FastifyInstance;
const vms: Record<string, SimAgent> = {};

function req(vm: string, r: RouteCase): InjectOptions {
  return { method: r.method, url: `/v1/vms/${vm}${r.path}`, ...(r.payload ? { payload: r.payload } : {}) };
}

beforeAll(async () => {
  fleet = await startSim();
  vms.ok = await fleet.add({ name: 'ok' });
  vms.lacking = await fleet.add({ name: 'lacking', lacks: ALL_COMMANDS });
  vms.disabled = await fleet.add({ name: 'disabled', disabled: ALL_COMMANDS });
  vms.frozen = await fleet.add({ name: 'frozen', frozen: true });
  vms.erring = await fleet.add({ name: 'erring' });
  app = await makeRoutesApp({ vms: Object.values(vms).map((v) => ({ name: v.name, endpoint: v.endpoint })) });
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

describe.each(ROUTES)('$method $path ($command)', (r) => {
  it('unknown VM → 404 VM_NOT_FOUND; malformed VM name → 400', async () => {
    const p = await expectProblem(app, req('no-such-vm', r), 404, 'VM_NOT_FOUND');
    expect(p.type).toBe('urn:qga-gateway:problem:VM_NOT_FOUND');
    await expectProblem(app, req('-bad', r), 400, 'VALIDATION_FAILED');
  });

  it('command absent from the agent → 501 COMMAND_NOT_SUPPORTED, nothing sent', async () => {
    const p = await expectProblem(app, req('lacking', r), 501, 'COMMAND_NOT_SUPPORTED');
    expect(p.command).toBe(r.command);
    expect(agentCommands(vms.lacking)).not.toContain(r.command);
  });

  it('command disabled by the guest admin → 403 COMMAND_DISABLED, nothing sent', async () => {
    const p = await expectProblem(app, req('disabled', r), 403, 'COMMAND_DISABLED');
    expect(p.command).toBe(r.command);
    expect(agentCommands(vms.disabled)).not.toContain(r.command);
  });

  it('frozen guest → 409 VM_FROZEN', async () => {
    const p = await expectProblem(app, req('frozen', r), 409, 'VM_FROZEN');
    expect(p.vm).toBe('frozen');
  });

  it('agent error → 422 AGENT_ERROR with qga.class and qga.desc', async () => {
    vms.erring.setFault({ command: r.command, kind: 'error', class: 'GenericError', desc: `simulated failure of ${r.command}`, times: 1 });
    const p = await expectProblem(app, req('erring', r), 422, 'AGENT_ERROR');
    expect(p.qga).toEqual({ class: 'GenericError', desc: `simulated failure of ${r.command}` });
    expect(p.command).toBe(r.command);
  });
});

describe('raw passthrough', () => {
  it('refuses malformed and internal command names before any round trip', async () => {
    vms.ok.resetStats();
    for (const name of ['guest_ping', 'GUEST-PING', 'ping', 'guest-', 'guest-ping;rm']) {
      await expectProblem(app, { method: 'POST', url: `/v1/vms/ok/qga/${encodeURIComponent(name)}`, payload: {} }, 400, 'VALIDATION_FAILED');
    }
    for (const name of ['guest-sync', 'guest-sync-delimited']) {
      const p = await expectProblem(app, { method: 'POST', url: `/v1/vms/ok/qga/${name}`, payload: { id: 1 } }, 400, 'VALIDATION_FAILED');
      expect(String(p.detail)).toContain('/agent/sync');
    }
    // a freeze without a lease would never be thawed automatically; a raw thaw would skip the lease check
    for (const name of ['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw']) {
      const p = await expectProblem(app, { method: 'POST', url: `/v1/vms/ok/qga/${name}`, payload: {} }, 409, 'USE_FREEZE_API');
      expect(String(p.detail)).toContain('/fsfreeze');
    }
    await expectProblem(app, { method: 'POST', url: '/v1/vms/ok/qga/guest-ping', payload: [1, 2] }, 400, 'VALIDATION_FAILED');
    expect(agentCommands(vms.ok)).toEqual([]);
  });

  it('a command the agent does not know → 501 without sending it', async () => {
    await expectProblem(app, { method: 'POST', url: '/v1/vms/ok/qga/guest-from-the-future', payload: {} }, 501, 'COMMAND_NOT_SUPPORTED');
    expect(agentCommands(vms.ok)).not.toContain('guest-from-the-future');
  });

  it('passes arguments verbatim, exact integers included, and returns the value as `return`', async () => {
    const t = 1_900_000_000_123_456_000n;
    const res = await app.inject({
      method: 'POST',
      url: '/v1/vms/ok/qga/guest-set-time',
      headers: { 'content-type': 'application/json' },
      payload: `{"time":${t}}`,
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(body(res)).toEqual({ return: {} });
    const got = body(await app.inject({ method: 'POST', url: '/v1/vms/ok/qga/guest-get-time' })).return as bigint;
    expect(got >= t).toBe(true);
    expect(got - t).toBeLessThan(60_000_000_000n);
    const ping = await app.inject({ method: 'POST', url: '/v1/vms/ok/qga/guest-ping' });
    expect(ping.body).toBe('{"return":{}}');
  });

  it('an unknown argument is the agent’s to refuse: 422 with its error', async () => {
    const p = await expectProblem(app, { method: 'POST', url: '/v1/vms/ok/qga/guest-get-host-name', payload: { nonsense: 1 } }, 422, 'AGENT_ERROR');
    expect(p.qga).toMatchObject({ class: 'GenericError' });
  });

  it('a no-response command answers 202 after the fence', async () => {
    const f = await startSim();
    try {
      const guest = await f.add({ name: 'rawdown', shutdownDelayMs: 50 });
      const app2 = await makeRoutesApp({ vms: [{ name: 'rawdown', endpoint: guest.endpoint }] });
      try {
        const res = await app2.inject({ method: 'POST', url: '/v1/vms/rawdown/qga/guest-shutdown', payload: { mode: 'halt' } });
        expect(res.statusCode, res.body).toBe(202);
        expect(body(res)).toEqual({ accepted: true });
        expect(guest.state.powerRequests.at(-1)).toMatchObject({ command: 'guest-shutdown', mode: 'halt' });
      } finally {
        await app2.close();
      }
    } finally {
      await f.close();
    }
  });
});

describe('scopes and body limits', () => {
  const READER = 'reader-token-0123456789';
  const WRITER = 'writer-token-0123456789';
  const ADMIN = 'admin-token-01234567890';
  let secured: FastifyInstance;
  let guest: SimAgent;

  beforeAll(async () => {
    // its own simulated VM: an agent serves one client at a time, and `app` holds the others
    guest = await fleet.add({ name: 'guarded' });
    secured = await makeRoutesApp({
      vms: [{ name: 'ok', endpoint: guest.endpoint }],
      config: {
        server: { bodyLimitBytes: 1024 },
        exec: { maxInputBytes: 4096 },
        files: { maxRawWriteBytes: 4096 },
        auth: {
          tokens: [
            { name: 'reader', token: READER, scopes: ['read'] },
            { name: 'writer', token: WRITER, scopes: ['read', 'write'] },
            { name: 'admin', token: ADMIN, scopes: ['read', 'write', 'admin'] },
          ],
        },
      },
    });
  });
  afterAll(async () => {
    await secured?.close();
  });

  const as = (token: string) => ({ authorization: `Bearer ${token}` });

  it('read routes need read, changing routes write, credentials and raw need admin', async () => {
    expect((await secured.inject({ method: 'GET', url: '/v1/vms/ok/hostname', headers: as(READER) })).statusCode).toBe(200);
    await expectProblem(secured, { method: 'GET', url: '/v1/vms/ok/hostname' }, 401, 'UNAUTHENTICATED');
    await expectProblem(secured, { method: 'POST', url: '/v1/vms/ok/fstrim', headers: as(READER), payload: {} }, 403, 'FORBIDDEN');
    expect((await secured.inject({ method: 'POST', url: '/v1/vms/ok/fstrim', headers: as(WRITER), payload: {} })).statusCode).toBe(200);
    for (const r of [
      { method: 'POST' as const, url: '/v1/vms/ok/qga/guest-ping', payload: {} },
      { method: 'PUT' as const, url: '/v1/vms/ok/users/admin/password', payload: { password: 'x' } },
      { method: 'POST' as const, url: '/v1/vms/ok/users/admin/ssh-keys', payload: { keys: [KEY] } },
      { method: 'DELETE' as const, url: `/v1/vms/ok/users/admin/ssh-keys?key=${encodeURIComponent(KEY)}` },
    ]) {
      await expectProblem(secured, { ...r, headers: as(WRITER) }, 403, 'FORBIDDEN');
    }
    const raw = await secured.inject({ method: 'POST', url: '/v1/vms/ok/qga/guest-ping', headers: as(ADMIN), payload: {} });
    expect(raw.statusCode).toBe(200);
  });

  it('a body over the configured limit → 413 PAYLOAD_TOO_LARGE, nothing sent', async () => {
    guest.resetStats();
    const big = { keys: Array.from({ length: 20 }, (_, i) => `${KEY}${i}`) };
    expect(JSON.stringify(big).length).toBeGreaterThan(1024);
    await expectProblem(secured, { method: 'POST', url: '/v1/vms/ok/users/admin/ssh-keys', headers: as(ADMIN), payload: big }, 413, 'PAYLOAD_TOO_LARGE');
    const raw = await expectProblem(secured, { method: 'POST', url: '/v1/vms/ok/qga/guest-exec', headers: as(ADMIN), payload: { path: 'x'.repeat(2000) } }, 413, 'PAYLOAD_TOO_LARGE');
    expect([raw.limit, raw.detail]).toEqual([1024, 'the request body is larger than the configured cap of 1024 bytes (server.bodyLimitBytes)']);
    // the routes that carry base64 data have a cap of their own: the 413 names where it comes from
    const cap = Math.ceil((4096 * 4) / 3) + 1024;
    const exec = await expectProblem(secured, { method: 'POST', url: '/v1/vms/ok/exec', headers: as(ADMIN), payload: { path: 'x'.repeat(cap) } }, 413, 'PAYLOAD_TOO_LARGE');
    expect([exec.limit, exec.detail]).toEqual([cap, `the request body is larger than the configured cap of ${cap} bytes (exec.maxInputBytes as base64 + server.bodyLimitBytes)`]);
    const write = await expectProblem(secured, { method: 'POST', url: '/v1/vms/ok/files/handles/1/write', headers: as(ADMIN), payload: { 'buf-b64': 'A'.repeat(cap) } }, 413, 'PAYLOAD_TOO_LARGE');
    expect(write.detail).toContain('(files.maxRawWriteBytes as base64 + server.bodyLimitBytes)');
    expect(agentCommands(guest)).toEqual([]);
  });
});
