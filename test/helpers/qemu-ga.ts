/**
 * Runs the real qemu-ga on this machine, listening on a unix socket in a fresh temp dir.
 *
 * The agent runs as root here, so every command that could change the host (freeze, shutdown,
 * set-time, passwords, ssh keys, ...) is ALWAYS blocked with -b.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const QEMU_GA_PATH = '/usr/sbin/qemu-ga';

export const BLOCKED_COMMANDS: readonly string[] = [
  'guest-fsfreeze-freeze',
  'guest-fsfreeze-freeze-list',
  'guest-fsfreeze-thaw',
  'guest-fstrim',
  'guest-shutdown',
  'guest-suspend-disk',
  'guest-suspend-ram',
  'guest-suspend-hybrid',
  'guest-set-time',
  'guest-set-user-password',
  'guest-set-vcpus',
  'guest-set-memory-blocks',
  'guest-ssh-add-authorized-keys',
  'guest-ssh-remove-authorized-keys',
];

export interface QemuGa {
  socketPath: string;
  stateDir: string;
  readonly pid: number;
  /** SIGTERM, then SIGKILL after a grace period; removes the temp dir */
  stop(): Promise<void>;
  /** send a signal to the agent process (e.g. SIGKILL to simulate a crash) */
  kill(signal: NodeJS.Signals): void;
  /** start the agent again on the same socket path and state dir (after kill or by itself) */
  restart(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;

export async function startQemuGa(opts: { extraBlocked?: string[] } = {}): Promise<QemuGa> {
  if (!existsSync(QEMU_GA_PATH)) {
    throw new Error(
      `${QEMU_GA_PATH} is missing: these tests need the real QEMU guest agent. ` +
        'Install it with scripts/ensure-system-deps.sh (Debian package qemu-guest-agent).',
    );
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-test-'));
  const socketPath = path.join(dir, 'qga.sock');
  const blocked = [...BLOCKED_COMMANDS, ...(opts.extraBlocked ?? [])].join(',');
  let child: ChildProcess | undefined;
  let watchdog: ChildProcess | undefined;
  let log = '';

  const launch = async (): Promise<void> => {
    log = '';
    const proc = spawn(
      QEMU_GA_PATH,
      ['-m', 'unix-listen', '-p', socketPath, '-f', path.join(dir, 'qga.pid'), '-t', dir, '-b', blocked],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = proc;
    proc.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const spawned = new Promise<void>((resolve, reject) => {
      proc.once('spawn', () => resolve());
      proc.once('error', reject);
    });
    await spawned;
    // If this test process dies without stop() (killed worker, timeout), the pipe to the
    // watchdog closes and it kills the agent: no root qemu-ga is ever left behind.
    watchdog = spawn('/bin/sh', ['-c', `read _; kill -KILL ${proc.pid} 2>/dev/null`], { stdio: ['pipe', 'ignore', 'ignore'] });
    watchdog.on('error', () => undefined);
    await waitUntilAnswering(socketPath, proc, () => log);
  };

  const waitExit = (proc: ChildProcess, ms: number): Promise<boolean> =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve(true);
      const t = setTimeout(() => resolve(false), ms);
      proc.once('exit', () => {
        clearTimeout(t);
        resolve(true);
      });
    });

  const terminate = async (): Promise<void> => {
    watchdog?.kill('SIGKILL');
    watchdog = undefined;
    const proc = child;
    if (!proc) return;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      if (!(await waitExit(proc, 3000))) {
        proc.kill('SIGKILL');
        await waitExit(proc, 3000);
      }
    }
    child = undefined;
  };

  try {
    await launch();
  } catch (err) {
    await terminate();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    socketPath,
    stateDir: dir,
    get pid(): number {
      return child?.pid ?? -1;
    },
    async stop() {
      await terminate();
      await rm(dir, { recursive: true, force: true });
    },
    kill(signal) {
      child?.kill(signal);
    },
    async restart() {
      const proc = child;
      if (proc && proc.exitCode === null && proc.signalCode === null) {
        // restart() after kill(): wait for that signal to land before starting the new agent
        await waitExit(proc, 3000);
      }
      await terminate();
      await launch();
    },
  };
}

/** Poll until the agent answers 0xFF + guest-sync-delimited on its socket. */
async function waitUntilAnswering(socketPath: string, proc: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`qemu-ga exited early (${proc.exitCode ?? proc.signalCode}): ${log()}`);
    }
    if (existsSync(socketPath) && (await probe(socketPath))) return;
    if (Date.now() > deadline) throw new Error(`qemu-ga did not answer on ${socketPath}: ${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function probe(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const id = 1 + Math.floor(Math.random() * 1e9);
    const sock = net.connect(socketPath);
    let buf = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 1000);
    sock.on('error', () => done(false));
    sock.on('connect', () => {
      sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}\n`)]));
    });
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (buf.includes(`{"return": ${id}}`)) done(true);
    });
  });
}
