/**
 * A real redis-server for tests: a free loopback port, a fresh temp dir, no persistence unless a
 * test asks to keep the data across restart(). Fails loudly when redis-server is not installed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const REDIS_SERVER_PATH = '/usr/bin/redis-server';

export interface TestRedis {
  url: string;
  port: number;
  readonly pid: number | undefined;
  /** SIGTERM (no save), wait for exit, remove the temp dir */
  stop(): Promise<void>;
  /** SIGKILL: a crash; data not saved */
  kill(): Promise<void>;
  /** stop if running and start again on the same port; `empty: false` saves the data first */
  restart(opts?: { empty?: boolean }): Promise<void>;
  /** SIGSTOP / SIGCONT: the server stops answering but keeps its connections */
  pause(): void;
  resume(): void;
  /** send one command over a raw connection (no client library), return the raw reply text */
  command(...args: string[]): Promise<string>;
}

function requireRedisServer(): void {
  if (!existsSync(REDIS_SERVER_PATH)) {
    throw new Error(
      `${REDIS_SERVER_PATH} is missing: the Redis store tests need a real redis-server. ` +
        'Install it with scripts/ensure-system-deps.sh (Debian package redis-server).',
    );
  }
}

/** A redis-server (or sentinel) process started by spawnRedisServer. */
export interface RedisProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** its output so far (loglevel warning unless the args say otherwise) */
  log(): string;
  /** `signal` (SIGTERM by default; SIGCONT first, a paused server never handles it) and wait for the exit */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Start redis-server with `args` and wait until `port` answers a PING (PONG, or NOAUTH from an
 * ACL-protected server), failing with its output if it exits or does not answer within 10 s.
 */
/**
 * A redis-server (or sentinel) on a port picked now, with the arguments `argsFor(port)`: a port
 * found free can be taken by someone else before the server binds it (an outgoing connection's
 * ephemeral port), so a start refused with "Address already in use" is tried again on another one.
 */
export async function spawnOnFreePort(argsFor: (port: number) => string[] | Promise<string[]>): Promise<RedisProcess> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return await spawnRedisServer(await argsFor(port), port);
    } catch (e) {
      if (attempt >= 3 || !/Address already in use/.test(String((e as Error).message))) throw e;
    }
  }
}

export async function spawnRedisServer(args: string[], port: number): Promise<RedisProcess> {
  requireRedisServer();
  let out = '';
  const c = spawn(REDIS_SERVER_PATH, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  c.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  c.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    if (c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGCONT');
    c.kill(signal);
    await exited;
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (c.exitCode !== null) throw new Error(`redis-server exited with ${c.exitCode}: ${out}`);
    try {
      if (/^(\+|-NOAUTH)/.test(await rawCommand(port, ['PING']))) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop('SIGKILL');
      throw new Error(`redis-server did not answer on port ${port}: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return { child: c, port, log: () => out, stop };
}

export async function startRedis(): Promise<TestRedis> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    const p = await spawnRedisServer(['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning'], port);
    child = p.child;
  };

  const waitExit = async (c: ChildProcess, signal: NodeJS.Signals): Promise<void> => {
    if (c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGCONT'); // a paused server would never handle SIGTERM
    c.kill(signal);
    await exited;
  };

  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() {
      return child?.pid;
    },
    async stop() {
      if (child) await waitExit(child, 'SIGTERM');
      child = undefined;
      await rm(dir, { recursive: true, force: true });
    },
    async kill() {
      if (child) await waitExit(child, 'SIGKILL');
    },
    async restart(opts = {}) {
      const empty = opts.empty ?? true;
      if (child && child.exitCode === null && child.signalCode === null) {
        if (!empty) await rawCommand(port, ['SAVE']);
        await waitExit(child, 'SIGKILL');
      }
      if (empty) await rm(path.join(dir, 'dump.rdb'), { force: true });
      await launch();
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    command: (...args: string[]) => rawCommand(port, args),
  };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const p = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(p));
    });
  });
}

/** One RESP command; resolves with the first reply chunk (enough for PING, SAVE, simple replies). */
export function rawCommand(port: number, args: string[]): Promise<string> {
  return rawExchange(port, [args], (buf) => buf);
}

/**
 * `AUTH [user] password`, then one command, pipelined on one connection (for a server that wants a
 * password); resolves with the reply of the command (the AUTH reply is one line and is dropped).
 */
export function rawAuthCommand(port: number, auth: string[], args: string[]): Promise<string> {
  return rawExchange(port, [['AUTH', ...auth], args], (buf) => {
    const i = buf.indexOf('\r\n');
    return i >= 0 && buf.length > i + 2 ? buf.slice(i + 2) : undefined;
  });
}

/** Writes `commands` (RESP) on one connection; resolves with `reply(what came so far)` once it is defined. */
function rawExchange(port: number, commands: string[][], reply: (buf: string) => string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error('redis raw command timed out'));
    }, 5_000);
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      const r = reply(buf);
      if (r !== undefined) {
        clearTimeout(t);
        s.end();
        resolve(r);
      }
    });
    s.write(commands.map((a) => `*${a.length}\r\n` + a.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')).join(''));
  });
}
