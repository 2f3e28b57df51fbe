/**
 * A freeze group looks its members up in the registry all at once, not one after another (an
 * API-registered VM is a store read each: a group of 64 was 128 round trips in a row before the
 * first freeze). Unknown members are all named, in the order given.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { errors, isGatewayError, type GatewayError } from '../../src/errors.js';
import { FreezeService } from '../../src/freeze/service.js';
import type { FreezeAgent, FreezeRegistry } from '../../src/freeze/types.js';
import { MemoryStore } from '../../src/store/memory.js';

const CALLER = { name: 'backup', admin: false };

/** A registry whose every lookup takes `ms`; counts the lookups running at once. */
class SlowRegistry implements FreezeRegistry {
  running = 0;
  maxRunning = 0;
  lookups = 0;
  constructor(
    private readonly known: Set<string>,
    private readonly ms: number,
  ) {}
  async require(vm: string): Promise<unknown> {
    this.lookups++;
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    await new Promise((r) => setTimeout(r, this.ms));
    this.running--;
    if (!this.known.has(vm)) throw errors.vmNotFound(vm);
    return { name: vm };
  }
}

function service(registry: FreezeRegistry, sent: string[]): FreezeService {
  const agent: FreezeAgent = {
    async call(vm, command) {
      sent.push(`${vm} ${command}`);
      return command === 'guest-fsfreeze-status' ? 'thawed' : 1;
    },
  };
  return new FreezeService({
    store: new MemoryStore(),
    agent,
    registry,
    logger: pino({ level: 'silent' }),
    settings: { defaultTtlSeconds: 60, maxTtlSeconds: 3600, maxTotalSeconds: 7200, sweepIntervalMs: 60_000 },
  });
}

describe('freeze group registry lookups', () => {
  it('a group of 16 looks its members up at once: 16 lookups running together, twice (group, then the freeze), well under 16 lookup times', async () => {
    const vms = Array.from({ length: 16 }, (_, i) => `vm${i}`);
    const registry = new SlowRegistry(new Set(vms), 20);
    const sent: string[] = [];
    const svc = service(registry, sent);
    const t0 = performance.now();
    const g = await svc.groups.create({ vms, ttlSeconds: 60 }, CALLER);
    const ms = performance.now() - t0;
    expect(g.vms.map((v) => v.frozen)).toEqual(vms.map(() => 1));
    expect(registry.maxRunning).toBe(16);
    expect(registry.lookups).toBe(32);
    // two rounds of parallel 20 ms lookups; one after another it was 32 × 20 = 640 ms
    expect(ms).toBeGreaterThanOrEqual(38);
    expect(ms).toBeLessThan(320);
    expect(sent.filter((s) => s.endsWith('guest-fsfreeze-freeze')).length).toBe(16);
    await svc.engine.stop();
  });

  it('unknown members are all named in the order given, and nothing is sent', async () => {
    const registry = new SlowRegistry(new Set(['a', 'c']), 5);
    const sent: string[] = [];
    const svc = service(registry, sent);
    let err: GatewayError | undefined;
    await svc.groups.create({ vms: ['d', 'a', 'b', 'c'] }, CALLER).catch((e: unknown) => {
      if (isGatewayError(e)) err = e;
    });
    expect(err?.code).toBe('VM_NOT_FOUND');
    expect(err?.extra).toMatchObject({ missing: ['d', 'b'] });
    expect(registry.maxRunning).toBe(4);
    expect(sent).toEqual([]);
  });
});
