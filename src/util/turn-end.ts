/**
 * Work deferred to the end of the current event-loop turn, all of it in ONE setImmediate (the
 * check phase right after the poll phase that produced it: the same turn, no timer).
 *
 * Why (issue 14): under load, answers from many agents (or, in cluster mode, from other nodes)
 * arrive in one poll phase. Handling each to the end at once wrote its HTTP response between one
 * reply and the next, one system call at a time, and on a machine where waking another process is
 * dear each of those writes woke the client's process on its own. Deferred here, the poll phase
 * first does what feeds the agents (a channel writes its next command as soon as its reply is
 * read), and the answers then go out back to back, where one wake-up of a client process serves
 * many of them. Answers are deferred only while other work is outstanding (answerInTurn): a lone
 * answer (one request at a time) goes out at once, as an extra loop iteration would cost it more
 * than it saves.
 *
 * Calls are made in the order they were deferred. What a deferred call defers in turn (directly
 * or from the microtasks it starts) runs at the end of the next turn.
 */
type Deferred = (a: never, b: never) => void;

/** flat triples: fn, a, b */
let due: unknown[] = [];
let spare: unknown[] = [];

/** Run fn(a, b) at the end of this turn. */
export function atTurnEnd<A, B>(fn: (a: A, b: B) => void, a: A, b: B): void {
  if (due.push(fn, a, b) === 3) setImmediate(runDue);
}

/** work is waiting for the end of this turn */
export function turnEndPending(): boolean {
  return due.length > 0;
}

/**
 * An answer: at the end of this turn while `othersOut` (other work of its kind is outstanding, so
 * more answers are likely in this turn) or while something deferred waits (it must not be
 * overtaken); else now.
 */
export function answerInTurn<A, B>(othersOut: boolean, fn: (a: A, b: B) => void, a: A, b: B): void {
  if (othersOut || due.length > 0) atTurnEnd(fn, a, b);
  else fn(a, b);
}

function runDue(): void {
  const work = due;
  due = spare;
  for (let i = 0; i < work.length; i += 3) {
    const fn = work[i] as Deferred;
    const a = work[i + 1] as never;
    const b = work[i + 2] as never;
    work[i + 1] = work[i + 2] = undefined;
    try {
      fn(a, b);
    } catch (err) {
      // one call's failure must not strand the others: report it as its own uncaught error
      queueMicrotask(() => {
        throw err;
      });
    }
  }
  work.length = 0;
  spare = work;
}
