/**
 * cluster/liveness.ts on its own, with the times given: a node's TTL counts again from Redis's
 * recovery, only for a node within its TTL when the outage began; a node missing from the member
 * index is kept, gone, then forgotten; transitions are told once. The same rules run end to end in
 * test/integration/cluster-*.test.ts (Redis stopped and restarted under three gateways).
 */
import { describe, expect, it } from 'vitest';
import { Liveness } from '../../src/cluster/liveness.js';
import type { NodeInfo } from '../../src/cluster/directory.js';
import { RETENTION_MS } from '../../src/cluster/membership.js';

const TTL = 1_500;
const node = (alive: boolean, id = 'b'): NodeInfo => ({ id, url: `http://${id}:1`, alive, lastSeen: 0, vmCount: 1, version: 't' });
const quiet = { info: () => undefined, warn: () => undefined };

describe('cluster liveness', () => {
  it('a node read alive before an outage is held alive for one TTL from the recovery, not across the outage; not after', () => {
    const l = new Liveness(TTL, quiet);
    expect(l.read(node(true), false, 0).alive).toBe(true);
    l.outage(1_000);
    l.recovered(5_000);
    // its key expired during the outage: it could not heartbeat
    expect(l.read(node(false), true, 5_100).alive).toBe(true);
    expect(l.read(node(false), true, 6_500).alive).toBe(true);
    expect(l.read(node(false), true, 6_501).alive).toBe(false);
    // held only when this node took it for alive
    expect(l.read(node(false), false, 5_100).alive).toBe(false);
  });

  it('a node already past its TTL when the outage began is not held by the recovery (Redis flapping does not keep a dead node alive)', () => {
    const l = new Liveness(TTL, quiet);
    l.read(node(true), false, 0);
    l.outage(1_501);
    l.recovered(2_000);
    expect(l.read(node(false), true, 2_100).alive).toBe(false);
    // heard within its TTL of the outage: held
    const k = new Liveness(TTL, quiet);
    k.read(node(true), false, 0);
    k.outage(1_500);
    k.recovered(2_000);
    expect(k.read(node(false), true, 2_100).alive).toBe(true);
  });

  it('a node missing from the member index: kept within its TTL, gone after it (if it was alive), forgotten after the retention', () => {
    const l = new Liveness(TTL, quiet);
    l.read(node(true), false, 0);
    expect(l.missing('b', true, 1_500)).toBe('keep');
    expect(l.missing('b', true, 1_501)).toBe('gone');
    expect(l.missing('b', false, 1_501)).toBe('keep');
    expect(l.missing('b', false, RETENTION_MS + 1)).toBe('forget');
    // after an outage, its TTL counts from the recovery
    l.outage(1_000);
    l.recovered(10_000);
    expect(l.missing('b', true, 11_500)).toBe('keep');
    expect(l.missing('b', true, 11_501)).toBe('gone');
    // never heard of: forgotten at once
    expect(new Liveness(TTL, quiet).missing('x', true, 0)).toBe('forget');
  });

  it('found, gone and back are told once each; gone listeners hear only a node known alive that went', () => {
    const lines: string[] = [];
    const log = { info: (_o: object, m: string) => void lines.push(m), warn: (_o: object, m: string) => void lines.push(m) };
    const l = new Liveness(TTL, log);
    const gone: string[] = [];
    const back: string[] = [];
    const off = l.onGone((n) => gone.push(n.id));
    l.onBack((n) => back.push(n.id));
    l.note(node(false, 'never')); // first seen dead: nothing to say
    l.note(node(true));
    l.note(node(true));
    l.note(node(false));
    l.note(node(false));
    l.note(node(true));
    expect(lines).toEqual(['cluster: node found', 'cluster: node stopped heartbeating; its VMs answer 503 NODE_UNAVAILABLE', 'cluster: node is back']);
    expect(gone).toEqual(['b']);
    // back listeners hear a node that was gone heartbeat again, not one found for the first time
    expect(back).toEqual(['b']);
    off();
    l.note(node(false));
    expect(gone).toEqual(['b']);
    // forgotten: found again, as new
    l.forget('b');
    l.note(node(true));
    expect(lines.at(-1)).toBe('cluster: node found');
  });
});
