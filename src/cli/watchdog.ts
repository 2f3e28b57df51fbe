/**
 * freeze-run's watchdog (cli/freeze-run.ts): a process of its own that ends the wrapped command
 * when the wrapper dies without saying it is done (SIGKILL, its process group killed).
 */
import { spawn } from 'node:child_process';

/**
 * The command's own process group is out of reach of a signal to this process's group (a shell's
 * job control, `timeout -s KILL`, a CI runner ending the job), and nothing forwards a SIGKILL of
 * this process: the command would run on against a guest the deadline thaws, its result (a
 * snapshot) unreported. A watchdog process, in a group of its own, holds a pipe from this process:
 * when the pipe closes without `done` (this process died), it sends SIGTERM to the command's group,
 * and SIGKILL `killAfterMs` later if the group is still there.
 *
 * The watchdog is started BEFORE the command and told the command's group on the pipe (`pgid N`);
 * freeze-run holds the command's process (a shell waiting on fd 3) until that is written, so the
 * command never runs unwatched. Started after it, as it once was, a wrapper killed while the
 * watchdog was still being spawned (milliseconds, more on a loaded machine) left the command
 * without one: it ran on (a clean-clone CI run saw its sleep outlive the wrapper by more than 10 s).
 */
const WATCHDOG = `
const killAfterMs = Number(process.argv[1]);
let group;
let done = false;
let text = '';
const signal = (sig) => { try { process.kill(group, sig); return true; } catch { return false; } };
process.stdin.on('data', (d) => {
  text += String(d);
  const m = /pgid (\\d+)\\n/.exec(text);
  if (m) group = -Number(m[1]);
  if (text.includes('done')) done = true;
});
process.stdin.on('end', () => {
  if (done || group === undefined || !signal('SIGTERM')) process.exit(0);
  process.stderr.write('qga-gateway freeze-run: the wrapper went away while its command ran: SIGTERM to the process group of the command\\n');
  // gone before --kill-after: nothing to wait for (and the stderr it holds is let go)
  const start = Date.now();
  setInterval(() => {
    if (!signal(0)) process.exit(0);
    if (Date.now() - start >= killAfterMs) { signal('SIGKILL'); process.exit(0); }
  }, 100);
});
process.stdin.on('error', () => {});
`;

/**
 * A watchdog, started before the command: watch(pgid) once the command is spawned (its process
 * group); done(): the command ended (or never started), the watchdog leaves.
 */
export function startWatchdog(killAfterMs: number): { watch(pgid: number): void; done(): void } | undefined {
  try {
    const w = spawn(process.execPath, ['-e', WATCHDOG, String(killAfterMs)], { stdio: ['pipe', 'ignore', 'inherit'], detached: true });
    w.on('error', () => undefined);
    w.stdin?.on('error', () => undefined);
    w.unref();
    return { watch: (pgid) => void w.stdin?.write(`pgid ${pgid}\n`), done: () => void w.stdin?.end('done') };
  } catch {
    return undefined;
  }
}
