/**
 * The real VM rig (../shared/vm): a QEMU guest running the real qemu-ga behind virtio-serial.
 * Tests that need it call `vmAvailable()` and, when it is false, skip with `VM_SKIP_REASON`
 * printed; CI has the rig, so there they run. Each test file boots its own uniquely named VM.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { SHARED_DIR } from './shared.js';

const run = promisify(execFile);

export const VM_DIR = resolve(SHARED_DIR, 'vm');
const ENV = { ...process.env, QGA_VM_ACCEL: process.env.QGA_VM_ACCEL ?? 'tcg' };

export function vmAvailable(): boolean {
  return existsSync(resolve(VM_DIR, 'start.sh')) && existsSync('/usr/bin/qemu-system-x86_64');
}

export const VM_SKIP_REASON = `SKIPPED: the real-VM rig is not available (${VM_DIR}/start.sh or qemu-system-x86_64 missing)`;

/** Print the skip reason once per file, plainly, so a skipped run is never mistaken for a pass. */
export function announceVmSkip(what: string): void {
  if (!vmAvailable()) process.stdout.write(`\n[${what}] ${VM_SKIP_REASON}\n`);
}

const CACHE_DIR = process.env.QGA_VM_DIR ?? '/var/tmp/qga-vm';
const BUILT_FILES = ['build.env', 'vmlinuz', 'initramfs.cpio.gz', 'data.img'];

/**
 * The rig is built once, before the tests (npm test's pretest runs build.sh). Test files run in
 * parallel worker processes, and two build.sh runs at once rebuild the same initramfs under each
 * other, so a worker builds only when nothing is built yet, under a lock shared by the workers.
 */
let built: Promise<void> | undefined;
function build(): Promise<void> {
  built ??= (async () => {
    if (BUILT_FILES.every((f) => existsSync(resolve(CACHE_DIR, f)))) return;
    mkdirSync(CACHE_DIR, { recursive: true });
    const lock = resolve(CACHE_DIR, '.test-build.lock');
    const deadline = Date.now() + 600_000;
    for (;;) {
      try {
        mkdirSync(lock);
        break;
      } catch {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    try {
      if (!BUILT_FILES.every((f) => existsSync(resolve(CACHE_DIR, f)))) {
        await run(resolve(VM_DIR, 'build.sh'), [], { env: ENV, timeout: 600_000 });
      }
    } finally {
      rmSync(lock, { recursive: true, force: true });
    }
  })();
  return built;
}

export interface RunningVm {
  name: string;
  socketPath: string;
  bootSeconds: number;
  stop(): Promise<void>;
}

/** Boot a VM (≈3 s under TCG). Names: [A-Za-z0-9_.-], max 32 chars; made unique per process. */
export async function startVm(base: string): Promise<RunningVm> {
  await build();
  const name = `${base}-${process.pid}`.slice(0, 32);
  const { stdout } = await run(resolve(VM_DIR, 'start.sh'), [name], { env: ENV, timeout: 180_000 });
  const vars = Object.fromEntries(
    stdout
      .split('\n')
      .map((l) => /^([A-Z_]+)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], m[2]]),
  );
  if (!vars.QGA_SOCKET) throw new Error(`start.sh printed no QGA_SOCKET:\n${stdout}`);
  return {
    name,
    socketPath: vars.QGA_SOCKET,
    bootSeconds: Number(vars.BOOT_SECONDS),
    async stop() {
      await run(resolve(VM_DIR, 'stop.sh'), [name], { env: ENV, timeout: 30_000 }).catch(() => undefined);
      // stop.sh leaves the instance's copy of the data disk (32 MiB; start.sh makes a fresh one each
      // boot unless QGA_VM_KEEP_DATA=1): without this every test run left ~8 of them in the cache dir
      if (process.env.QGA_VM_KEEP_DATA !== '1') rmSync(resolve(CACHE_DIR, `${name}.data.img`), { force: true });
    },
  };
}
