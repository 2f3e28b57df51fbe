/**
 * One timer for all of a session's deadlines. set() asks for a ring by some time (an earlier ring
 * already set stands); when it rings, the owner looks at what is due and sets the next one. So a
 * job's deadline costs a comparison when the job is accepted, not a setTimeout/clearTimeout pair,
 * and every timer a session has is cleared in one place.
 */

import { auditContext } from '../util/audit.js';

/** setTimeout's limit; a later time is reached by ringing early and setting again */
const MAX_DELAY = 2 ** 31 - 1;

export class Alarm {
  private timer: NodeJS.Timeout | undefined;
  private at = Infinity;
  private keepsAlive = false;
  private readonly ring = (): void => {
    this.timer = undefined;
    this.at = Infinity;
    this.onRing();
  };

  constructor(
    private readonly onRing: () => void,
    private readonly now: () => number,
  ) {}

  /** Ring by `at` (Infinity: nothing to add); `keepAlive`: the process must not exit before. */
  set(at: number, keepAlive: boolean): void {
    if (at < this.at) {
      clearTimeout(this.timer);
      // outside any request's audit context: what a ring starts is the gateway's (connection.ts)
      this.timer = auditContext.exit(() => setTimeout(this.ring, Math.min(MAX_DELAY, Math.max(1, Math.ceil(at - this.now())))));
      this.at = at;
      if (!keepAlive) this.timer.unref();
      this.keepsAlive = keepAlive;
    } else if (keepAlive && !this.keepsAlive && at !== Infinity && this.timer) {
      this.timer.ref();
      this.keepsAlive = true;
    }
  }

  /** Nothing that must keep the process alive is pending any more. */
  idle(): void {
    this.timer?.unref();
    this.keepsAlive = false;
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.at = Infinity;
  }
}
