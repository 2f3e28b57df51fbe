/**
 * Issue 17: the Directory's rules (src/cluster/directory.ts) without Redis: what locate() answers
 * for every mix of this node's claim and the other nodes' entries, and the remote listing's order.
 */
import { describe, expect, it } from 'vitest';
import { Directory, type LocalClaim, type NodeInfo } from '../../src/cluster/directory.js';
import type { VmEntrySummary } from '../../src/cluster/summary.js';

const summary: VmEntrySummary = { source: 'config', agent: { state: 'up', since: '2026-01-01T00:00:00.000Z' }, frozen: false, channel: 'idle' };
const info = (id: string, alive: boolean, lastSeen = 1000): NodeInfo => ({ id, url: `http://${id}`, lastSeen, vmCount: 0, version: 't', alive });
const vms = (...names: string[]) => new Map(names.map((n) => [n, summary]));

function directory(local: Record<string, LocalClaim> = {}): Directory {
  return new Directory('self', () => info('self', true), (vm) => local[vm]);
}

describe('Directory.locate', () => {
  it('local, with the other LIVE nodes that publish the name as conflict', () => {
    const d = directory({ x: { kind: 'serve' } });
    expect(d.locate('x')).toEqual({ kind: 'local' });
    d.upsert(info('b', true), 'r1', vms('x'));
    d.upsert(info('a', true), 'r1', vms('x'));
    d.upsert(info('g', false), 'r1', vms('x'));
    expect(d.locate('x')).toEqual({ kind: 'local', conflict: ['a', 'b'] });
  });

  it('remote at the one live node, conflict for two, gone (the node seen last) when none is alive, unknown for nobody', () => {
    const d = directory();
    d.upsert(info('a', true), 'r', vms('one', 'two'));
    d.upsert(info('b', true), 'r', vms('two'));
    d.upsert(info('old', false, 500), 'r', vms('dead', 'one'));
    d.upsert(info('older', false, 100), 'r', vms('dead'));
    expect(d.locate('one')).toMatchObject({ kind: 'remote', node: { id: 'a' } });
    expect(d.locate('two')).toEqual({ kind: 'conflict', nodes: ['a', 'b'] });
    expect(d.locate('dead')).toMatchObject({ kind: 'gone', node: { id: 'old' } });
    expect(d.locate('nobody')).toEqual({ kind: 'unknown' });
  });

  it('a shared VM owned elsewhere: remote at its owner while alive, gone when not, even if others publish it', () => {
    const local: Record<string, LocalClaim> = { t: { kind: 'shared', owner: 'a' } };
    const d = directory(local);
    d.upsert(info('a', true), 'r', vms());
    d.upsert(info('b', true), 'r', vms('t'));
    expect(d.locate('t')).toMatchObject({ kind: 'remote', node: { id: 'a' } });
    d.upsert(info('a', false), 'r');
    expect(d.locate('t')).toMatchObject({ kind: 'gone', node: { id: 'a' } });
    // owner not known: what the others publish
    local.t = { kind: 'shared' };
    expect(d.locate('t')).toMatchObject({ kind: 'remote', node: { id: 'b' } });
  });

  it('keeps the VM map when only the heartbeat changed, drops a removed node, lists remote names in order', () => {
    const d = directory();
    d.upsert(info('b', true), 'r1', vms('vm-3', 'vm-1'));
    d.upsert(info('c', true), 'r1', vms('vm-2', 'vm-1'));
    expect([...d.after()]).toEqual(['vm-1', 'vm-2', 'vm-3']);
    expect([...d.after('vm-1')]).toEqual(['vm-2', 'vm-3']);
    expect(d.get('vm-1')).toMatchObject({ node: 'b', alive: true, conflict: ['c'] /* the others besides node */ });
    d.upsert(info('b', false), 'r1');
    expect(d.get('vm-3')).toMatchObject({ node: 'b', alive: false });
    expect(d.get('vm-1')).toMatchObject({ node: 'c', alive: true });
    expect(d.get('vm-1')?.conflict).toBeUndefined();
    d.upsert(info('c', true), 'r2', vms('vm-2'));
    d.remove('b');
    expect([...d.after()]).toEqual(['vm-2']);
    expect(d.nodes().map((n) => n.id)).toEqual(['c', 'self']);
    expect(d.record('c')?.rev).toBe('r2');
  });
});
