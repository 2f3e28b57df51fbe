/**
 * Invariant 4 of the fault matrix (../shared/FAULTS.md): every mutating agent command has exactly
 * one audit start and one completion record. A whole history is driven through HTTP on the
 * simulator (typed routes, raw passthrough, exec, file handles and streaming, freeze/thaw, a group
 * freeze, a forced thaw, a deadline thaw and a shutdown thaw by the gateway, power) with failures
 * (agent error, timeout, connection dropped mid-reply, agent process killed mid-command) and refusals before sending (validation, COMMAND_DISABLED, VM_FROZEN,
 * USE_FREEZE_API, COMMAND_NOT_SUPPORTED). The gateway's log lines are captured, and the records
 * are checked against what the simulated agents logged receiving:
 *  - each record id has exactly one `start` and one `end`;
 *  - per VM, the `start` records name exactly the mutating commands the agent received, in order;
 *  - requests refused before sending have no record (decided: none; the agent never saw them);
 *  - no record carries an argument (a password, file content, exec input).
 */
import { Writable } from 'node:stream';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance, InjectOptions } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { commandSpec } from '../../src/qga/commands.js';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { testConfig } from '../helpers/app.js';

const TOKEN = 'audit-history-token-0123456789';
const PASSWORD = 'canary-Pa55w0rd-audit';
const CONTENT = 'canary-file-content-audit';
const INPUT = 'canary-exec-input-audit';
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqrG3Xi1qv3dHh1yYVt0F1Rk8j2Hc0bLq0mJ3uN7adA a@host';

interface Rec {
  action: string;
  phase: 'start' | 'end';
  id: number;
  vm: string;
  command: string;
  by: string;
  requestId?: string;
  outcome?: string;
  code?: string;
  sends?: number;
  fields?: string[];
  argv?: string[];
}

/** mutating as the gateway counts it: marked so in the catalog, or unknown to it */
const mutating = (command: string): boolean => {
  const spec = commandSpec(command);
  return spec ? spec.mutating === true : true;
};

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

let dir: string;
let sim: Simulator;
let app: FastifyInstance;
let appClosed = false;
const lines: Record<string, unknown>[] = [];
const rawLog: string[] = [];
const vms: Record<string, SimAgent> = {};

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'faults-audit-'));
  sim = new Simulator({ dir });
  for (const name of ['h1', 'h2', 'hdis', 'hhang', 'hkill', 'hkill2', 'hdown']) {
    vms[name] = await sim.addVm({ name, ...(name === 'hdis' ? { disabled: ['guest-fstrim'] } : {}) });
  }
  const config = testConfig({
    vms: Object.values(vms).map((v) => ({ name: v.name, endpoint: v.endpoint })),
    logLevel: 'info',
    config: {
      auth: { tokens: [{ name: 'ops', token: TOKEN, scopes: ['read', 'write', 'admin'] }] },
      agent: { idleReleaseMs: 0, timeouts: { normal: 800 } },
    },
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        rawLog.push(line);
        lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      cb();
    },
  });
  app = await buildApp({ config, logger: pino({ level: 'info' }, sink), env: {} });
  await app.ready();
});

afterAll(async () => {
  if (!appClosed) await app?.close();
  await sim?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const records = (): Rec[] => lines.filter((l) => l.audit === true && l.action === 'agent-command') as unknown as Rec[];

describe('invariant 4: one audit start and one completion per mutating agent command', () => {
  it('over a history of every kind of mutating command, failures and refusals, from the simulator command log', { timeout: 60_000 }, async () => {
    const sentIds = new Set<string>();
    const refusedIds = new Set<string>();
    const call = async (opts: InjectOptions, status: number, code?: string, refused = false): Promise<Record<string, unknown>> => {
      const r = await app.inject({ ...opts, headers: { ...(opts.headers ?? {}), authorization: `Bearer ${TOKEN}` } });
      expect(r.statusCode, `${opts.method} ${opts.url}: ${r.body}`).toBe(status);
      const body = r.body ? (JSON.parse(r.body) as Record<string, unknown>) : {};
      if (code) expect(body.code).toBe(code);
      (refused ? refusedIds : sentIds).add(String(r.headers['x-request-id']));
      return body;
    };
    const b64 = (s: string): string => Buffer.from(s).toString('base64');

    // --- typed routes, each command once ---------------------------------------------------------
    await call({ method: 'POST', url: '/v1/vms/h1/fstrim', payload: {} }, 200);
    await call({ method: 'PUT', url: '/v1/vms/h1/time', payload: {} }, 200);
    await call({ method: 'PATCH', url: '/v1/vms/h1/vcpus', payload: { vcpus: [{ 'logical-id': 1, online: true }] } }, 200);
    await call({ method: 'PUT', url: '/v1/vms/h1/users/admin/password', payload: { password: PASSWORD } }, 204);
    await call({ method: 'POST', url: '/v1/vms/h1/users/admin/ssh-keys', payload: { keys: [KEY] } }, 204);
    await call({ method: 'DELETE', url: `/v1/vms/h1/users/admin/ssh-keys?key=${encodeURIComponent(KEY)}` }, 204);
    await call({ method: 'POST', url: '/v1/vms/h1/exec', payload: { path: '/bin/cat', 'input-data': b64(INPUT), wait: 5 } }, 200);
    // file streaming (open, write…, close) and raw handles (open, write, seek, flush, close)
    await call({ method: 'PUT', url: '/v1/vms/h1/files/content?path=/data/audit.bin', payload: Buffer.from(CONTENT), headers: { 'content-type': 'application/octet-stream' } }, 200);
    const opened = await call({ method: 'POST', url: '/v1/vms/h1/files/handles', payload: { path: '/data/audit2.bin', mode: 'w' } }, 201);
    const h = String(opened.handle);
    await call({ method: 'POST', url: `/v1/vms/h1/files/handles/${h}/write`, payload: { 'buf-b64': b64(CONTENT) } }, 200);
    await call({ method: 'POST', url: `/v1/vms/h1/files/handles/${h}/seek`, payload: { offset: 0, whence: 'set' } }, 200);
    await call({ method: 'POST', url: `/v1/vms/h1/files/handles/${h}/flush` }, 204);
    await call({ method: 'DELETE', url: `/v1/vms/h1/files/handles/${h}` }, 204);
    // raw passthrough: a mutating command is recorded, a read is not
    await call({ method: 'POST', url: '/v1/vms/h1/qga/guest-set-time', payload: {} }, 200);
    await call({ method: 'POST', url: '/v1/vms/h1/qga/guest-get-time', payload: {} }, 200);

    // --- freeze and thaw: caller, refused while frozen, group, deadline (the gateway's own) --------
    const lease = await call({ method: 'POST', url: '/v1/vms/h1/fsfreeze', payload: {} }, 201);
    await call({ method: 'PUT', url: '/v1/vms/h1/time', payload: {} }, 409, 'VM_FROZEN', true);
    await call({ method: 'DELETE', url: `/v1/vms/h1/fsfreeze?leaseId=${String(lease.leaseId)}` }, 200);
    const group = await call({ method: 'POST', url: '/v1/freeze-groups', payload: { vms: ['h1', 'h2'] } }, 201);
    await call({ method: 'DELETE', url: `/v1/freeze-groups/${String(group.id)}?leaseId=${String(group.leaseId)}` }, 200);
    await call({ method: 'POST', url: '/v1/vms/h2/fsfreeze', payload: { ttlSeconds: 1 } }, 201);
    await waitFor(() => records().some((r) => r.vm === 'h2' && r.command === 'guest-fsfreeze-thaw' && r.by === 'gateway' && r.phase === 'end'));

    // --- failures after sending: agent error, timeout, connection dropped mid-command ------------
    vms.h1.setFault({ command: 'guest-set-time', kind: 'error', class: 'GenericError', desc: 'hwclock failed', times: 1 });
    await call({ method: 'PUT', url: '/v1/vms/h1/time', payload: {} }, 422, 'AGENT_ERROR');
    vms.hhang.setFault({ command: 'guest-set-time', kind: 'hang', times: 1 });
    await call({ method: 'PUT', url: '/v1/vms/hhang/time', payload: {} }, 504, 'AGENT_TIMEOUT');
    vms.hkill.setFault({ command: 'guest-set-vcpus', kind: 'drop-mid-reply', times: 1 });
    await call({ method: 'PATCH', url: '/v1/vms/hkill/vcpus', payload: { vcpus: [{ 'logical-id': 1, online: false }] } }, 503, 'AGENT_UNAVAILABLE');
    await call({ method: 'POST', url: '/v1/vms/hdown/shutdown', payload: { mode: 'halt' } }, 202);
    // the agent process killed (its listener closed, clients dropped) with guest-fstrim running
    vms.hkill2.setFault({ command: 'guest-fstrim', kind: 'hang', times: 1 });
    const dying = call({ method: 'POST', url: '/v1/vms/hkill2/fstrim', payload: {} }, 503, 'AGENT_UNAVAILABLE');
    await waitFor(() => vms.hkill2.stats.commandLog.some((c) => c.command === 'guest-fstrim'));
    await vms.hkill2.kill();
    await dying;
    // a forced thaw (admin) is the caller's
    await call({ method: 'POST', url: '/v1/vms/h1/fsfreeze', payload: {} }, 201);
    await call({ method: 'DELETE', url: '/v1/vms/h1/fsfreeze?force=true' }, 200);

    // --- refused before sending: no record ------------------------------------------------------
    await call({ method: 'PUT', url: '/v1/vms/h1/users/admin/password', payload: { password: '' } }, 400, 'VALIDATION_FAILED', true);
    await call({ method: 'POST', url: '/v1/vms/hdis/fstrim', payload: {} }, 403, 'COMMAND_DISABLED', true);
    await call({ method: 'POST', url: '/v1/vms/h1/qga/guest-fsfreeze-freeze', payload: {} }, 409, 'USE_FREEZE_API', true);
    await call({ method: 'POST', url: '/v1/vms/h1/qga/guest-from-the-future', payload: {} }, 501, 'COMMAND_NOT_SUPPORTED', true);

    // the gateway shuts down with h2 frozen under a lease: it thaws it on its own
    await call({ method: 'POST', url: '/v1/vms/h2/fsfreeze', payload: { ttlSeconds: 600 } }, 201);
    appClosed = true;
    await app.close();
    expect(vms.h2.state.frozen).toBe(false);

    // every job has settled by now (each response came after its command's end, the deadline thaw
    // was awaited, the app is closed)
    const recs = records();
    // (a) pairs: exactly one start and one end per id
    const byId = new Map<number, Rec[]>();
    for (const r of recs) byId.set(r.id, [...(byId.get(r.id) ?? []), r]);
    for (const [id, rs] of byId) {
      expect(rs.map((r) => r.phase), `record id ${id}`).toEqual(['start', 'end']);
      expect(new Set(rs.map((r) => `${r.vm} ${r.command} ${r.by} ${r.requestId}`)).size).toBe(1);
    }
    // (b) per VM, the start records are exactly the mutating commands the agent received, in order
    for (const [name, vm] of Object.entries(vms)) {
      const received = vm.stats.commandLog.map((c) => c.command).filter(mutating);
      const started = recs.filter((r) => r.vm === name && r.phase === 'start').map((r) => r.command);
      expect(started, `VM ${name}`).toEqual(received);
    }
    const all = recs.filter((r) => r.phase === 'start').map((r) => r.command);
    for (const c of ['guest-fstrim', 'guest-set-time', 'guest-set-vcpus', 'guest-set-user-password', 'guest-ssh-add-authorized-keys',
      'guest-ssh-remove-authorized-keys', 'guest-exec', 'guest-file-open', 'guest-file-write', 'guest-file-seek', 'guest-file-flush',
      'guest-file-close', 'guest-fsfreeze-freeze', 'guest-fsfreeze-thaw', 'guest-shutdown']) {
      expect(all, c).toContain(c);
    }
    expect(all).not.toContain('guest-get-time');
    expect(all).not.toContain('guest-exec-status');
    // (c) outcomes of the failures
    const ends = recs.filter((r) => r.phase === 'end');
    const endOf = (vm: string, command: string): Rec[] => ends.filter((r) => r.vm === vm && r.command === command);
    expect(endOf('h1', 'guest-set-time').map((r) => r.outcome)).toEqual(['ok', 'ok', 'agent_error']);
    expect(endOf('h1', 'guest-set-time')[2].code).toBe('AGENT_ERROR');
    expect(endOf('hhang', 'guest-set-time').map((r) => [r.outcome, r.code])).toEqual([['timeout', 'AGENT_TIMEOUT']]);
    expect(endOf('hkill', 'guest-set-vcpus').map((r) => [r.outcome, r.code, r.sends])).toEqual([['unavailable', 'AGENT_UNAVAILABLE', 1]]);
    expect(endOf('hdown', 'guest-shutdown').map((r) => r.outcome)).toEqual(['ok']);
    expect(endOf('hkill2', 'guest-fstrim').map((r) => [r.outcome, r.code])).toEqual([['unavailable', 'AGENT_UNAVAILABLE']]);
    // h1's thaws: the caller's, the group's, the forced one; all for the token's principal
    expect(endOf('h1', 'guest-fsfreeze-thaw').map((r) => [r.by, r.outcome])).toEqual([['ops', 'ok'], ['ops', 'ok'], ['ops', 'ok']]);
    // (d) who: the token's principal and the request id for everything sent for a request; the
    // deadline thaw is the gateway's, with no request id
    for (const r of recs) {
      if (r.by === 'gateway') {
        // the deadline thaw and the shutdown thaw of h2
        expect([r.vm, r.command, r.requestId]).toEqual(['h2', 'guest-fsfreeze-thaw', undefined]);
        continue;
      }
      expect(r.by).toBe('ops');
      expect(sentIds.has(String(r.requestId)), `${r.command} ${r.requestId}`).toBe(true);
    }
    expect(recs.filter((r) => r.by === 'gateway').map((r) => [r.phase, r.outcome])).toEqual([['start', undefined], ['end', 'ok'], ['start', undefined], ['end', 'ok']]);
    // (e) refused before sending: no record carries their request ids
    expect(recs.filter((r) => refusedIds.has(String(r.requestId)))).toEqual([]);
    // (f) no argument in any record, nor the password, content or input anywhere in the log
    for (const r of recs) expect(Object.keys(r).sort()).toEqual(expect.arrayContaining(['action', 'by', 'command', 'id', 'phase', 'vm']));
    for (const r of recs) expect('arguments' in r || 'args' in r).toBe(false);
    // the start records name the fields given (values redacted by their absence); exec's shows its argv (D7)
    const startOf = (vm: string, command: string): Rec[] => recs.filter((r) => r.phase === 'start' && r.vm === vm && r.command === command);
    expect(startOf('h1', 'guest-set-user-password').map((r) => [...(r.fields ?? [])].sort())).toEqual([['crypted', 'password', 'username']]);
    expect(startOf('h1', 'guest-exec').map((r) => [r.argv, r.fields?.includes('input-data')])).toEqual([[['/bin/cat'], true]]);
    expect(startOf('h1', 'guest-file-write').every((r) => r.fields?.includes('buf-b64'))).toBe(true);
    for (const secret of [PASSWORD, CONTENT, INPUT, b64(PASSWORD), b64(CONTENT), b64(INPUT), TOKEN]) {
      expect(rawLog.filter((l) => l.includes(secret))).toEqual([]);
    }
    console.log(`audit history: ${byId.size} mutating commands, ${recs.length} records, ${refusedIds.size} refusals without a record`);
  });
});
