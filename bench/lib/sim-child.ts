/**
 * The simulator in a CHILD process (sim/cli.ts), so its event loop does not share a core with
 * the gateway being measured. Waits for the ready line, reads the `vms:` block it wrote, and
 * stops it with SIGTERM (SIGKILL after a grace period); the temp dir is removed afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import type { Endpoint } from '../../src/qga/types.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface SimChild {
  vms: Array<{ name: string; endpoint: Endpoint }>;
  pid: number;
  /** the `vms:` block the simulator wrote (a gateway config fragment) */
  configFile: string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
// If the bench dies without stop(), take the children with it.
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** node + tsx on a TypeScript entry point of this repo, with piped stdio. */
export function spawnTs(entry: string, args: string[], nodeFlags: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', path.join(REPO, entry), ...args], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

export function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** Run a TypeScript entry to completion and parse the last line it printed on stdout as JSON. */
export async function runJsonChild<T>(entry: string, args: string[], nodeFlags: string[] = [], timeoutMs = 120_000): Promise<T> {
  const child = spawnTs(entry, args, nodeFlags);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  // 'close', not 'exit': stdout may still hold the result when the process has exited
  const closed = await new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    child.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
  if (!closed) {
    await stopChild(child);
    throw new Error(`${entry} did not finish within ${timeoutMs} ms: ${err}`);
  }
  if (child.exitCode !== 0) throw new Error(`${entry} failed (${child.exitCode ?? child.signalCode}): ${err}`);
  const last = out.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as T;
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (!(await waitExit(child, 5000))) {
    child.kill('SIGKILL');
    await waitExit(child, 5000);
  }
}

export async function startSimChild(count: number, timeoutMs = 60_000): Promise<SimChild> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-sim-'));
  const configOut = path.join(dir, 'vms.yaml');
  const child = spawnTs('sim/cli.ts', ['--vms', String(count), '--dir', dir, '--config-out', configOut]);
  child.stdout?.resume(); // the same block as configOut; drained so the pipe never fills
  let log = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`simulator not ready within ${timeoutMs} ms: ${log}`)), timeoutMs);
      child.stderr?.on('data', (d: Buffer) => {
        log += d.toString();
        if (log.includes('qga-sim ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`simulator exited (${code ?? sig}): ${log}`));
      });
    });
    const parsed = YAML.parse(await readFile(configOut, 'utf8')) as { vms: Array<{ name: string; endpoint: Endpoint }> };
    if (parsed.vms.length !== count) throw new Error(`simulator listed ${parsed.vms.length} VMs, asked for ${count}`);
    return {
      vms: parsed.vms,
      pid: child.pid ?? -1,
      configFile: configOut,
      async stop() {
        await stopChild(child);
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await stopChild(child);
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
