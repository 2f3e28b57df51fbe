/**
 * `qga-gateway freeze-run` (issue 16 item 7) as a child process against a real gateway (HTTP on
 * 127.0.0.1, token stored as tokenSha256) and simulated VMs: exit status passthrough, exactly one
 * freeze and one thaw in the agents' command logs, renewals while the command runs, thaw on SIGTERM
 * with the signal forwarded to the command, a lease ended early (forced thaw) reported and non-zero,
 * a freeze that fails never runs the command.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { testConfig } from '../helpers/app.js';
import { simFleet, waitFor, type SimFleet } from '../integration/freeze-fixture.js';
import { bundleCli, ROOT, type CliBundle } from './bundle.js';

let bundle: CliBundle;
beforeAll(() => {
  bundle = bundleCli();
});
afterAll(() => bundle?.remove());
const TOKEN = 'backup-token-0123456789abcdef';
const ADMIN = 'admin-token-0123456789abcdef';
const sha = (t: string) => createHash('sha256').update(t).digest('hex');

let fleet: SimFleet | undefined;
let app: FastifyInstance | undefined;
let renewCalls = 0;
let gatewayConfig: ReturnType<typeof testConfig> | undefined;

afterEach(async () => {
  await app?.close();
  app = undefined;
  await fleet?.close();
  fleet = undefined;
});

async function gateway(vms: string[], freeze: Record<string, number> = {}): Promise<string> {
  fleet = await simFleet(vms);
  const config = testConfig({
    vms: vms.map((name) => ({ name, endpoint: fleet!.vm[name]!.endpoint })),
    config: {
      // the backup token is stored as its hash only; anonymous callers get nothing
      auth: {
        anonymousScopes: [],
        tokens: [
          { name: 'backup', tokenSha256: sha(TOKEN), scopes: ['read', 'write'] },
          { name: 'ops', token: ADMIN, scopes: ['read', 'write', 'admin'] },
        ],
      },
      freeze: { defaultTtlSeconds: 5, maxTtlSeconds: 60, maxTotalSeconds: 120, ...freeze },
    },
  });
  app = await buildApp({ config, logger: pino({ level: 'silent' }), env: {} });
  gatewayConfig = config;
  renewCalls = 0;
  app.addHook('onResponse', async (request, reply) => {
    if (request.method === 'POST' && request.url.endsWith('/renew') && reply.statusCode === 200) renewCalls++;
  });
  return app.listen({ host: '127.0.0.1', port: 0 });
}

interface Run {
  pid: number;
  stderr(): string;
  exit: Promise<{ code: number | null; ms: number }>;
  closed: Promise<void>;
  kill(sig: NodeJS.Signals): void;
}

function freezeRun(args: string[]): Run {
  const t0 = Date.now();
  const child = spawn(process.execPath, [bundle.cli, 'freeze-run', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, QGA_GATEWAY_TOKEN: '' },
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout.resume();
  return {
    pid: child.pid ?? -1,
    stderr: () => err,
    exit: new Promise((r) => child.once('exit', (code) => r({ code, ms: Date.now() - t0 }))),
    // every holder of its stdio gone (a watchdog it left inherits its stderr)
    closed: new Promise<void>((r) => child.once('close', () => r())),
    kill: (sig) => child.kill(sig),
  };
}

/** freeze-run on vm1 (ttl 3) around a command that runs until the file `go` appears in the fleet's dir; once it runs */
async function runUntilGo(url: string): Promise<Run> {
  const cmd = script(
    fleet!.dir,
    `writeFileSync(dir + '/ready', '1');\nconst t = setInterval(() => { if (existsSync(dir + '/go')) { clearInterval(t); process.exit(0); } }, 50);`,
  );
  const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '3', '--', process.execPath, cmd]);
  await waitFor(() => existsSync(path.join(fleet!.dir, 'ready')), 15_000, 'the command to start');
  return run;
}

function tokenFile(): string {
  const f = path.join(fleet!.dir, 'token');
  writeFileSync(f, `${TOKEN}\n`);
  return f;
}

/** wait for a command to write its pid (a line) to `pidFile`; returns whether that process is alive */
async function startedPid(pidFile: string, what: string): Promise<() => boolean> {
  await waitFor(() => existsSync(pidFile) && /^\d+\n$/.test(readFileSync(pidFile, 'utf8')), 15_000, what);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  return () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
}

/** a command (node script) that says it started, then waits for a go file or a signal */
function script(dir: string, body: string): string {
  const f = path.join(dir, `cmd-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(f, `import { writeFileSync, existsSync } from 'node:fs';\nconst dir = ${JSON.stringify(dir)};\n${body}\n`);
  return f;
}

const commands = (vm: string) => fleet!.vm[vm]!.stats.commandLog.map((c) => c.command);
const count = (vm: string, command: string) => commands(vm).filter((c) => c === command).length;

describe('qga-gateway freeze-run', { timeout: 40_000 }, () => {
  it('freezes once, renews about every ttl/3 while the command runs, thaws once and exits with the command status', async () => {
    const url = await gateway(['vm1']);
    // ttl 3 s: a renewal every second, 2 s of margin before the deadline on a loaded machine
    const cmd = script(fleet!.dir, `setTimeout(() => process.exit(7), 3500);`);
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '3', '--', process.execPath, cmd]);
    await waitFor(() => /froze VM vm1/.test(run.stderr()), 15_000, 'the freeze');
    const frozeAt = Date.now();
    const { code, ms } = await run.exit;
    const frozenMs = Date.now() - frozeAt;
    expect(code, run.stderr()).toBe(7);
    expect(count('vm1', 'guest-fsfreeze-freeze')).toBe(1);
    expect(count('vm1', 'guest-fsfreeze-thaw')).toBe(1);
    expect(fleet!.vm.vm1!.stats.frozen).toBe(false);
    // one renewal per second while frozen: at least 3.5 s of command, at most the time seen frozen
    expect(renewCalls).toBeGreaterThanOrEqual(3);
    expect(renewCalls).toBeLessThanOrEqual(Math.ceil(frozenMs / 1000) + 1);
    expect(run.stderr()).toMatch(/freeze-run: the freeze held: VM vm1 frozen for \d+\.\d s, \d+ renewal\(s\), thawed; command exit status 7\n$/);
    expect(ms).toBeLessThan(15_000);
  });

  it('several --vm freeze as one group: one freeze and one thaw per VM, exit 0', async () => {
    const url = await gateway(['vm1', 'vm2']);
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--vm', 'vm2', '--ttl', '2', '--', process.execPath, '-e', 'setTimeout(() => {}, 1000)']);
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(0);
    for (const vm of ['vm1', 'vm2']) {
      expect(count(vm, 'guest-fsfreeze-freeze')).toBe(1);
      expect(count(vm, 'guest-fsfreeze-thaw')).toBe(1);
    }
    expect(run.stderr()).toMatch(/froze freeze group [0-9a-f-]{36} \(vm1, vm2\)/);
    expect(run.stderr()).toMatch(/the freeze held/);
  });

  it('a failing command: its status is passed through and the VM is thawed; a missing one is 127 and a non-executable one 126, both before any freeze', async () => {
    const url = await gateway(['vm1']);
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '5', '--', process.execPath, '-e', 'process.exit(3)']);
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(3);
    expect(count('vm1', 'guest-fsfreeze-thaw')).toBe(1);
    expect(fleet!.vm.vm1!.stats.frozen).toBe(false);
    expect(run.stderr()).toMatch(/the freeze held: .* command exit status 3/);
    // a command that does not exist (a path, or a name not in PATH): 127, as a shell says, and
    // nothing frozen; one not executable: 126, nothing frozen
    const notExec = path.join(fleet!.dir, 'not-executable.sh');
    writeFileSync(notExec, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    const [missing, notInPath, denied] = [
      freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '5', '--', '/nonexistent/snapshot-tool']),
      freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '5', '--', 'no-such-snapshot-tool-qga', '--now']),
      freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '5', '--', notExec]),
    ];
    expect((await missing.exit).code, missing.stderr()).toBe(127);
    expect(missing.stderr()).toBe('qga-gateway freeze-run: cannot run /nonexistent/snapshot-tool: ENOENT (no such file); nothing was frozen\n');
    expect((await notInPath.exit).code, notInPath.stderr()).toBe(127);
    expect(notInPath.stderr()).toBe('qga-gateway freeze-run: cannot run no-such-snapshot-tool-qga: not found in PATH (ENOENT); nothing was frozen\n');
    // (root too: a file without any x bit is not executable for anyone)
    expect((await denied.exit).code, denied.stderr()).toBe(126);
    expect(denied.stderr()).toMatch(/cannot run .*not-executable\.sh: .*EACCES \(not executable\); nothing was frozen\n$/);
    expect([count('vm1', 'guest-fsfreeze-freeze'), count('vm1', 'guest-fsfreeze-thaw')]).toEqual([1, 1]);
    expect(fleet!.vm.vm1!.stats.frozen).toBe(false);
  });

  it('SIGTERM to the wrapper mid-command: the command gets SIGTERM, the VM is thawed, the exit is the command status', async () => {
    const url = await gateway(['vm1']);
    const cmd = script(
      fleet!.dir,
      `process.on('SIGTERM', () => { writeFileSync(dir + '/got', 'SIGTERM'); process.exit(42); });\nwriteFileSync(dir + '/ready', '1');\nsetInterval(() => {}, 1000);`,
    );
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '10', '--', process.execPath, cmd]);
    await waitFor(() => existsSync(path.join(fleet!.dir, 'ready')), 15_000, 'the command to start');
    expect(fleet!.vm.vm1!.stats.frozen).toBe(true);
    run.kill('SIGTERM');
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(42);
    expect(readFileSync(path.join(fleet!.dir, 'got'), 'utf8')).toBe('SIGTERM');
    expect(count('vm1', 'guest-fsfreeze-thaw')).toBe(1);
    expect(fleet!.vm.vm1!.stats.frozen).toBe(false);
    expect(run.stderr()).toMatch(/got SIGTERM: forwarding it to the command, then thawing/);
  });

  it('SIGTERM to the wrapper: the command\'s whole process group gets it, the kill-after SIGKILL too (a shell ignoring TERM and its sleep)', async () => {
    const url = await gateway(['vm1']);
    const pidFile = path.join(fleet!.dir, 'grandchild.pid');
    // the shell ignores TERM (and so does the sleep it starts: ignored signals are inherited)
    const sh = `trap "" TERM; sleep 20 & echo $! > ${pidFile}; wait`;
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '10', '--kill-after', '1', '--', 'sh', '-c', sh]);
    const alive = await startedPid(pidFile, 'the grandchild to start');
    expect(alive()).toBe(true);
    expect(fleet!.vm.vm1!.stats.frozen).toBe(true);
    const t0 = Date.now();
    run.kill('SIGTERM');
    const { code } = await run.exit;
    // the shell is killed by the SIGKILL a second after the TERM it ignored: 128 + 9
    expect(code, run.stderr()).toBe(137);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    await waitFor(() => !alive(), 5_000, 'the grandchild sleep to be gone');
    expect(run.stderr()).toMatch(/the command is still running 1 s after SIGTERM: SIGKILL/);
    expect(count('vm1', 'guest-fsfreeze-thaw')).toBe(1);
    expect(fleet!.vm.vm1!.stats.frozen).toBe(false);
  });

  it('SIGKILL of the wrapper: its watchdog ends the command\'s process group (it would run on against a guest the deadline thaws)', { timeout: 60_000 }, async () => {
    const url = await gateway(['vm1']);
    const pidFile = path.join(fleet!.dir, 'orphan.pid');
    const sh = `sleep 60 & echo $! > ${pidFile}; wait`;
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '3', '--kill-after', '10', '--', 'sh', '-c', sh]);
    const alive = await startedPid(pidFile, 'the command to start');
    expect(alive()).toBe(true);
    run.kill('SIGKILL');
    await run.exit;
    // (the watchdog is a node process of its own: on a loaded machine its start alone can take
    // seconds; clean-clone CI runs took more than 5 and, once, more than 10: the sleep would run
    // 60 s unended). Failing, it says what the watchdog wrote and whether one still runs.
    await waitFor(() => !alive(), 25_000, "the command's sleep to be ended").catch((e: Error) => {
      const watchdogs = spawnSync('pgrep', ['-af', 'process.stdin.on'], { encoding: 'utf8' }).stdout.trim();
      throw new Error(`${e.message}; wrapper stderr: ${JSON.stringify(run.stderr())}; watchdog processes: ${JSON.stringify(watchdogs)}`);
    });
    const goneAt = Date.now();
    // the watchdog leaves as soon as the group is gone, not --kill-after (10 s) later: the wrapper's
    // stderr it inherited is let go (a CI runner waiting for that pipe is not held)
    await run.closed;
    expect(Date.now() - goneAt).toBeLessThan(3_000);
    await waitFor(() => /the wrapper went away while its command ran: SIGTERM to the process group of the command\n/.test(run.stderr()), 2_000, 'the watchdog to say so');
    // the thaw is the gateway's, at the lease's deadline
    await waitFor(() => !fleet!.vm.vm1!.stats.frozen, 10_000, 'the deadline thaw');
  });

  it('a wrapper killed the moment its command starts (the command kills it): the command is still ended by the watchdog, which runs before it', { timeout: 60_000 }, async () => {
    const url = await gateway(['vm1']);
    const pidFile = path.join(fleet!.dir, 'orphan2.pid');
    const sh = `kill -9 $PPID; sleep 60 & echo $! > ${pidFile}; wait`;
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '3', '--kill-after', '10', '--', 'sh', '-c', sh]);
    await run.exit;
    const alive = await startedPid(pidFile, 'the command to start');
    await waitFor(() => !alive(), 25_000, "the command's sleep to be ended");
    await waitFor(() => !fleet!.vm.vm1!.stats.frozen, 10_000, 'the deadline thaw');
  });

  it('a lease that ends early (forced thaw) is reported at once and makes a successful command exit 1', async () => {
    const url = await gateway(['vm1']);
    const run = await runUntilGo(url);
    const forced = await fetch(`${url}/v1/vms/vm1/fsfreeze?force=true`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN}` } });
    expect(forced.status).toBe(200);
    // the next renewal (within a second) is refused
    await waitFor(() => /the lease ended early/.test(run.stderr()), 10_000, 'the wrapper to notice the lease ended');
    writeFileSync(path.join(fleet!.dir, 'go'), '1');
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(1);
    expect(run.stderr()).toMatch(/the lease ended early: renewal refused: POST \/v1\/vms\/vm1\/fsfreeze\/renew: 409 LEASE_EXPIRED/);
    expect(run.stderr()).toMatch(/the freeze did NOT hold: .*; command exit status 0\n$/);
    expect(count('vm1', 'guest-fsfreeze-freeze')).toBe(1);
    expect(count('vm1', 'guest-fsfreeze-thaw')).toBe(1);
  });

  it('a renewal refused for another reason than the lease ending (401 after a token change) is said as such and retried: once the token is back, the freeze holds', async () => {
    const url = await gateway(['vm1']);
    const run = await runUntilGo(url);
    const config = gatewayConfig!;
    // the backup token leaves the config (a SIGHUP): renewals are 401
    await app!.reloadConfig({ ...config, auth: { ...config.auth, tokens: config.auth.tokens.filter((t) => t.name !== 'backup') } });
    await waitFor(() => /renewal refused \(retrying until the lease expires at \S+; the guest stays frozen until then\): .*401/.test(run.stderr()), 10_000, 'the refusal to be said');
    expect(run.stderr()).not.toMatch(/the lease ended early|no longer frozen/);
    expect(fleet!.vm.vm1!.stats.frozen).toBe(true);
    // back: the next renewal goes through, and the freeze holds to the end
    const before = renewCalls;
    await app!.reloadConfig(config);
    await waitFor(() => renewCalls > before, 5_000, 'a renewal after the token came back');
    writeFileSync(path.join(fleet!.dir, 'go'), '1');
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(0);
    expect(run.stderr()).not.toMatch(/did NOT hold/);
    expect([count('vm1', 'guest-fsfreeze-freeze'), count('vm1', 'guest-fsfreeze-thaw')]).toEqual([1, 1]);
  });

  it('a command outlasting freeze.maxTotalSeconds: the cap is announced, the deadline ends the lease, exit 1', async () => {
    const url = await gateway(['vm1'], { maxTtlSeconds: 2, maxTotalSeconds: 4, defaultTtlSeconds: 2 });
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--ttl', '2', '--', process.execPath, '-e', 'setTimeout(() => {}, 6500)']);
    const { code } = await run.exit;
    expect(code, run.stderr()).toBe(1);
    expect(run.stderr()).toMatch(/the lease cannot be renewed past \S+ \(the gateway's freeze\.maxTotalSeconds\): the guest thaws then/);
    expect(run.stderr()).toMatch(/the lease ended early: renewal refused: .*409 LEASE_EXPIRED.*\(ended by deadline at /);
    expect(run.stderr()).toMatch(/the freeze did NOT hold: .*; command exit status 0\n$/);
    // the gateway thawed at the deadline; the wrapper's own thaw found the lease ended and sent nothing
    expect([count('vm1', 'guest-fsfreeze-freeze'), count('vm1', 'guest-fsfreeze-thaw')]).toEqual([1, 1]);
  });

  it('a freeze that fails: the command is not run, one line, exit 1', async () => {
    const url = await gateway(['vm1']);
    const marker = path.join(fleet!.dir, 'ran');
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'nosuchvm', '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, '1')`]);
    const { code } = await run.exit;
    expect(code).toBe(1);
    expect(existsSync(marker)).toBe(false);
    expect(run.stderr()).toMatch(/^qga-gateway freeze-run: freeze of VM nosuchvm failed, the command was not run: POST \/v1\/vms\/nosuchvm\/fsfreeze: 404 VM_NOT_FOUND: [^\n]+\n$/);
  });

  it("a group freeze that fails on one member: the line names the group's VMs and the member that failed", async () => {
    const url = await gateway(['vm1', 'vm2']);
    fleet!.vm.vm2!.setFault({ command: 'guest-fsfreeze-freeze', kind: 'error', class: 'GenericError', desc: 'failed to freeze /srv: Input/output error', times: 1 });
    const run = freezeRun(['--url', url, '--token-file', tokenFile(), '--vm', 'vm1', '--vm', 'vm2', '--', process.execPath, '-e', '0']);
    const { code } = await run.exit;
    expect(code).toBe(1);
    expect(run.stderr()).toMatch(/^qga-gateway freeze-run: freeze of freeze group \(vm1, vm2\) failed, the command was not run: POST \/v1\/freeze-groups: 422 AGENT_ERROR: [^\n]+ \(VM vm2\)\n$/);
  });

  it('usage errors exit 2 with one line and freeze nothing', async () => {
    const url = await gateway(['vm1']);
    const cases: Array<[string[], RegExp]> = [
      [['--url', url, '--vm', 'vm1'], /no command: give it after --/],
      [['--url', url, '--', 'true'], /at least one --vm is required/],
      [['--url', url, '--vm', 'vm1', '--ttl', 'soon', '--', 'true'], /--ttl must be a whole number of seconds/],
      [['--url', url, '--vm', 'vm1', '--token-file', '/nonexistent/token', '--', 'true'], /cannot read the token file \/nonexistent\/token: ENOENT/],
      [['--url', url, '--vm', 'vm1', '--frobnicate', '--', 'true'], /unknown option --frobnicate/],
    ];
    const runs = cases.map(([args]) => freezeRun(args));
    for (const [i, run] of runs.entries()) {
      const { code } = await run.exit;
      expect(code, run.stderr()).toBe(2);
      expect(run.stderr()).toMatch(cases[i]![1]);
      expect(run.stderr().trimEnd().split('\n')).toHaveLength(1);
    }
    expect(count('vm1', 'guest-fsfreeze-freeze')).toBe(0);
  });
});
