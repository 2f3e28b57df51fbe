/** Runs bench/lib/load-child.ts and hands back its result; `onGo` fires when the timed load starts. */
import type { LoadResult, LoadSpec } from './load-child.js';
import { spawnTs, stopChild } from './sim-child.js';

export type { LoadResult, LoadSpec } from './load-child.js';

export async function runLoad(spec: LoadSpec, hooks: { onGo?: () => Promise<void> | void; onDone?: () => Promise<void> | void } = {}): Promise<LoadResult> {
  const child = spawnTs('bench/lib/load-child.ts', [JSON.stringify(spec)]);
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  try {
    return await new Promise<LoadResult>((resolve, reject) => {
      let buf = '';
      let pending = Promise.resolve();
      const timer = setTimeout(() => reject(new Error(`load generator still running after ${spec.durationMs + 60_000} ms`)), spec.durationMs + 60_000);
      child.stdout?.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === 'go') {
            pending = pending.then(() => hooks.onGo?.());
          } else if (line.startsWith('{')) {
            clearTimeout(timer);
            const result = JSON.parse(line) as LoadResult;
            pending.then(() => hooks.onDone?.()).then(() => resolve(result), reject);
          }
        }
      });
      child.once('close', (code) => {
        if (code !== 0) {
          clearTimeout(timer);
          reject(new Error(`load generator failed (${code}): ${err}`));
        }
      });
    });
  } finally {
    await stopChild(child);
  }
}
