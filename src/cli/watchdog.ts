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
 */
const WATCHDOG = `
const group = -Number(process.argv[1]);
const killAfterMs = Number(process.argv[2]);
let done = false;
const signal = (sig) => { try { process.kill(group, sig); return true; } catch { return false; } };
process.stdin.on('data', (d) => { if (String(d).includes('done')) done = true; });
process.stdin.on('end', () => {
  if (done || !signal('SIGTERM')) process.exit(0);
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

/** The watchdog of a command's process group `pgid`; done(): the command ended, the watchdog leaves. */
export function startWatchdog(pgid: number, killAfterMs: number): { done(): void } | undefined {
  try {
    const w = spawn(process.execPath, ['-e', WATCHDOG, String(pgid), String(killAfterMs)], { stdio: ['pipe', 'ignore', 'inherit'], detached: true });
    w.on('error', () => undefined);
    w.stdin?.on('error', () => undefined);
    w.unref();
    return { done: () => void w.stdin?.end('done') };
  } catch {
    return undefined;
  }
}
