/**
 * How RedisStore talks to Redis: scripts by EVALSHA (EVAL when the node does not know the script),
 * every key in KEYS[] so that ioredis routes the call to the node of that slot on a Cluster;
 * errors turned into GatewayError (STORE_UNAVAILABLE for what means "cannot serve now", INTERNAL
 * for a refusal that is a bug of ours); a per-call timeout shorter than the command timeout.
 */
import { createHash } from 'node:crypto';
import { GatewayError, errors } from '../errors.js';
import { lastRedisError, type RedisClient } from './redis-connect.js';

/** What a script answers: Redis bulk strings, integers, nil, and (nested) arrays of them. */
export type Reply = string | number | null | Reply[];

/** A script's reply as ioredis hands it over (typed unknown), checked to be a Reply. */
function toReply(value: unknown): Reply {
  if (value === null || typeof value === 'string' || typeof value === 'number') return value;
  if (Array.isArray(value)) return value.map(toReply);
  throw errors.internal(`a store script answered a ${typeof value}`);
}

/** The reply of a script that answers a list. */
export function list(reply: Reply): Reply[] {
  if (!Array.isArray(reply)) throw errors.internal(`a store script answered ${String(reply)} where a list was expected`);
  return reply;
}

/** A flat field list (HGETALL) as a map. */
export function fields(flat: Reply[]): Record<string, string> {
  const m: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) m[String(flat[i])] = String(flat[i + 1]);
  return m;
}

/** JSON this store wrote, read back through the guard of what it must be. */
export function decode<T>(text: string, is: (value: unknown) => value is T, what: string): T {
  const value: unknown = JSON.parse(text);
  if (!is(value)) throw errors.internal(`the lease store holds a malformed ${what}`);
  return value;
}

/** Redis error prefixes that mean "the server cannot serve now", as opposed to a bug of ours. */
const UNAVAILABLE_PREFIXES = ['LOADING', 'BUSY', 'READONLY', 'MASTERDOWN', 'MISCONF', 'TRYAGAIN', 'CLUSTERDOWN', 'NOREPLICAS'];

export class ScriptRunner {
  private readonly shas = new Map<string, string>();

  constructor(
    private readonly redis: RedisClient,
    private readonly commandTimeoutMs: number,
  ) {}

  /** EVALSHA, falling back to EVAL when the node does not know the script (first use, or after a restart). */
  async run(script: string, keys: string[], args: Array<string | number>, timeoutMs?: number): Promise<Reply> {
    let sha = this.shas.get(script);
    if (!sha) {
      sha = createHash('sha1').update(script).digest('hex');
      this.shas.set(script, sha);
    }
    const argv = args.map((a) => (typeof a === 'number' ? String(Math.round(a)) : a));
    const call = async (): Promise<Reply> => {
      try {
        return toReply(await this.redis.evalsha(sha, keys.length, ...keys, ...argv));
      } catch (e) {
        if (!errorPrefix(e).startsWith('NOSCRIPT')) throw e;
        return toReply(await this.redis.eval(script, keys.length, ...keys, ...argv));
      }
    };
    return this.guard(() => (timeoutMs !== undefined && timeoutMs < this.commandTimeoutMs ? withTimeout(call(), timeoutMs) : call()));
  }

  async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw toGatewayError(e, lastRedisError(this.redis));
    }
  }
}

/** `p`, or STORE_UNAVAILABLE once `ms` have passed without its answer (it may still be applied). */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(errors.storeUnavailable(`lease store (Redis) did not answer within ${ms} ms`)), ms);
  });
  p.catch(() => undefined);
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

function errorPrefix(e: unknown): string {
  return e instanceof Error && e.name === 'ReplyError' ? e.message : '';
}

/** why the connection is down, as the server or the socket said it (WRONGPASS, a certificate error…) */
export function connectionWhy(lastError: string | undefined, msg?: string): string {
  return lastError && lastError !== msg ? ` (last connection error: ${lastError})` : '';
}

export function toGatewayError(e: unknown, lastConnectionError?: string): GatewayError {
  if (e instanceof GatewayError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const prefix = errorPrefix(e);
  // a ReplyError that is not an availability condition is a script or usage bug: say so loudly
  if (prefix && !UNAVAILABLE_PREFIXES.some((p) => prefix.startsWith(p))) {
    return errors.internal(`Redis refused a store command: ${msg}`, { cause: e });
  }
  return errors.storeUnavailable(`lease store (Redis) unavailable: ${msg}${connectionWhy(lastConnectionError, msg)}`, { cause: e });
}
