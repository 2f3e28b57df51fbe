/**
 * Issue 15 item 4: `registry.presets: [proxmox]` on a fake node: simulator agents serving
 * `<socketDir>/<vmid>.qga`, VM configs in `<configDir>/<vmid>.conf`. Each VM is named by its vmid
 * and labelled pve.name / pve.tags; `agent: 0` and `agent: enabled=0,…` are skipped; sockets and
 * configs that appear, change or go away are followed by the watch (no listing in between); the
 * start-up log names the count found by the first scan.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Simulator } from '../../sim/index.js';
import { buildApp } from '../../src/app.js';
import { parsePveConfig } from '../../src/registry/proxmox.js';
import { VmRegistry, socketRootsOf } from '../../src/registry/registry.js';
import { testConfig } from '../helpers/app.js';

const root = mkdtempSync(join(tmpdir(), 'qga-pve-'));
const socketDir = join(root, 'run', 'qemu-server');
const configDir = join(root, 'etc', 'pve', 'qemu-server');
mkdirSync(socketDir, { recursive: true });
mkdirSync(configDir, { recursive: true });
const sim = new Simulator({ dir: root });
const lines: Array<Record<string, unknown>> = [];
let app: FastifyInstance;

function conf(vmid: string, text: string): void {
  writeFileSync(join(configDir, `${vmid}.conf`), text);
}
const addVm = (vmid: string) => sim.addVm({ name: `pve-${vmid}`, socketPath: join(socketDir, `${vmid}.qga`) });

/** Poll what the registry keeps (no listing, which would rescan a changed folder) until `ok`, at most `ms`. */
async function until(ok: () => boolean | Promise<boolean>, ms: number): Promise<number> {
  const t0 = performance.now();
  while (!(await ok())) {
    if (performance.now() - t0 > ms) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return performance.now() - t0;
}

beforeAll(async () => {
  conf('101', 'boot: order=scsi0\nname: web-01\ntags: prod;web\nagent: 1,fstrim_cloned_disks=1\nmemory: 2048\n\n[snap1]\nname: old-name\nagent: 0\n');
  conf('102', 'name: off-01\nagent: 0\n');
  conf('103', 'name: off-02\nagent: enabled=0,type=virtio\n');
  // 104 has no config file (being migrated away): listed without labels
  await Promise.all(['101', '102', '103', '104'].map(addVm));
  writeFileSync(join(socketDir, '105.pid'), '1234'); // not a socket
  const config = testConfig({ config: { registry: { presets: ['proxmox'], proxmox: { socketDir, configDir }, rescanIntervalMs: 60_000 }, agent: { probeIntervalMs: 0 } } });
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  app = await buildApp({ config, logger: pino({ level: 'info' }, sink), env: {} });
  await app.ready();
});

afterAll(async () => {
  await app?.close();
  await sim.close();
  rmSync(root, { recursive: true, force: true });
});

const list = async (q = '') => {
  const r = await app.inject({ method: 'GET', url: `/v1/vms${q}` });
  expect(r.statusCode, r.body).toBe(200);
  return (r.json().items as Array<{ name: string; labels?: Record<string, string>; source: string }>).map((v) => ({ name: v.name, labels: v.labels }));
};

describe('Proxmox preset', () => {
  it('parses the current config only: name, tags, agent on/off in every spelling', () => {
    expect(parsePveConfig('name: a\ntags: x,y z\nagent: 1\n[snap]\nname: b\n')).toEqual({ name: 'a', tags: 'x;y;z', agent: true });
    for (const off of ['0', 'enabled=0', 'enabled=0,type=isa', 'fstrim_cloned_disks=1,enabled=0', 'off']) expect(parsePveConfig(`agent: ${off}\n`).agent, off).toBe(false);
    for (const on of ['1', 'enabled=1', '1,type=virtio', 'type=virtio']) expect(parsePveConfig(`agent: ${on}\n`).agent, on).toBe(true);
  });

  it('names VMs by vmid with pve.name/pve.tags labels, skips agent: 0, and logs the count of the first scan', async () => {
    expect(await list()).toEqual([{ name: '101', labels: { 'pve.name': 'web-01', 'pve.tags': 'prod;web' } }, { name: '104', labels: undefined }]);
    expect(await list('?label=pve.name=web-01')).toEqual([{ name: '101', labels: { 'pve.name': 'web-01', 'pve.tags': 'prod;web' } }]);
    // one tag of the list matches, a part of a tag does not
    expect((await list('?label=pve.tags=web')).map((v) => v.name)).toEqual(['101']);
    expect(await list('?label=pve.tags=we')).toEqual([]);
    const found = lines.find((l) => l.msg === 'registry: VMs found');
    expect(found?.vms).toBe(2);
    // VM 102 is not a VM of the gateway; 101 answers through its .qga socket
    expect((await app.inject({ method: 'GET', url: '/v1/vms/102' })).json().code).toBe('VM_NOT_FOUND');
    expect((await app.inject({ method: 'GET', url: '/v1/vms/101/ping' })).statusCode).toBe(200);
    // the socket folder is a registration root, and its <vmid>.qga files belong to their VMs
    expect(socketRootsOf(app.services.config)).toContain(socketDir);
    const claim = await app.inject({ method: 'POST', url: '/v1/vms', payload: { name: 'other', endpoint: { type: 'unix', path: join(socketDir, '104.qga') } } });
    expect(claim.statusCode).toBe(409);
    expect(claim.json()).toMatchObject({ code: 'ENDPOINT_IN_USE', heldBy: '104' });
  });

  it('follows a VM that starts, a config that changes and a VM that stops, by the watch alone', async () => {
    const reg = app.services.registry;
    expect(reg.size).toBe(2);
    conf('106', 'name: db-01\ntags: prod\nagent: 1\n');
    await addVm('106');
    const appeared = await until(() => reg.size === 3, 2_000);
    expect(appeared).toBeLessThan(2_000);
    expect((await reg.lookup('106'))?.labels).toEqual({ 'pve.name': 'db-01', 'pve.tags': 'prod' });
    // renamed in Proxmox, then its agent turned off: the label follows, then the VM leaves
    conf('106', 'name: db-02\ntags: prod\nagent: 1\n');
    await until(async () => (await reg.lookup('106'))?.labels?.['pve.name'] === 'db-02', 2_000);
    conf('106', 'name: db-02\nagent: 0\n');
    await until(() => reg.size === 2, 2_000);
    // turned on again, then the VM stops (its socket goes away)
    conf('106', 'name: db-02\nagent: 1\n');
    await until(() => reg.size === 3, 2_000);
    await sim.removeVm('pve-106');
    await until(() => reg.size === 2, 2_000);
    expect((await list()).map((v) => v.name)).toEqual(['101', '104']);
  });

  it('a VM frozen under a lease stays registered when its agent is turned off or its socket goes away, until the lease ends: the thaw reaches it', async () => {
    const reg = app.services.registry;
    const ask = async (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object) => app.inject({ method, url, ...(payload ? { payload } : {}) });
    conf('108', 'name: keep-01\nagent: 1\n');
    const vm = await addVm('108');
    await until(async () => (await ask('GET', '/v1/vms/108')).statusCode === 200, 2_000);
    // the agent turned off in its config while frozen: kept, and the holder's thaw goes through
    const a = await ask('POST', '/v1/vms/108/fsfreeze', { ttlSeconds: 60 });
    expect(a.statusCode, a.body).toBe(201);
    conf('108', 'name: keep-01\nagent: 0\n');
    await until(() => lines.some((l) => l.vm === '108' && String(l.msg).startsWith('discovery: a VM whose socket went away')), 2_000);
    expect((await ask('GET', '/v1/vms/108')).statusCode).toBe(200);
    const thawA = await ask('DELETE', `/v1/vms/108/fsfreeze?leaseId=${a.json().leaseId}`);
    expect(thawA.statusCode, thawA.body).toBe(200);
    expect(vm.state.frozen).toBe(false);
    // the lease over: the next scan (a config touched) lets it go
    conf('109', 'name: other\nagent: 1\n');
    await until(async () => (await ask('GET', '/v1/vms/108')).statusCode === 404, 2_000);
    // its socket gone (the VM stopped) while frozen: the holder's thaw is 503 while the socket is
    // missing (not 404: the VM is still known), and reaches the guest once it is back
    conf('108', 'name: keep-01\nagent: 1\n');
    await until(async () => (await ask('GET', '/v1/vms/108')).statusCode === 200, 2_000);
    const b = await ask('POST', '/v1/vms/108/fsfreeze', { ttlSeconds: 60 });
    expect(b.statusCode, b.body).toBe(201);
    await vm.kill();
    await until(() => lines.filter((l) => l.vm === '108' && String(l.msg).startsWith('discovery: a VM whose socket went away')).length === 2, 2_000);
    const gone = await ask('DELETE', `/v1/vms/108/fsfreeze?leaseId=${b.json().leaseId}`);
    expect(gone.statusCode, gone.body).toBe(503);
    expect(vm.state.frozen).toBe(true);
    await vm.restart();
    const thawB = await ask('DELETE', `/v1/vms/108/fsfreeze?leaseId=${b.json().leaseId}`);
    expect(thawB.statusCode, thawB.body).toBe(200);
    expect(thawB.json()).toMatchObject({ thawed: 2, consistent: true });
    expect(vm.state.frozen).toBe(false);
    await sim.removeVm('pve-108');
    rmSync(join(configDir, '108.conf'));
    rmSync(join(configDir, '109.conf'));
    await until(async () => (await ask('GET', '/v1/vms/108')).statusCode === 404, 2_000);
    expect(reg.size).toBe(2);
  });

  it('a socket folder missing at start (no watch possible) is found by the periodic rescan, then watched', async () => {
    const late = join(root, 'late-run');
    const reg = new VmRegistry({ vms: [], registry: { allowApiRegistration: false, directories: [], allowedTcpEndpoints: [], presets: ['proxmox'], proxmox: { socketDir: late, configDir }, rescanIntervalMs: 100 } });
    await reg.start();
    try {
      expect(reg.size).toBe(0);
      mkdirSync(late);
      conf('107', 'name: late-01\nagent: 1\n');
      await sim.addVm({ name: 'pve-107', socketPath: join(late, '107.qga') });
      const ms = await until(() => reg.size === 1, 2_000);
      expect(ms).toBeLessThan(2_000);
      expect((await reg.list()).map((r) => [r.name, r.labels?.['pve.name']])).toEqual([['107', 'late-01']]);
      await sim.removeVm('pve-107');
      await until(() => reg.size === 0, 2_000);
    } finally {
      reg.stop();
    }
  });

  it('a config folder missing at start (pmxcfs not mounted yet) is watched once it appears, though the socket folder was watched from the start', async () => {
    const lateConf = join(root, 'late-conf');
    const reg = new VmRegistry({ vms: [], registry: { allowApiRegistration: false, directories: [], allowedTcpEndpoints: [], presets: ['proxmox'], proxmox: { socketDir, configDir: lateConf }, rescanIntervalMs: 100 } });
    await reg.start();
    // what is watched, per directory (white box: the watch itself is what is checked)
    const watched = () => [...(reg as unknown as { discovery: { folders: Array<{ watchers: Map<string, unknown> }> } }).discovery.folders[0].watchers.keys()].sort();
    try {
      expect(watched()).toEqual([socketDir]);
      mkdirSync(lateConf);
      await until(() => watched().length === 2, 2_000);
      expect(watched()).toEqual([lateConf, socketDir].sort());
    } finally {
      reg.stop();
    }
  });
});
