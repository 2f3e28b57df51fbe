/**
 * Scriptable misbehaviour per simulated VM. A fault matches a command name (or '*') and fires
 * `times` times (default: until cleared). Pre-execution faults (delay/late, hang, error) act
 * before the command runs; reply faults (drop-mid-reply, garbage, partial-line, oversize,
 * no-reply) act on the reply of a command that did run.
 */

interface FaultBase {
  /** command name, or '*' for every command */
  command: string;
  /** how many matching requests it affects; default: every one until clearFaults() */
  times?: number;
}

export type FaultSpec = FaultBase &
  (
    | { kind: 'delay' | 'late'; ms: number }
    /** never answer; the agent is stuck (later requests queue) until clearFaults() or a disconnect */
    | { kind: 'hang' }
    /** write the first half of the reply, then drop the connection; the tail goes to the next client */
    | { kind: 'drop-mid-reply' }
    /** a non-JSON line instead of the reply */
    | { kind: 'garbage'; bytes?: string }
    /** the first half of the reply with no newline, then nothing */
    | { kind: 'partial-line' }
    /** a valid JSON reply line of about `bytes` bytes */
    | { kind: 'oversize'; bytes: number }
    /** reply with this error instead of running the command */
    | { kind: 'error'; class: string; desc: string }
    /** run the command but send nothing */
    | { kind: 'no-reply' }
  );

export type FaultKind = FaultSpec['kind'];

const PRE_KINDS: ReadonlySet<FaultKind> = new Set(['delay', 'late', 'hang', 'error']);

interface ActiveFault {
  spec: FaultSpec;
  remaining: number;
}

export interface MatchedFaults {
  delayMs: number;
  hang: boolean;
  error?: { class: string; desc: string };
  /** at most one fault acts on the reply */
  reply?: FaultSpec;
}

export class FaultSet {
  private faults: ActiveFault[] = [];

  add(spec: FaultSpec): void {
    const remaining = spec.times === undefined ? Infinity : spec.times;
    if (remaining > 0) this.faults.push({ spec, remaining });
  }

  clear(): void {
    this.faults = [];
  }

  get size(): number {
    return this.faults.length;
  }

  /** Consume the faults that apply to one request for `command`. */
  take(command: string): MatchedFaults {
    const m: MatchedFaults = { delayMs: 0, hang: false };
    for (const f of this.faults) {
      if (f.remaining <= 0 || (f.spec.command !== '*' && f.spec.command !== command)) continue;
      const s = f.spec;
      const pre = PRE_KINDS.has(s.kind);
      if (!pre && m.reply) continue;
      if (s.kind === 'delay' || s.kind === 'late') m.delayMs += s.ms;
      else if (s.kind === 'hang') m.hang = true;
      else if (s.kind === 'error') m.error = m.error ?? { class: s.class, desc: s.desc };
      else m.reply = s;
      f.remaining--;
    }
    this.faults = this.faults.filter((f) => f.remaining > 0);
    return m;
  }
}
