/**
 * Issue 12, item 3 — registry integrity, through the real app with tokens configured: an endpoint
 * belongs to one VM (a unix socket by its real path, whatever alias names it: the same path, a
 * symlink, `..`), a glob-limited token registers and deletes only names inside its globs, unix
 * sockets resolve inside registry.allowedSocketRoots (symlinks followed, as the kernel follows
 * them), TCP endpoints need registry.allowedTcpEndpoints, and every refusal that involves the
 * endpoint is one and the same 403 REGISTRATION_DENIED, so registration is no file-existence,
 * port-scan or hidden-VM oracle. Endpoints are shown to admin callers only.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { buildConfig, ConfigError } from '../../src/config/load.js';
import { DEFAULT_SOCKET_ROOTS } from '../../src/config/schema.js';
import { socketRootsOf } from '../../src/registry/registry.js';
import { makeApp } from '../helpers/app.js';
import { expectProblem, startSim, type SimFleet } from '../integration/routes-support.js';

const ADMIN = 'admin-token-0123456789abcdef';
const A_ADMIN = 'a-admin-token-0123456789abcdef'; // admin scope, but only VMs a-*
const READER = 'read-token-0123456789abcdef';
const WRITER = 'write-token-0123456789abcdef';
const as = (token: string) => ({ authorization: `Bearer ${token}` });

const TOKENS = [
  { name: 'admin', token: ADMIN, scopes: ['read', 'write', 'admin'] },
  { name: 'a-admin', token: A_ADMIN, scopes: ['read', 'write', 'admin'], vms: ['a-*'] },
  { name: 'reader', token: READER, scopes: ['read'] },
  { name: 'writer', token: WRITER, scopes: ['read', 'write'] },
];

let fleet: SimFleet; // the gateway's own socket folder (a root by default: b-1 is configured there)
let outside: string; // a folder outside every root
let outsideSim: Simulator;
let b1: SimAgent; // statically configured
let free1: SimAgent; // a socket in the roots nobody holds
let victim: SimAgent; // a live socket outside the roots
let tcpVictim: SimAgent; // a live TCP agent not in the allowlist
let app: FastifyInstance;

beforeAll(async () => {
  fleet = await startSim();
  outside = await mkdtemp(path.join(os.tmpdir(), 'qga-outside-'));
  outsideSim = new Simulator({ dir: outside });
  [b1, free1, victim, tcpVictim] = await Promise.all([
    fleet.add({ name: 'b-1' }),
    fleet.add({ name: 'free-1' }),
    outsideSim.addVm({ name: 'victim' }),
    fleet.add({ name: 'tcp-victim', tcp: true }),
  ]);
  await mkdir(path.join(fleet.dir, 'sub'));
  await mkdir(path.join(outside, 'deep'));
  await writeFile(path.join(outside, 'plain-file'), 'not a socket');
  // aliases of b-1's socket inside the roots
  await symlink(unixPath(b1), path.join(fleet.dir, 'alias.sock'));
  await symlink(fleet.dir, path.join(fleet.dir, 'samedir'));
  // ways out of the roots
  await symlink(path.join(outside, 'victim.sock'), path.join(fleet.dir, 'escape.sock'));
  await symlink(outside, path.join(fleet.dir, 'outdir'));
  await symlink(path.join(outside, 'deep'), path.join(fleet.dir, 'deeplink'));
  await symlink(path.join(outside, 'missing.sock'), path.join(fleet.dir, 'dangling.sock'));
  app = await makeApp({
    vms: [{ name: 'b-1', endpoint: b1.endpoint }],
    config: {
      auth: { tokens: TOKENS },
      registry: { allowedTcpEndpoints: ['127.0.0.1:7001', 'qga-host.example:*'] },
    },
  });
});

afterAll(async () => {
  await app?.close();
  await outsideSim?.close();
  await fleet?.close();
  await rm(outside, { recursive: true, force: true });
});

function unixPath(a: SimAgent): string {
  if (a.endpoint.type !== 'unix') throw new Error('not a unix agent');
  return a.endpoint.path;
}

/** a path in the gateway's folder, spelled as given: `..` and `.` are left for the gateway to resolve */
const inFleet = (...parts: string[]) => [fleet.dir, ...parts].join('/');

function register(token: string, name: string, endpoint: Record<string, unknown>) {
  return { method: 'POST' as const, url: '/v1/vms', headers: as(token), payload: { name, endpoint } };
}

const unix = (p: string) => ({ type: 'unix', path: p });

/** The problem body without `instance` (the one member that may differ between two requests). */
async function deniedBody(token: string, name: string, endpoint: Record<string, unknown>): Promise<string> {
  const res = await app.inject(register(token, name, endpoint));
  expect(res.statusCode, res.body).toBe(403);
  const { instance: _instance, ...rest } = res.json() as Record<string, unknown>;
  expect(rest.code).toBe('REGISTRATION_DENIED');
  return JSON.stringify(rest);
}

async function exists(name: string): Promise<boolean> {
  const res = await app.inject({ method: 'GET', url: `/v1/vms/${name}`, headers: as(ADMIN) });
  return res.statusCode === 200;
}

describe('an endpoint belongs to one VM', () => {
  // `..` after a symlink goes where the kernel goes: samedir → fleet.dir, so samedir/../<fleet>/b-1.sock is b-1
  const aliases = () => [
    ['the same path', unixPath(b1)],
    ['a symlink to the socket', inFleet('alias.sock')],
    ['a symlinked directory', inFleet('samedir', 'b-1.sock')],
    ['`..` components', inFleet('sub', '..', 'b-1.sock')],
    ['`..` after a symlinked directory', inFleet('samedir', 'sub', '..', '..', path.basename(fleet.dir), 'b-1.sock')],
    ['a doubled slash and `.`', `${fleet.dir}//./b-1.sock`],
  ];

  it('an admin who may see the holder gets 409 ENDPOINT_IN_USE naming it, for every alias', async () => {
    for (const [how, p] of aliases()) {
      const problem = await expectProblem(app, register(ADMIN, 'a-alias', unix(p)), 409, 'ENDPOINT_IN_USE');
      expect({ how, heldBy: problem.heldBy, vm: problem.vm }).toEqual({ how, heldBy: 'b-1', vm: 'a-alias' });
    }
    expect(await exists('a-alias')).toBe(false);
  });

  it('a caller who may not see the holder gets the same 403 as a path outside the roots', async () => {
    const outsideRoots = await deniedBody(A_ADMIN, 'a-alias', unix(path.join(outside, 'victim.sock')));
    for (const [, p] of aliases()) expect(await deniedBody(A_ADMIN, 'a-alias', unix(p))).toBe(outsideRoots);
    expect(await exists('a-alias')).toBe(false);
  });

  it('an API-registered holder counts too, and so does the holder a glob-limited caller may see', async () => {
    const first = await app.inject(register(A_ADMIN, 'a-first', unix(unixPath(free1))));
    expect(first.statusCode, first.body).toBe(201);
    const again = await expectProblem(app, register(A_ADMIN, 'a-second', unix(inFleet('sub', '..', 'free-1.sock'))), 409, 'ENDPOINT_IN_USE');
    expect(again.heldBy).toBe('a-first');
    await expectProblem(app, register(ADMIN, 'c-second', unix(unixPath(free1))), 409, 'ENDPOINT_IN_USE');
    // the same name again is still VM_EXISTS
    await expectProblem(app, register(A_ADMIN, 'a-first', unix(unixPath(free1))), 409, 'VM_EXISTS');
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/a-first', headers: as(A_ADMIN) })).statusCode).toBe(204);
    // freed: it can be registered again
    expect((await app.inject(register(ADMIN, 'c-second', unix(unixPath(free1))))).statusCode).toBe(201);
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/c-second', headers: as(ADMIN) })).statusCode).toBe(204);
  });

  it('two registrations of one endpoint at the same moment: one wins, the other is refused', async () => {
    const [r1, r2] = await Promise.all([
      app.inject(register(ADMIN, 'race-1', unix(unixPath(free1)))),
      app.inject(register(ADMIN, 'race-2', unix(inFleet('samedir', 'free-1.sock')))),
    ]);
    for (const n of ['race-1', 'race-2']) await app.inject({ method: 'DELETE', url: `/v1/vms/${n}`, headers: as(ADMIN) });
    expect([r1.statusCode, r2.statusCode].sort()).toEqual([201, 409]);
  });

  it('a unix socket is stored by the real path that was checked', async () => {
    const res = await app.inject(register(ADMIN, 'stored', unix(inFleet('samedir', 'sub', '..', 'free-1.sock'))));
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json().endpoint).toEqual(unix(unixPath(free1)));
    const ping = await app.inject({ method: 'GET', url: '/v1/vms/stored/ping', headers: as(ADMIN) });
    expect(ping.statusCode, ping.body).toBe(200);
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/stored', headers: as(ADMIN) })).statusCode).toBe(204);
  });
});

describe('a token limited by VM globs', () => {
  it('registers names inside its globs only', async () => {
    const denied = await expectProblem(app, register(A_ADMIN, 'b-2', unix(unixPath(free1))), 403, 'REGISTRATION_DENIED');
    expect(denied.vm).toBe('b-2');
    expect(await exists('b-2')).toBe(false);
    // a name that exists outside its globs: the same refusal, nothing said about b-1 existing
    const taken = await expectProblem(app, register(A_ADMIN, 'b-1', unix(unixPath(free1))), 403, 'REGISTRATION_DENIED');
    expect(taken.detail).toBe(String(denied.detail).replace('"b-2"', '"b-1"'));
    const inside = await app.inject(register(A_ADMIN, 'a-ok', unix(unixPath(free1))));
    expect(inside.statusCode, inside.body).toBe(201);
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/a-ok', headers: as(A_ADMIN) })).statusCode).toBe(204);
  });

  it('deletes names inside its globs only', async () => {
    expect((await app.inject(register(ADMIN, 'b-api', unix(unixPath(free1))))).statusCode).toBe(201);
    await expectProblem(app, { method: 'DELETE', url: '/v1/vms/b-api', headers: as(A_ADMIN) }, 403, 'FORBIDDEN');
    expect(await exists('b-api')).toBe(true);
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/b-api', headers: as(ADMIN) })).statusCode).toBe(204);
  });
});

describe('unix sockets resolve inside registry.allowedSocketRoots', () => {
  it('by default the configured VMs’ folder is a root: a socket there registers', async () => {
    const res = await app.inject(register(ADMIN, 'in-root', unix(inFleet('later.sock'))));
    expect(res.statusCode, res.body).toBe(201); // need not exist yet: the VM may start later
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/in-root', headers: as(ADMIN) })).statusCode).toBe(204);
  });

  it('symlinks out of the roots are refused, however they are spelled', async () => {
    const escapes = [
      inFleet('escape.sock'), // the socket is a symlink to one outside
      inFleet('dangling.sock'), // … to nothing, outside
      inFleet('outdir', 'victim.sock'), // a symlinked directory
      // lexically this is <fleet>/victim.sock; the kernel goes deeplink → <outside>/deep, then up to <outside>
      inFleet('deeplink', '..', 'victim.sock'),
      inFleet('..', path.basename(outside), 'victim.sock'),
      path.join(outside, 'victim.sock'),
    ];
    const first = await deniedBody(ADMIN, 'esc', unix(escapes[0]!));
    for (const p of escapes) expect({ p, body: await deniedBody(ADMIN, 'esc', unix(p)) }).toEqual({ p, body: first });
    expect(await exists('esc')).toBe(false);
    expect(victim.stats.connections).toBe(0);
  });

  it('a path that does not exist and one that exists outside the roots get byte-identical answers', async () => {
    const cases = [
      path.join(outside, 'victim.sock'), // a live socket
      path.join(outside, 'plain-file'), // a file
      outside, // a directory
      path.join(outside, 'nothing.sock'), // nothing, in a folder that exists
      '/no-such-dir-qga-test/x/nothing.sock', // nothing, in a folder that does not exist
      inFleet('no-such-subdir', 'nothing.sock'), // a missing folder inside the roots
      inFleet('free-1.sock', '..'), // not a socket name at all
    ];
    const bodies = new Set<string>();
    for (const p of cases) bodies.add(await deniedBody(ADMIN, 'probe', unix(p)));
    bodies.add(await deniedBody(ADMIN, 'probe', { type: 'tcp', host: '127.0.0.1', port: 1 }));
    expect(bodies.size).toBe(1);
    const body = JSON.parse([...bodies][0]!) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(['code', 'detail', 'status', 'title', 'type', 'vm']);
    for (const p of cases) expect(String(body.detail)).not.toContain(p);
    expect(victim.stats.connections).toBe(0); // registration never touches the socket
  });

  it('a relative path is a 400 about its form, not a look-up', async () => {
    await expectProblem(app, register(ADMIN, 'rel', unix('qga/b-1.sock')), 400, 'VALIDATION_FAILED');
  });

  it('a NUL or other control character in a socket path or TCP host is a 400: the kernel would stop at the NUL and reach another VM\'s socket', async () => {
    for (const bad of [`${unixPath(b1)}\u0000`, `${unixPath(b1)}\u0000x`, `${unixPath(b1)}\n`]) {
      const p = await expectProblem(app, register(ADMIN, 'nul-alias', unix(bad)), 400, 'VALIDATION_FAILED');
      expect(String(p.detail)).toMatch(/body\.endpoint/);
    }
    await expectProblem(app, register(ADMIN, 'nul-alias', { type: 'tcp', host: '127.0.0.1\u0000evil', port: 4444 }), 400, 'VALIDATION_FAILED');
    expect(await exists('nul-alias')).toBe(false);
    // and the registry never takes such a path as canonical, whoever asks
    const { canonicalSocketPath } = await import('../../src/registry/endpoints.js');
    expect(await canonicalSocketPath(`${unixPath(b1)}\u0000`)).toBeUndefined();
    expect(await canonicalSocketPath(unixPath(b1))).toBe(unixPath(b1));
  });

  it('an explicit list replaces the default roots; [] allows no unix socket', async () => {
    const own = await makeApp({
      vms: [{ name: 'b-1', endpoint: b1.endpoint }],
      config: { auth: { tokens: TOKENS }, registry: { allowedSocketRoots: [outside] } },
    });
    const none = await makeApp({ config: { auth: { tokens: TOKENS }, registry: { allowedSocketRoots: [] } } });
    try {
      // the configured VMs' folder is no longer a root…
      await expectProblem(own, register(ADMIN, 'x', unix(unixPath(free1))), 403, 'REGISTRATION_DENIED');
      // …the listed one is; a symlink into it from a folder outside the roots is not read at all
      await expectProblem(own, register(ADMIN, 'x', unix(inFleet('escape.sock'))), 403, 'REGISTRATION_DENIED');
      const direct = await own.inject(register(ADMIN, 'x', unix(`${outside}/deep/../victim.sock`)));
      expect(direct.statusCode, direct.body).toBe(201);
      expect(direct.json().endpoint).toEqual(unix(path.join(outside, 'victim.sock')));
      await expectProblem(none, register(ADMIN, 'y', unix(path.join(outside, 'victim.sock'))), 403, 'REGISTRATION_DENIED');
    } finally {
      await own.close();
      await none.close();
    }
  });

  it('a socket a discovery folder will serve belongs to that folder’s VM, present or not', async () => {
    const disc = await mkdtemp(path.join(os.tmpdir(), 'qga-disc-'));
    const withDir = await makeApp({ config: { auth: { tokens: TOKENS }, registry: { directories: [{ path: disc, suffix: '.sock' }] } } });
    try {
      const claimed = await expectProblem(withDir, register(ADMIN, 'other', unix(path.join(disc, 'ghost.sock'))), 409, 'ENDPOINT_IN_USE');
      expect(claimed.heldBy).toBe('ghost');
      // not the folder's suffix: no VM of the folder, and the folder is a root
      expect((await withDir.inject(register(ADMIN, 'other', unix(path.join(disc, 'ghost.qga'))))).statusCode).toBe(201);
    } finally {
      await withDir.close();
      await rm(disc, { recursive: true, force: true });
    }
  });
});

describe('TCP endpoints need registry.allowedTcpEndpoints', () => {
  it('not listed → 403, the same whether the port listens or not, and nothing connects', async () => {
    if (tcpVictim.endpoint.type !== 'tcp') throw new Error('expected a TCP agent');
    const listening = await deniedBody(ADMIN, 'tcp-x', tcpVictim.endpoint);
    const closed = await deniedBody(ADMIN, 'tcp-x', { type: 'tcp', host: '127.0.0.1', port: 9 });
    const otherPort = await deniedBody(ADMIN, 'tcp-x', { type: 'tcp', host: '127.0.0.1', port: 7002 });
    expect(closed).toBe(listening);
    expect(otherPort).toBe(listening);
    expect(listening).toBe(await deniedBody(ADMIN, 'tcp-x', unix(path.join(outside, 'victim.sock'))));
    expect(tcpVictim.stats.connections).toBe(0);
  });

  it('listed (host:port, or host:* in any case) → 201; a second VM on it → 409', async () => {
    const ok = await app.inject(register(ADMIN, 'tcp-1', { type: 'tcp', host: '127.0.0.1', port: 7001 }));
    expect(ok.statusCode, ok.body).toBe(201);
    expect(ok.json().endpoint).toEqual({ type: 'tcp', host: '127.0.0.1', port: 7001 });
    const wild = await app.inject(register(ADMIN, 'tcp-2', { type: 'tcp', host: 'QGA-host.example', port: 5555 }));
    expect(wild.statusCode, wild.body).toBe(201);
    const dup = await expectProblem(app, register(ADMIN, 'tcp-3', { type: 'tcp', host: 'qga-host.example', port: 5555 }), 409, 'ENDPOINT_IN_USE');
    expect(dup.heldBy).toBe('tcp-2');
    // held by a VM the caller may not see: the one 403
    expect(await deniedBody(A_ADMIN, 'a-tcp', { type: 'tcp', host: '127.0.0.1', port: 7001 })).toBe(await deniedBody(A_ADMIN, 'a-tcp', { type: 'tcp', host: '10.0.0.1', port: 7001 }));
    for (const n of ['tcp-1', 'tcp-2']) expect((await app.inject({ method: 'DELETE', url: `/v1/vms/${n}`, headers: as(ADMIN) })).statusCode).toBe(204);
  });
});

describe('endpoints are shown to admin callers only', () => {
  it('read and write callers see VMs without endpoints; admin sees them', async () => {
    for (const token of [READER, WRITER]) {
      const list = await app.inject({ method: 'GET', url: '/v1/vms', headers: as(token) });
      expect(list.statusCode).toBe(200);
      const vms = list.json().items as Array<Record<string, unknown>>;
      expect(vms.map((v) => v.name)).toContain('b-1');
      for (const v of vms) expect(v).not.toHaveProperty('endpoint');
      const one = await app.inject({ method: 'GET', url: '/v1/vms/b-1', headers: as(token) });
      expect(one.statusCode).toBe(200);
      expect(one.json()).not.toHaveProperty('endpoint');
      expect(one.body).not.toContain(fleet.dir);
    }
    const list = await app.inject({ method: 'GET', url: '/v1/vms', headers: as(ADMIN) });
    expect((list.json().items as Array<Record<string, unknown>>).find((v) => v.name === 'b-1')?.endpoint).toEqual(b1.endpoint);
    expect((await app.inject({ method: 'GET', url: '/v1/vms/b-1', headers: as(ADMIN) })).json().endpoint).toEqual(b1.endpoint);
  });
});

describe('configuration', () => {
  it('the default roots are the hypervisors’ folders plus those of the configured VMs and discovery folders', () => {
    const c = buildConfig({
      vms: [
        { name: 'v1', endpoint: { type: 'unix', path: '/srv/qga/v1.sock' } },
        { name: 'v2', endpoint: { type: 'tcp', host: 'h', port: 1 } },
      ],
      registry: { directories: [{ path: '/srv/disc' }] },
    });
    expect(socketRootsOf(c).sort()).toEqual([...DEFAULT_SOCKET_ROOTS, '/srv/qga', '/srv/disc'].sort());
    expect(DEFAULT_SOCKET_ROOTS).toEqual(['/var/run/qemu-server', '/run/qemu-server', '/var/lib/libvirt/qemu/channel']);
    expect(c.registry.allowedTcpEndpoints).toEqual([]);
    expect(socketRootsOf(buildConfig({ registry: { allowedSocketRoots: ['/x'] } }))).toEqual(['/x']);
  });

  it('refuses relative roots and malformed TCP entries, naming each', () => {
    const problems = (input: unknown): string => {
      try {
        buildConfig(input);
      } catch (e) {
        if (e instanceof ConfigError) return e.problems.join('\n');
        throw e;
      }
      return '';
    };
    const shape = problems({ registry: { allowedTcpEndpoints: ['h:1', 'nohost', 'a:b', ':1'] } });
    for (const i of [1, 2, 3]) expect(shape).toContain(`registry.allowedTcpEndpoints.${i}`);
    expect(shape).not.toContain('registry.allowedTcpEndpoints.0');
    const values = problems({ registry: { allowedSocketRoots: ['/ok', 'rel/dir'], allowedTcpEndpoints: ['h:1', 'h:0', '[::1]:70000'] } });
    expect(values).toContain('registry.allowedSocketRoots.1');
    expect(values).not.toContain('registry.allowedSocketRoots.0');
    for (const i of [1, 2]) expect(values).toContain(`registry.allowedTcpEndpoints.${i}`);
    expect(values).not.toContain('registry.allowedTcpEndpoints.0');
    expect(problems({ registry: { allowedTcpEndpoints: ['h:1', '[::1]:4444', 'h:*'] } })).toBe('');
  });
});
