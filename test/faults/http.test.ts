/**
 * Fault matrix group D (../shared/FAULTS.md), the cases not already asserted in test/security/:
 *  - D5/D7: an authorization table generated from every operation of the served OpenAPI document
 *    × {anonymous, read, write, admin, token whose VM globs miss the VM}. The scope each operation
 *    needs is taken from the route sources (`scope:` in its operation(...) options, else read for
 *    GET/HEAD and write otherwise; `security: []` in the document = public), the expectation from
 *    the rules of src/http/plugins/auth.ts: 401 UNAUTHENTICATED without a token, 403 FORBIDDEN when
 *    the token lacks the scope, 403 FORBIDDEN for the wrong-glob token on `{vm}` routes, otherwise
 *    neither 401 nor 403. Every cell is asserted; the table is printed.
 *    Two rules beyond the route's scope, both documented on their operations, are part of the
 *    expectation: DELETE …/fsfreeze with force=true needs admin; a token limited by VM globs may
 *    name only VMs inside them in a body too (POST /v1/freeze-groups → 403 FORBIDDEN, POST /v1/vms
 *    → 403 REGISTRATION_DENIED). POST /v1/vms registers a real second simulated VM (its socket in
 *    the configured VMs' folder, an allowed root) and DELETE /v1/vms/{vm} deletes that one, so the
 *    admin cells are the operations' success, not a refusal of the generated endpoint.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { makeApp } from '../helpers/app.js';
import { operationCases, type GeneratedRequest, type OpenApiDoc, type OperationCases } from '../helpers/openapi-cases.js';
import { startSim, type SimFleet } from '../integration/routes-support.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

type Scope = 'read' | 'write' | 'admin';
type Who = 'anonymous' | 'read' | 'write' | 'admin' | 'wrong-glob';

const TOKENS: Record<Exclude<Who, 'anonymous'>, { token: string; scopes: Scope[]; vms?: string[] }> = {
  read: { token: 'authz-read-0123456789abcdef', scopes: ['read'] },
  write: { token: 'authz-write-0123456789abcdef', scopes: ['read', 'write'] },
  admin: { token: 'authz-admin-0123456789abcdef', scopes: ['read', 'write', 'admin'] },
  // every scope, but its globs do not match the VM of the table
  'wrong-glob': { token: 'authz-glob-0123456789abcdef', scopes: ['read', 'write', 'admin'], vms: ['other-*'] },
};
const WHO: Who[] = ['anonymous', 'read', 'write', 'admin', 'wrong-glob'];

/** operationId → the scope its route declares (operation(tag, id, { scope: … })) in src/http/routes. */
function declaredScopes(): Map<string, Scope> {
  const out = new Map<string, Scope>();
  const dir = path.join(ROOT, 'src', 'http', 'routes');
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    const text = readFileSync(path.join(dir, f), 'utf8');
    const parts = text.split(/\boperation\(\s*'[^']*',\s*'/).slice(1);
    for (const part of parts) {
      const id = part.slice(0, part.indexOf("'"));
      const scope = /\bscope:\s*'(read|write|admin)'/.exec(part)?.[1] as Scope | undefined;
      if (scope) out.set(id, scope);
    }
  }
  return out;
}

let fleet: SimFleet;
let vm: SimAgent;
let extra: SimAgent;
let app: FastifyInstance;
let doc: OpenApiDoc;
let cases: OperationCases[];

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'authz-vm' });
  extra = await fleet.add({ name: 'authz-new' });
  app = await makeApp({
    vms: [{ name: 'authz-vm', endpoint: vm.endpoint }],
    config: {
      auth: { anonymousScopes: [], tokens: Object.entries(TOKENS).map(([name, t]) => ({ name, ...t })) },
      exec: { maxWaitSeconds: 1 },
      agent: { idleReleaseMs: 0, timeouts: { fast: 2000, normal: 2000, slow: 2000, freeze: 2000, long: 2000 } },
    },
  });
  const res = await app.inject({ method: 'GET', url: '/openapi.json' });
  doc = res.json<OpenApiDoc>();
  // power operations last: the simulated VM stops answering after a shutdown
  const last = (c: OperationCases) => (/\/(shutdown|suspend)$/.test(c.path) ? 1 : 0);
  cases = operationCases(doc, { vm: 'authz-vm' }).sort((a, b) => last(a) - last(b));
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

function expected(c: OperationCases, url: string, scope: Scope | 'public', who: Who): { status?: 401 | 403; code?: string } {
  if (scope === 'public') return {};
  if (who === 'anonymous') return { status: 401, code: 'UNAUTHENTICATED' };
  const force = c.method === 'DELETE' && c.path.endsWith('/fsfreeze') && new URL(url, 'http://x').searchParams.get('force') === 'true';
  if (!TOKENS[who].scopes.includes(force ? 'admin' : scope)) return { status: 403, code: 'FORBIDDEN' };
  if (who === 'wrong-glob') {
    if (c.path.includes('{vm}')) return { status: 403, code: 'FORBIDDEN' };
    if (c.method === 'POST' && c.path === '/v1/freeze-groups') return { status: 403, code: 'FORBIDDEN' };
    if (c.method === 'POST' && c.path === '/v1/vms') return { status: 403, code: 'REGISTRATION_DENIED' };
    // the metrics name every VM: a token limited to some may not read them
    if (c.method === 'GET' && c.path === '/metrics') return { status: 403, code: 'FORBIDDEN' };
  }
  return {};
}

/** The request of a cell: one deterministic sample, pinned where the sample cannot succeed. */
function sample(c: OperationCases): GeneratedRequest {
  const [req] = fc.sample(c.valid, { numRuns: 1, seed: 1 });
  if (c.method === 'POST' && c.path === '/v1/vms') return { ...req, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ name: 'authz-new', endpoint: extra.endpoint }) };
  if (c.method === 'DELETE' && c.path === '/v1/vms/{vm}') return { ...req, url: '/v1/vms/authz-new' };
  return req;
}

describe('D5/D7 authorization table: every operation × every kind of caller', () => {
  it('every cell is asserted', { timeout: 60_000 }, async () => {
    const scopes = declaredScopes();
    expect(cases.length).toBeGreaterThan(50);
    const rows: string[] = [];
    const wrong: string[] = [];
    let cells = 0;
    let grantedCells = 0;
    let granted2xx = 0;
    for (const c of cases) {
      const op = (doc.paths[c.path] as Record<string, { operationId?: string; security?: unknown[]; responses?: Record<string, unknown> }>)[c.method.toLowerCase()];
      const documented = new Set(Object.keys(op.responses ?? {}));
      const isPublic = Array.isArray(op.security) && op.security.length === 0;
      const scope: Scope | 'public' = isPublic ? 'public' : ((op.operationId ? scopes.get(op.operationId) : undefined) ?? (c.method === 'GET' || c.method === 'HEAD' ? 'read' : 'write'));
      const req = sample(c);
      const row: string[] = [];
      for (const who of WHO) {
        const headers = who === 'anonymous' ? req.headers : { ...req.headers, authorization: `Bearer ${TOKENS[who].token}` };
        const res = await app.inject({ ...req, headers });
        const want = expected(c, req.url, scope, who);
        const code = res.statusCode >= 400 ? String(res.json<{ code?: string }>().code) : '';
        cells++;
        row.push(`${who}=${res.statusCode}${code ? ` ${code}` : ''}`);
        // a granted cell is answered by the operation itself: neither an auth refusal nor a defect
        // (500), and a status the operation documents in the served OpenAPI document
        const granted = res.statusCode !== 401 && res.statusCode !== 403 && res.statusCode !== 500 && (documented.has(String(res.statusCode)) || documented.has('default'));
        const ok = want.status !== undefined ? res.statusCode === want.status && code === want.code : granted;
        if (want.status === undefined) {
          grantedCells++;
          if (res.statusCode < 300) granted2xx++;
        }
        if (!ok) wrong.push(`${c.method} ${c.path} [${scope}] as ${who}: want ${want.status ?? `a documented status (${[...documented].join(',')}) but 401/403/500`} ${want.code ?? ''}, got ${res.statusCode} ${res.body.slice(0, 160)}`);
      }
      rows.push(`${c.method.padEnd(6)} ${c.path.padEnd(48)} ${String(scope).padEnd(6)} ${row.join('  ')}`);
    }
    process.stdout.write(`[faults/http] authz table (${cells} cells; ${granted2xx} of ${grantedCells} granted cells 2xx):\n${rows.join('\n')}\n`);
    expect(wrong, wrong.join('\n')).toEqual([]);
    expect(cells).toBe(cases.length * WHO.length);
    // D7: exec is an admin operation in this gateway (FAULTS.md asks for write; see test/FAULTS.md, D7)
    expect(scopes.get('execCommand')).toBe('admin');
  });
});

/**
 * A hostile guest agent on a unix socket: it speaks the QGA framing (sync-delimited, id echo) and
 * answers the inventory commands with what `reply` returns — raw bytes, so it can send invalid
 * UTF-8 and control characters a JSON encoder would never produce.
 */
async function hostileAgent(dir: string, reply: (cmd: string) => Buffer | string): Promise<{ endpoint: { type: 'unix'; path: string }; close(): Promise<void> }> {
  const socketPath = path.join(dir, 'hostile.sock');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = '';
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).replace(/^\xff+/, '');
        buf = buf.slice(nl + 1);
        if (line.trim() === '') continue;
        const req = JSON.parse(line) as { execute: string; arguments?: { id?: number }; id?: unknown };
        const id = req.id === undefined ? '' : `, "id": ${JSON.stringify(req.id)}`;
        if (req.execute === 'guest-sync-delimited') {
          sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${req.arguments?.id ?? 0}}\n`)]));
        } else if (req.execute === 'guest-info') {
          const cmds = ['guest-ping', 'guest-get-host-name', 'guest-get-users', 'guest-network-get-interfaces'];
          sock.write(`{"return": {"version": "10.0.0", "supported_commands": ${JSON.stringify(cmds.map((name) => ({ name, enabled: true, 'success-response': true })))}}${id}}\n`);
        } else if (req.execute === 'guest-ping') {
          sock.write(`{"return": {}${id}}\n`);
        } else {
          const r = reply(req.execute);
          sock.write(Buffer.concat([Buffer.from('{"return": '), Buffer.isBuffer(r) ? r : Buffer.from(r), Buffer.from(`${id}}\n`)]));
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, () => r()));
  return {
    endpoint: { type: 'unix', path: socketPath },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('D10: hostile guest data', () => {
  it('ANSI escapes come back JSON-escaped, invalid UTF-8 as U+FFFD, oversized lists as 502 REPLY_TOO_LARGE; the gateway keeps serving', { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-hostile-'));
    let hostName: Buffer = Buffer.from('"plain"');
    let users = 10;
    const agent = await hostileAgent(dir, (cmd) => {
      if (cmd === 'guest-get-host-name') return Buffer.concat([Buffer.from('{"host-name": '), hostName, Buffer.from('}')]);
      if (cmd === 'guest-get-users') return JSON.stringify(Array.from({ length: users }, (_, i) => ({ user: `u${i}\u001b[31m`, 'login-time': i })));
      return JSON.stringify(Array.from({ length: 200_000 }, (_, i) => ({ name: `eth${i}`, 'hardware-address': '00:00:00:00:00:00' })));
    });
    const g = await makeApp({ vms: [{ name: 'hostile', endpoint: agent.endpoint }], config: { agent: { idleReleaseMs: 0, maxReplyBytes: 4 * 1024 * 1024 }, files: { readChunkBytes: 1024 * 1024, maxRawReadBytes: 1024 * 1024 } } });
    try {
      // ANSI/OSC escapes (valid JSON \u escapes): returned as data, escaped in the JSON body
      hostName = Buffer.from(JSON.stringify('evil\u001b[2J\u001b]0;pwned\u0007<script>'));
      const ansi = await g.inject({ method: 'GET', url: '/v1/vms/hostile/hostname' });
      expect(ansi.statusCode, ansi.body).toBe(200);
      expect(ansi.rawPayload.includes(0x1b)).toBe(false);
      expect(ansi.rawPayload.includes(0x07)).toBe(false);
      expect(ansi.json<{ 'host-name': string }>()['host-name']).toBe('evil\u001b[2J\u001b]0;pwned\u0007<script>');
      // invalid UTF-8 inside a string: decoded with replacement characters, never passed through raw
      hostName = Buffer.from([0x22, 0x61, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x62, 0x22]);
      const bad = await g.inject({ method: 'GET', url: '/v1/vms/hostile/hostname' });
      expect(bad.statusCode, bad.body).toBe(200);
      expect(bad.json<{ 'host-name': string }>()['host-name']).toMatch(/^a\uFFFD\(\uFFFD+b$/);
      expect(Buffer.from(bad.json<{ 'host-name': string }>()['host-name']).toString('utf8')).toBe(bad.json<{ 'host-name': string }>()['host-name']);
      // a user list that fits: every entry, escapes escaped
      users = 5_000;
      const fits = await g.inject({ method: 'GET', url: '/v1/vms/hostile/users' });
      expect(fits.statusCode).toBe(200);
      expect(fits.json<{ users: unknown[] }>().users.length).toBe(5_000);
      expect(fits.rawPayload.includes(0x1b)).toBe(false);
      // lists over agent.maxReplyBytes: one bounded 502, not a crash or an unbounded buffer
      users = 200_000;
      const huge = await g.inject({ method: 'GET', url: '/v1/vms/hostile/users' });
      expect(huge.statusCode, huge.body.slice(0, 200)).toBe(502);
      expect(huge.json<{ code: string }>().code).toBe('REPLY_TOO_LARGE');
      const ifs = await g.inject({ method: 'GET', url: '/v1/vms/hostile/network/interfaces' });
      expect(ifs.statusCode, ifs.body.slice(0, 200)).toBe(502);
      expect(ifs.json<{ code: string }>().code).toBe('REPLY_TOO_LARGE');
      // and the VM answers next
      expect((await g.inject({ method: 'GET', url: '/v1/vms/hostile/ping' })).statusCode).toBe(200);
    } finally {
      await g.close();
      await agent.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('D2/D3: per-call limits of the raw file handles; the streaming routes chunk', () => {
  const KiB = 1024;
  it('D2 a base64 write over files.maxRawWriteBytes is 413 PAYLOAD_TOO_LARGE and sends nothing; D3 a read count over files.maxRawReadBytes is 400 naming it; content moves in readChunkBytes/writeChunkBytes calls', { timeout: 30_000 }, async () => {
    const f = await startSim();
    const guest = await f.add({ name: 'files-vm' });
    const g = await makeApp({
      vms: [{ name: 'files-vm', endpoint: guest.endpoint }],
      config: { files: { maxRawWriteBytes: 16 * KiB, maxRawReadBytes: 16 * KiB, readChunkBytes: 8 * KiB, writeChunkBytes: 8 * KiB } },
    });
    const since = () => guest.stats.commandLog.length;
    const fileCalls = (from: number) => guest.stats.commandLog.slice(from).filter((c) => c.command.startsWith('guest-file-'));
    try {
      const open = await g.inject({ method: 'POST', url: '/v1/vms/files-vm/files/handles', payload: { path: '/tmp/d2', mode: 'w+' } });
      expect(open.statusCode, open.body).toBe(201);
      const handle = open.json<{ handle: number }>().handle;
      const write = (n: number) => g.inject({ method: 'POST', url: `/v1/vms/files-vm/files/handles/${handle}/write`, payload: { 'buf-b64': Buffer.alloc(n, 0x61).toString('base64') } });
      let mark = since();
      const over = await write(16 * KiB + 1);
      expect(over.statusCode, over.body).toBe(413);
      expect(over.json<{ code: string; detail: string }>()).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', detail: expect.stringMatching(/files\.maxRawWriteBytes/) });
      expect(fileCalls(mark)).toEqual([]);
      const atLimit = await write(16 * KiB);
      expect(atLimit.statusCode, atLimit.body).toBe(200);
      expect(atLimit.json<{ count: number }>().count).toBe(16 * KiB);

      const read = (count: number) => g.inject({ method: 'POST', url: `/v1/vms/files-vm/files/handles/${handle}/read`, payload: { count } });
      mark = since();
      const tooMuch = await read(16 * KiB + 1);
      expect(tooMuch.statusCode, tooMuch.body).toBe(400);
      expect(tooMuch.json<{ code: string; detail: string }>()).toMatchObject({ code: 'VALIDATION_FAILED', detail: expect.stringMatching(/files\.maxRawReadBytes/) });
      expect(fileCalls(mark)).toEqual([]);
      expect((await read(16 * KiB)).statusCode).toBe(200);
      expect((await g.inject({ method: 'DELETE', url: `/v1/vms/files-vm/files/handles/${handle}` })).statusCode).toBe(204);

      // the streaming routes take any size, in calls of writeChunkBytes / readChunkBytes
      const data = Buffer.alloc(100 * KiB + 5, 0x62);
      mark = since();
      const put = await g.inject({ method: 'PUT', url: '/v1/vms/files-vm/files/content?path=%2Ftmp%2Fd3', headers: { 'content-type': 'application/octet-stream' }, payload: data });
      expect(put.statusCode, put.body).toBe(200);
      const writes = fileCalls(mark).filter((c) => c.command === 'guest-file-write');
      expect(writes.length).toBe(Math.ceil(data.length / (8 * KiB)));
      mark = since();
      const get = await g.inject({ method: 'GET', url: '/v1/vms/files-vm/files/content?path=%2Ftmp%2Fd3' });
      expect(get.statusCode).toBe(200);
      expect(get.rawPayload.equals(data)).toBe(true);
      const reads = fileCalls(mark).filter((c) => c.command === 'guest-file-read');
      // every call asks for readChunkBytes, the last for what remains of the known size
      const counts = reads.map((c) => (c.args as { count: number }).count);
      expect(counts).toEqual([...Array<number>(12).fill(8 * KiB), data.length - 12 * 8 * KiB]);
    } finally {
      await g.close();
      await f.close();
    }
  });
});

describe('D6/D9: hostile path parameters and prototype keys', () => {
  it('VM ids with ../, absolute paths, encoded separators or unknown names are 400 VALIDATION_FAILED or 404 VM_NOT_FOUND (one each) and reach no agent; __proto__/constructor members are 400 VALIDATION_FAILED', { timeout: 30_000 }, async () => {
    const f = await startSim();
    const guest = await f.add({ name: 'inj-vm' });
    const g = await makeApp({ vms: [{ name: 'inj-vm', endpoint: guest.endpoint }] });
    try {
      const cases: Array<[string, number, string]> = [
        ['..%2F..%2Fetc%2Fpasswd', 400, 'VALIDATION_FAILED'],
        ['%2Ftmp%2Fqga.sock', 400, 'VALIDATION_FAILED'],
        // a bare dot segment is resolved away: /v1/vms/../ping is /v1/ping, no such route
        ['..', 404, 'NOT_FOUND'],
        ['inj-vm%00', 400, 'VALIDATION_FAILED'],
        ['%2e%2e%2finj-vm', 400, 'VALIDATION_FAILED'],
        ['no-such-vm', 404, 'VM_NOT_FOUND'],
      ];
      const got: Array<[string, number, string]> = [];
      for (const [id] of cases) {
        const r = await g.inject({ method: 'GET', url: `/v1/vms/${id}/ping` });
        got.push([id, r.statusCode, String(r.json<{ code?: string }>().code)]);
      }
      expect(got).toEqual(cases);
      for (const payload of ['{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{"admin":true}}}', '{"path":"/bin/true","__proto__":{"arg":["x"]}}']) {
        const r = await g.inject({ method: 'POST', url: '/v1/vms/inj-vm/exec', headers: { 'content-type': 'application/json' }, payload });
        expect(r.statusCode, `${payload} → ${r.body}`).toBe(400);
        expect(r.json<{ code: string }>().code).toBe('VALIDATION_FAILED');
      }
      expect(guest.stats.commandLog.map((c) => c.command).filter((c) => !/^guest-(sync|sync-delimited|info)$/.test(c))).toEqual([]);
      expect(({} as Record<string, unknown>).admin).toBeUndefined();
    } finally {
      await g.close();
      await f.close();
    }
  });
});
