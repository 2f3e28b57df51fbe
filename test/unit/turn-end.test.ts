/**
 * End-of-turn batching (src/util/turn-end.ts) and its use by the Channel's line (JobQueue.finish):
 * deferred calls run together in one check phase, in order, after every I/O callback of the turn;
 * what they defer runs a turn later. A job's promise settles at once when it was the process's
 * last unsettled job and nothing deferred waits; else at the end of the turn, never overtaking a
 * job settled before it.
 */
import { describe, expect, it } from 'vitest';
import { commandSpec } from '../../src/qga/commands.js';
import { Job, JobQueue } from '../../src/qga/queue.js';
import { atTurnEnd, turnEndPending } from '../../src/util/turn-end.js';

/** what has run after the current microtasks (several hops: a promise chain's continuations) */
async function afterMicrotasks(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('atTurnEnd', () => {
  it('runs the turn’s deferred calls in order, in one setImmediate, after the microtasks of the turn', async () => {
    const seen: string[] = [];
    const push = (a: string, b: number) => seen.push(`${a}${b}`);
    atTurnEnd(push, 'a', 1);
    atTurnEnd(push, 'b', 2);
    expect(turnEndPending()).toBe(true);
    await afterMicrotasks();
    expect(seen).toEqual([]);
    // an immediate queued now comes after the batch's (queued by the first call above)
    await nextTurn();
    expect(seen).toEqual(['a1', 'b2']);
    expect(turnEndPending()).toBe(false);
  });

  it('a call deferred by a deferred call runs at the end of the next turn; a throwing call does not strand the others', async () => {
    const seen: string[] = [];
    const errors: unknown[] = [];
    const onError = (e: unknown) => errors.push(e);
    process.prependListener('uncaughtException', onError);
    try {
      atTurnEnd(() => {
        seen.push('first');
        atTurnEnd(() => seen.push('later'), undefined, undefined);
      }, undefined, undefined);
      atTurnEnd(() => {
        throw new Error('boom');
      }, undefined, undefined);
      atTurnEnd(() => seen.push('third'), undefined, undefined);
      await nextTurn();
      expect(seen).toEqual(['first', 'third']);
      await nextTurn();
      expect(seen).toEqual(['first', 'third', 'later']);
      expect(errors.map((e) => (e as Error).message)).toEqual(['boom']);
    } finally {
      process.removeListener('uncaughtException', onError);
    }
  });
});

describe('JobQueue.finish', () => {
  const spec = commandSpec('guest-ping')!;
  const handler = { onCallerAbort: () => undefined };
  const job = () => new Job('command', 'guest-ping', undefined, spec, 0, 1000, undefined, handler);

  it('the last unsettled job settles at once; with others outstanding a job settles at the end of the turn, and a later one never overtakes it', async () => {
    const events: string[] = [];
    const q = new JobQueue((j, outcome) => events.push(`event ${outcome}`));
    const [a, b, c] = [job(), job(), job()];
    const order: string[] = [];
    void q.accept<string>(a).then((v) => order.push(v));
    void q.accept<string>(b).then((v) => order.push(v));
    void q.accept<string>(c).catch((e: Error) => order.push(e.message));

    // b is not the last unsettled job (a and c are): its answer waits for the end of the turn
    q.finish(b, 'ok', 'b');
    expect(events).toEqual(['event ok']);
    await afterMicrotasks();
    expect(order).toEqual([]);
    await nextTurn();
    expect(order).toEqual(['b']);

    // c fails while a is still out: deferred too; then a, now the last, settles in the same turn
    // behind c (something deferred waits), not before it
    q.finish(c, 'unavailable', new Error('c failed'));
    q.finish(a, 'ok', 'a');
    await afterMicrotasks();
    expect(order).toEqual(['b']);
    await nextTurn();
    expect(order).toEqual(['b', 'c failed', 'a']);
    expect(events).toEqual(['event ok', 'event unavailable', 'event ok']);

    // alone: settles without waiting for the check phase
    const d = job();
    const got = q.accept<string>(d);
    q.finish(d, 'ok', 'd');
    let settled = false;
    void got.then(() => (settled = true));
    await afterMicrotasks();
    expect(settled).toBe(true);
    expect(turnEndPending()).toBe(false);
  });
});
