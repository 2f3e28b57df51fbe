/**
 * contrib/qga-freeze-hook (freeze-run split into a pre and a post hook) and
 * contrib/vzdump-qga-freeze (the Proxmox vzdump hook script on top of it), run by /bin/sh against a
 * gateway on simulated VMs: pre returns with the VM frozen, post thaws it and reports the freeze
 * held; a failing freeze fails pre; a post without a pre fails.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { listen, makeApp } from '../helpers/app.js';
import { simFleet, waitFor, type SimFleet } from '../integration/freeze-fixture.js';
import { bundleCli, ROOT, type CliBundle } from './bundle.js';

let bundle: CliBundle;
let tmp: string;
let cliShim: string;
beforeAll(() => {
  bundle = bundleCli();
  tmp = mkdtempSync(path.join(os.tmpdir(), 'qga-hook-'));
  cliShim = path.join(tmp, 'qga-gateway');
  writeFileSync(cliShim, `#!/bin/sh\nexec ${process.execPath} ${bundle.cli} "$@"\n`);
  chmodSync(cliShim, 0o755);
});
afterAll(() => {
  bundle?.remove();
  rmSync(tmp, { recursive: true, force: true });
});

let fleet: SimFleet | undefined;
let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
  await fleet?.close();
  fleet = undefined;
});

async function gateway(vms: string[]): Promise<string> {
  fleet = await simFleet(vms);
  app = await makeApp({ vms: vms.map((name) => ({ name, endpoint: fleet!.vm[name]!.endpoint })) });
  return listen(app);
}

function sh(script: string, args: string[], env: Record<string, string>): Promise<{ code: number; stderr: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile('/bin/sh', [path.join(ROOT, 'contrib', script), ...args], { env: { ...process.env, QGA_GATEWAY_CLI: cliShim, QGA_FREEZE_RUN_DIR: path.join(tmp, 'run'), QGA_GATEWAY_TOKEN: '', ...env }, timeout: 30_000 }, (err, _stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stderr, ms: Date.now() - t0 }),
    );
  });
}

const count = (vm: string, command: string) => fleet!.vm[vm]!.stats.commandLog.filter((c) => c.command === command).length;

describe('contrib/qga-freeze-hook and contrib/vzdump-qga-freeze', { timeout: 60_000 }, () => {
  it('pre freezes (group of two) and returns; post thaws and says the freeze held', async () => {
    const url = await gateway(['vm1', 'vm2']);
    const env = { QGA_GATEWAY_URL: url, QGA_FREEZE_TTL: '5' };
    const pre = await sh('qga-freeze-hook', ['pre', 'nightly', 'vm1', 'vm2'], env);
    expect(pre.code, pre.stderr).toBe(0);
    expect(pre.stderr).toBe('');
    expect(fleet!.vm.vm1!.stats.frozen && fleet!.vm.vm2!.stats.frozen).toBe(true);
    const post = await sh('qga-freeze-hook', ['post', 'nightly'], env);
    expect(post.code, post.stderr).toBe(0);
    expect(post.stderr).toMatch(/the freeze held: freeze group [0-9a-f-]{36} \(vm1, vm2\)/);
    for (const vm of ['vm1', 'vm2']) {
      expect(fleet!.vm[vm]!.stats.frozen).toBe(false);
      expect([count(vm, 'guest-fsfreeze-freeze'), count(vm, 'guest-fsfreeze-thaw')]).toEqual([1, 1]);
    }
  });

  it('a freeze that fails makes pre fail with freeze-run\'s message; post without pre fails', async () => {
    const url = await gateway(['vm1']);
    const env = { QGA_GATEWAY_URL: url };
    const pre = await sh('qga-freeze-hook', ['pre', 'bad', 'nosuchvm'], env);
    expect(pre.code).toBe(1);
    expect(pre.stderr).toMatch(/freeze of VM nosuchvm failed, the command was not run: .*404 VM_NOT_FOUND/);
    const post = await sh('qga-freeze-hook', ['post', 'never-started'], env);
    expect(post.code).toBe(1);
    expect(post.stderr).toBe('qga-freeze-hook: no freeze "never-started" in progress\n');
    expect(count('vm1', 'guest-fsfreeze-freeze')).toBe(0);
  });

  it('a second pre of an ID in progress fails and touches nothing: post still ends the first freeze', async () => {
    const url = await gateway(['vm1']);
    const env = { QGA_GATEWAY_URL: url, QGA_FREEZE_TTL: '5' };
    expect((await sh('qga-freeze-hook', ['pre', 'job1', 'vm1'], env)).code).toBe(0);
    const again = await sh('qga-freeze-hook', ['pre', 'job1', 'vm1'], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/a freeze "job1" is already in progress \(job \d+\): run post job1 first/);
    expect(count('vm1', 'guest-fsfreeze-freeze')).toBe(1);
    const post = await sh('qga-freeze-hook', ['post', 'job1'], env);
    expect(post.code, post.stderr).toBe(0);
    expect(post.stderr).toMatch(/the freeze held/);
    expect(fleet!.vm.vm1!.stats.frozen).toBe(false);
    expect([count('vm1', 'guest-fsfreeze-freeze'), count('vm1', 'guest-fsfreeze-thaw')]).toEqual([1, 1]);
  });

  it('post of a job that was killed fails at once instead of waiting forever; QGA_FREEZE_MAX ends a freeze nobody posts', async () => {
    const url = await gateway(['vm1', 'vm2']);
    const env = { QGA_GATEWAY_URL: url, QGA_FREEZE_TTL: '5' };
    expect((await sh('qga-freeze-hook', ['pre', 'killed', 'vm1'], env)).code).toBe(0);
    const job = Number(readFileSync(path.join(tmp, 'run', 'killed.pid'), 'utf8'));
    process.kill(job, 'SIGKILL');
    const post = await sh('qga-freeze-hook', ['post', 'killed'], env);
    expect(post.code).toBe(1);
    expect(post.stderr).toMatch(/the freeze job of "killed" died without a status: the gateway thaws the guest when its lease runs out/);
    expect(post.ms).toBeLessThan(5_000);
    // nobody posts: the job thaws by itself after QGA_FREEZE_MAX, and post then reports its 124
    expect((await sh('qga-freeze-hook', ['pre', 'forgotten', 'vm2'], { ...env, QGA_FREEZE_MAX: '1' })).code).toBe(0);
    expect(fleet!.vm.vm2!.stats.frozen).toBe(true);
    await waitFor(() => !fleet!.vm.vm2!.stats.frozen, 10_000, 'the forgotten freeze to end');
    const late = await sh('qga-freeze-hook', ['post', 'forgotten'], env);
    expect(late.code).toBe(124);
    expect([count('vm2', 'guest-fsfreeze-freeze'), count('vm2', 'guest-fsfreeze-thaw')]).toEqual([1, 1]);
  });

  it('vzdump hook: backup-start freezes VM <vmid>, backup-end thaws it, other phases do nothing', async () => {
    const url = await gateway(['100']);
    const env = { QGA_GATEWAY_URL: url, QGA_FREEZE_HOOK: path.join(ROOT, 'contrib', 'qga-freeze-hook') };
    expect((await sh('vzdump-qga-freeze', ['job-start'], env)).code).toBe(0);
    const start = await sh('vzdump-qga-freeze', ['backup-start', 'snapshot', '100'], env);
    expect(start.code, start.stderr).toBe(0);
    expect(fleet!.vm['100']!.stats.frozen).toBe(true);
    const end = await sh('vzdump-qga-freeze', ['backup-end', 'snapshot', '100'], env);
    expect(end.code, end.stderr).toBe(0);
    expect(fleet!.vm['100']!.stats.frozen).toBe(false);
    expect([count('100', 'guest-fsfreeze-freeze'), count('100', 'guest-fsfreeze-thaw')]).toEqual([1, 1]);
    // an abort with no freeze in progress leaves vzdump's own error alone: exit 0
    expect((await sh('vzdump-qga-freeze', ['backup-abort', 'snapshot', '100'], env)).code).toBe(0);
  });
});
