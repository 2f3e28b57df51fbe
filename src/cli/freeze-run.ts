/**
 * `qga-gateway freeze-run --url URL --vm NAME [--vm NAME …] [--ttl S] [--token-file F] -- CMD …`:
 * the freeze wrapper for backup and snapshot scripts. Freezes the VM (several --vm: one freeze
 * group), runs CMD with this process's stdio, renews the lease every ttl/3 while CMD runs, and
 * always thaws: when CMD ends, and when this process gets SIGINT, SIGTERM or SIGHUP (forwarded to
 * CMD's process group first; CMD gets --kill-after seconds before the group gets SIGKILL). Says
 * on stderr whether the freeze held.
 *
 * Exit: CMD's status (128+N when a signal N ended it; 127/126 when it is not found / not
 * executable, checked before freezing, or could not be started);
 * 1 when CMD succeeded but the freeze did not hold (the lease ended early, a renewal or the thaw
 * failed, the guest thawed on its own) or the freeze itself failed (CMD is then not run);
 * 2 usage errors. A wrapper that dies anyway leaves the thaw to the lease's deadline, and takes
 * CMD with it: a watchdog process ends CMD's process group (SIGTERM, SIGKILL --kill-after later).
 */
import type { Writable } from 'node:stream';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { constants } from 'node:os';
import { errorMessage } from '../util/unknown.js';
import { errnoCode, parseOptions, usageError } from './common.js';
import { CallError, FreezeClient, type Lease } from './freeze-client.js';
import { startWatchdog } from './watchdog.js';

export const FREEZE_RUN_HELP = `Usage: qga-gateway freeze-run --url URL --vm NAME [--vm NAME …] [OPTIONS] -- CMD [ARGS …]

Freeze the guest file systems of the VMs (several --vm: one freeze group, all or none), run CMD,
renew the freeze lease while CMD runs (every ttl/3), and always thaw: when CMD ends and when this
process gets SIGINT/SIGTERM/SIGHUP (forwarded to CMD's process group: CMD runs in a group of its
own, so its children get the signal too). Tells on stderr whether the freeze held. CMD's stdin is
/dev/null when this process's stdin is a terminal (no prompt can stall a frozen guest).
  --url URL            the gateway (https://host:8443); QGA_GATEWAY_URL by default
  --vm NAME            a VM to freeze; repeat for a group
  --ttl S              lease length in seconds (default 60); the gateway thaws by itself when the
                       lease is not renewed in time (this process killed: CMD's process group
                       then gets SIGTERM from a watchdog, and SIGKILL --kill-after later)
  --token-file F       file holding the API token (default: $QGA_GATEWAY_TOKEN, else no token)
  --mountpoint P       freeze only this mount point (repeatable; default all)
  --kill-after S       after forwarding a signal, SIGKILL CMD's process group when CMD is still
                       running (default 10); what CMD leaves running after a signal is killed
  --timeout S          deadline of the freeze and thaw requests (default 330)
Exit: CMD's status (128+N when signal N ended it; 127 CMD not found, 126 not executable: both
checked before freezing, nothing is frozen then); 1 when the freeze failed
(CMD not run) or did not hold (lease ended early, thaw failed, guest thawed on its own) while CMD
succeeded; 2 usage error.
A server certificate not signed by a public CA: NODE_EXTRA_CA_CERTS=ca.pem.`;

const PREFIX = 'qga-gateway freeze-run';
const say = (line: string): void => void process.stderr.write(`${PREFIX}: ${line}\n`);

interface Settings {
  url: string;
  vms: string[];
  ttl: number;
  token: string | undefined;
  mountpoints: string[] | undefined;
  killAfterMs: number;
  timeoutMs: number;
  command: string[];
}

function seconds(name: string, value: string | undefined, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) throw usageError(`freeze-run: --${name} must be a whole number of seconds from ${min} to ${max}, got "${value}"`);
  return Number(value);
}

function settings(args: string[]): Settings {
  const dash = args.indexOf('--');
  const command = dash < 0 ? [] : args.slice(dash + 1);
  const { values, positionals } = parseOptions(
    'freeze-run',
    dash < 0 ? args : args.slice(0, dash),
    {
      url: { type: 'string' },
      vm: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      'token-file': { type: 'string' },
      mountpoint: { type: 'string', multiple: true },
      'kill-after': { type: 'string' },
      timeout: { type: 'string' },
    },
    true,
  );
  if (positionals.length > 0) throw usageError(`freeze-run: unexpected argument "${positionals[0]}": put the command after -- (see qga-gateway freeze-run --help)`);
  if (command.length === 0) throw usageError('freeze-run: no command: give it after -- (see qga-gateway freeze-run --help)');
  const url = values.url ?? process.env.QGA_GATEWAY_URL;
  if (!url) throw usageError('freeze-run: --url is required (or QGA_GATEWAY_URL)');
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
  } catch {
    throw usageError(`freeze-run: --url "${url}" is not an http:// or https:// URL`);
  }
  const vms = values.vm ?? [];
  if (vms.length === 0) throw usageError('freeze-run: at least one --vm is required');
  if (new Set(vms).size !== vms.length) throw usageError('freeze-run: a --vm is given twice');
  let token = process.env.QGA_GATEWAY_TOKEN || undefined;
  const tokenFile = values['token-file'];
  if (tokenFile !== undefined) {
    try {
      token = readFileSync(tokenFile, 'utf8').trim();
    } catch (e) {
      throw usageError(`freeze-run: cannot read the token file ${tokenFile}: ${errnoCode(e) ?? errorMessage(e)}`);
    }
    if (!token) throw usageError(`freeze-run: the token file ${tokenFile} is empty`);
  }
  return {
    url,
    vms,
    ttl: seconds('ttl', values.ttl, 60, 1, 86_400),
    token,
    mountpoints: values.mountpoint,
    killAfterMs: seconds('kill-after', values['kill-after'], 10, 0, 86_400) * 1000,
    timeoutMs: seconds('timeout', values.timeout, 330, 1, 86_400) * 1000,
    command,
  };
}

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const signalNumber = (sig: NodeJS.Signals): number => constants.signals[sig] ?? 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const what = (s: Settings, lease?: Lease) => (s.vms.length === 1 ? `VM ${s.vms[0]}` : `freeze group ${lease?.id === undefined ? '' : `${lease.id} `}(${s.vms.join(', ')})`);

/**
 * Why CMD cannot be run, checked before anything is frozen, as a shell finds it: a name with a
 * slash as it is, else the first executable file of that name in PATH. 127 not found, 126 found
 * but not executable (a directory, no x bit).
 */
export function commandProblem(cmd: string, path = process.env.PATH ?? ''): { status: 127 | 126; why: string } | undefined {
  const candidates = cmd.includes('/') ? [cmd] : path.split(delimiter).filter((d) => d !== '').map((d) => join(d, cmd));
  let denied: string | undefined;
  for (const file of candidates) {
    try {
      if (statSync(file).isDirectory()) {
        denied ??= `${file} is a directory`;
        continue;
      }
    } catch {
      continue;
    }
    try {
      accessSync(file, fsConstants.X_OK);
      return undefined;
    } catch (e) {
      denied ??= `${file}: ${errnoCode(e) ?? errorMessage(e)} (not executable)`;
    }
  }
  if (denied) return { status: 126, why: denied };
  return { status: 127, why: cmd.includes('/') ? 'ENOENT (no such file)' : 'not found in PATH (ENOENT)' };
}

export async function freezeRun(args: string[]): Promise<number> {
  const s = settings(args);
  // a command that cannot start would freeze the guest for nothing: checked first, as a shell would
  const problem = commandProblem(s.command[0]!);
  if (problem) {
    say(`cannot run ${s.command[0]}: ${problem.why}; nothing was frozen`);
    return problem.status;
  }
  const client = new FreezeClient(s.url, s.token);
  let child: ChildProcess | undefined;
  let received: NodeJS.Signals | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    received ??= sig;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    say(`got ${sig}: forwarding it to the command, then thawing`);
    signalGroup(child, sig);
    killTimer ??= setTimeout(() => {
      say(`the command is still running ${s.killAfterMs / 1000} s after ${sig}: SIGKILL`);
      if (child) signalGroup(child, 'SIGKILL');
    }, s.killAfterMs);
  };
  for (const sig of FORWARDED) process.on(sig, onSignal);
  try {
    return await freezeAndRun(s, client, {
      interrupted: () => received,
      started: (c) => (child = c),
      // the command ended after a forwarded signal: what it left running in its group goes too
      ended: () => void (received && child && signalGroup(child, 'SIGKILL')),
    });
  } finally {
    clearTimeout(killTimer);
    for (const sig of FORWARDED) process.off(sig, onSignal);
  }
}

interface Hooks {
  interrupted(): NodeJS.Signals | undefined;
  started(child: ChildProcess): void;
  ended(): void;
}

/**
 * The command runs in its own process group (spawn detached), so a signal reaches everything it
 * started (a shell's children too), not only the direct child. ESRCH: the group is gone already.
 */
function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch (e) {
    if (errnoCode(e) !== 'ESRCH') say(`cannot send ${sig} to the command's process group: ${errnoCode(e) ?? errorMessage(e)}`);
  }
}

async function freezeAndRun(s: Settings, client: FreezeClient, hooks: Hooks): Promise<number> {
  const key = randomUUID();
  let lease: Lease;
  try {
    lease = await client.freeze(s.vms, s.ttl, s.mountpoints, key, s.timeoutMs).catch(async (e: unknown) => {
      // no answer: the same Idempotency-Key returns the lease if the first attempt did freeze
      if (e instanceof CallError && e.status === undefined) return client.freeze(s.vms, s.ttl, s.mountpoints, key, s.timeoutMs);
      throw e;
    });
  } catch (e) {
    say(`freeze of ${what(s)} failed, the command was not run: ${errorMessage(e)}`);
    return 1;
  }
  const frozenAt = Date.now();
  const fs = Object.entries(lease.frozen).map(([vm, n]) => `${vm}: ${n}`).join(', ');
  say(`froze ${what(s, lease)} (filesystems ${fs}); lease until ${lease.expiresAt}`);
  const renewals = new Renewals(client, lease, s.ttl);
  let status: number;
  const early = hooks.interrupted();
  if (early) {
    say(`got ${early} while freezing: the command was not run`);
    status = 128 + signalNumber(early);
  } else {
    renewals.start();
    status = await runCommand(s.command, s.killAfterMs, hooks.started);
    hooks.ended();
  }
  await renewals.stop();
  const thaw = await thawWithRetries(client, lease, s.timeoutMs);
  const ms = Date.now() - frozenAt;
  // a lease the renewals already saw end is not reported twice by its thaw
  const problems = renewals.problems.length > 0 ? [...renewals.problems, ...thaw.problems.filter((p) => !p.startsWith('the lease had already ended'))] : thaw.problems;
  if (problems.length === 0) {
    say(`the freeze held: ${what(s, lease)} frozen for ${(ms / 1000).toFixed(1)} s, ${renewals.count} renewal(s), thawed; command exit status ${status}`);
    return status;
  }
  say(`the freeze did NOT hold: ${problems.join('; ')}; command exit status ${status}`);
  return status !== 0 ? status : 1;
}

/**
 * runs CMD with our stdio in a process group of its own (signals go to the whole group); its exit
 * status (128+N for a signal), 127/126 when it cannot start. A terminal's Ctrl-C reaches this
 * process, which forwards it. CMD's group is a background one: reading the terminal would stop it
 * (SIGTTIN) while the guest stays frozen and the lease is renewed, so when our stdin is a terminal
 * CMD's stdin is /dev/null (a prompt reads end of file); stdout and stderr stay ours.
 */
/** the shell that holds the command until the wrapper says go on fd 3, then becomes it */
const HELD_EXEC = 'read -r _ <&3 || exit 125; exec 3<&-; exec "$@"';

function runCommand(command: string[], killAfterMs: number, started: (c: ChildProcess) => void): Promise<number> {
  return new Promise((resolve) => {
    const stdin = process.stdin.isTTY ? 'ignore' : 'inherit';
    // The command never runs without a watchdog that knows its process group (cli/watchdog.ts): the
    // watchdog starts first, and the command's process is held by a shell until the watchdog has
    // been told its group ('go' on fd 3), then becomes the command (exec: same pid, same group). A
    // wrapper killed before that (the command's own first act may be to kill it) leaves a shell
    // that reads end of file and exits 125 without running the command.
    const watchdog = startWatchdog(killAfterMs);
    const child = spawn('/bin/sh', ['-c', HELD_EXEC, 'freeze-run', ...command], { stdio: [stdin, 'inherit', 'inherit', 'pipe'], detached: true });
    if (child.pid !== undefined) watchdog?.watch(child.pid);
    const go = child.stdio[3] as Writable | null | undefined;
    go?.on('error', () => undefined);
    go?.end('go\n');
    started(child);
    const done = (status: number): void => {
      watchdog?.done();
      resolve(status);
    };
    child.once('error', (e) => {
      const code = errnoCode(e);
      say(`cannot run ${command[0]}: ${code ?? errorMessage(e)}`);
      done(code === 'ENOENT' ? 127 : 126);
    });
    child.once('exit', (code, signal) => done(code ?? 128 + (signal ? signalNumber(signal) : 0)));
  });
}

/** renews every ttl/3 while the command runs; notes when the lease ended early */
class Renewals {
  count = 0;
  readonly problems: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> = Promise.resolve();
  private stopped = false;
  private capped = false;
  private expiresAt: number;
  private readonly everyMs: number;

  constructor(
    private readonly client: FreezeClient,
    private readonly lease: Lease,
    private readonly ttl: number,
  ) {
    this.expiresAt = Date.parse(lease.expiresAt) || Date.now() + ttl * 1000;
    this.everyMs = Math.max(100, Math.floor((ttl * 1000) / 3));
  }

  start(): void {
    this.schedule(this.everyMs);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => (this.inFlight = this.renew()), ms);
  }

  private async renew(): Promise<void> {
    try {
      const r = await this.client.renew(this.lease, this.ttl, Math.max(1_000, this.everyMs));
      this.count++;
      if (r.capped && !this.capped) say(`the lease cannot be renewed past ${r.expiresAt} (the gateway's freeze.maxTotalSeconds): the guest thaws then`);
      this.capped ||= r.capped;
      this.expiresAt = Date.parse(r.expiresAt) || this.expiresAt;
      this.schedule(this.everyMs);
    } catch (e) {
      // only these say the lease is over (thawed by its deadline, forced, or gone with its group)
      if (e instanceof CallError && (e.code === 'LEASE_EXPIRED' || e.code === 'LEASE_CONFLICT' || e.code === 'NOT_FOUND')) {
        const ended = e.body.endedBy ? ` (ended by ${String(e.body.endedBy)} at ${String(e.body.endedAt)})` : '';
        const line = `the lease ended early: renewal refused: ${e.message}${ended}`;
        this.problems.push(line);
        if (!this.stopped) say(`${line}; the guest is no longer frozen`);
        return;
      }
      if (Date.now() >= this.expiresAt) {
        this.problems.push(`the lease could not be renewed before it expired: ${errorMessage(e)}`);
        say(`renewal failed and the lease has expired: ${errorMessage(e)}`);
        return;
      }
      // any other refusal (401/403 after a token change, 400…) leaves the lease as it was: the guest
      // stays frozen until it expires, so say so, and keep trying until then
      const refused = e instanceof CallError && !e.transient;
      say(
        refused
          ? `renewal refused (retrying until the lease expires at ${new Date(this.expiresAt).toISOString()}; the guest stays frozen until then): ${errorMessage(e)}`
          : `renewal failed (retrying): ${errorMessage(e)}`,
      );
      this.schedule(Math.min(1_000, this.everyMs));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.inFlight;
  }
}

async function thawWithRetries(client: FreezeClient, lease: Lease, timeoutMs: number): Promise<{ problems: string[] }> {
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await client.thaw(lease, timeoutMs);
      return { problems: r.consistent ? [] : [`the guest did not stay frozen: ${r.reasons.join(', ')}`] };
    } catch (e) {
      if (e instanceof CallError && e.code === 'LEASE_EXPIRED') {
        const by = e.body.endedBy ? ` (ended by ${String(e.body.endedBy)} at ${String(e.body.endedAt)})` : '';
        return { problems: [`the lease had already ended at the thaw${by}`] };
      }
      if (!(e instanceof CallError && e.transient) || attempt >= 3) {
        return { problems: [`thaw failed: ${errorMessage(e)}; the gateway thaws by itself at the lease deadline`] };
      }
      say(`thaw failed (retrying): ${errorMessage(e)}`);
      await sleep(1_000 * attempt);
    }
  }
}
