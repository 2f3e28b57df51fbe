/**
 * Issue 12, item 4 — no back door around leases: the raw passthrough refuses freeze and thaw
 * (409 USE_FREEZE_API) without sending anything, so a VM frozen under one caller's lease cannot be
 * thawed by another through POST …/qga/guest-fsfreeze-thaw; and every raw call is audited.
 */
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { buildApp } from '../../src/app.js';
import { testConfig } from '../helpers/app.js';
import { agentCommands, body, expectProblem, startSim, type SimFleet } from '../integration/routes-support.js';

let fleet: SimFleet;
let vm: SimAgent;
let app: FastifyInstance;
const lines: Record<string, unknown>[] = [];

const TOKENS = { backup: 'backup-token-0123456789abcdef', ops: 'ops-token-0123456789abcdef01' };
const as = (t: string) => ({ authorization: `Bearer ${t}` });

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'db1' });
  const config = testConfig({
    vms: [{ name: 'db1', endpoint: vm.endpoint }],
    config: {
      auth: {
        tokens: [
          { name: 'backup', token: TOKENS.backup, scopes: ['read', 'write'] },
          { name: 'ops', token: TOKENS.ops, scopes: ['read', 'write', 'admin'] },
        ],
      },
    },
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  app = await buildApp({ config, logger: pino({ level: 'info' }, sink), env: {} });
  await app.ready();
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

describe('raw passthrough and freezes', () => {
  it('refuses freeze, freeze-list and thaw with 409 USE_FREEZE_API and sends nothing', async () => {
    const before = agentCommands(vm).length;
    for (const command of ['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw']) {
      const p = await expectProblem(app, { method: 'POST', url: `/v1/vms/db1/qga/${command}`, headers: as(TOKENS.ops), payload: {} }, 409, 'USE_FREEZE_API');
      expect(p.command).toBe(command);
    }
    expect(agentCommands(vm).slice(before)).toEqual([]);
    expect(vm.stats.frozen).toBe(false);
  });

  it("an admin cannot thaw another caller's lease through the raw route; the lease holder can through the API", async () => {
    const frozen = await app.inject({ method: 'POST', url: '/v1/vms/db1/fsfreeze', headers: as(TOKENS.backup), payload: { ttlSeconds: 30 } });
    expect(frozen.statusCode).toBe(201);
    const { leaseId } = body(frozen);
    expect(vm.stats.frozen).toBe(true);
    const before = agentCommands(vm).length;
    await expectProblem(app, { method: 'POST', url: '/v1/vms/db1/qga/guest-fsfreeze-thaw', headers: as(TOKENS.ops), payload: {} }, 409, 'USE_FREEZE_API');
    expect(agentCommands(vm).slice(before)).not.toContain('guest-fsfreeze-thaw');
    expect(vm.stats.frozen).toBe(true);
    const thawed = await app.inject({ method: 'DELETE', url: `/v1/vms/db1/fsfreeze?leaseId=${String(leaseId)}`, headers: as(TOKENS.backup) });
    expect(thawed.statusCode).toBe(200);
    expect(vm.stats.frozen).toBe(false);
  });

  it('records every raw call in the audit trail: who, VM, command, never the arguments', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/vms/db1/qga/guest-ping', headers: as(TOKENS.ops), payload: {} });
    expect(res.statusCode).toBe(200);
    await app.inject({ method: 'POST', url: '/v1/vms/db1/qga/guest-set-user-password', headers: as(TOKENS.ops), payload: { username: 'root', password: 'c2VjcmV0LXB3', crypted: false } });
    const audit = lines.filter((l) => l.audit === true && l.action === 'raw');
    expect(audit.map((l) => [l.by, l.vm, l.command])).toEqual([
      ['ops', 'db1', 'guest-ping'],
      ['ops', 'db1', 'guest-set-user-password'],
    ]);
    expect(JSON.stringify(lines)).not.toContain('c2VjcmV0LXB3');
  });
});
