/**
 * Small rules the probe (AgentService.probe) and the waits (wait.ts) keep so that asking whether
 * an agent is there never costs the VM's other clients anything: no call started too late to
 * matter, and no socket held longer than the idle release would have held it.
 */
import { performance } from 'node:perf_hooks';
import type { Channel } from '../qga/channel.js';

/** No agent call is started with less time than this left (it could only time out: noise, not news). */
export const MIN_CALL_MS = 50;

/**
 * Let `ch`'s socket go at `at` (performance.now() clock) if nothing used the channel after the
 * last job stamped `stamp` (a later job restarted the channel's own idle release: that one decides).
 */
export function releaseIdleAt(ch: Channel, at: number, stamp: number): void {
  const release = (): void => {
    if (ch.lastUsedAt === stamp && !ch.busy) ch.release();
  };
  const wait = at - performance.now();
  if (wait <= 0) return release();
  setTimeout(release, wait).unref();
}
