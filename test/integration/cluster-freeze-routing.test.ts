/**
 * The routing agent of cluster freezes (src/cluster/remote-agent.ts) against fakes: which way each
 * location goes, what crosses the wire, and how every kind of failure of the other node maps back to
 * the GatewayError a local call gives (or NODE_UNAVAILABLE, with `sent` telling whether the command
 * may have left). The real nodes are in cluster-freeze.test.ts.
 */
import { createServer, type Server } from 'node:http';
import { describe, expect, it } from 'vitest';
import { verifyHop } from '../../src/cluster/hop.js';
import type { NodeInfo, VmLocation } from '../../src/cluster/directory.js';
import { bodyDigest, type AgentCallBody } from '../../src/cluster/agent-call.js';
import { RoutingAgent, routingRegistry } from '../../src/cluster/remote-agent.js';
import { GatewayError, errors } from '../../src/errors.js';
import type { FreezeAgent, FreezeCallOptions } from '../../src/freeze/types.js';
import { freePort } from '../e2e/freeze-gateways.js';
import { rejection, waitFor } from './freeze-fixture.js';

const SECRET = 'routing-agent-test-secret-0123456789abcdef';
/** the wait's slack over the command timeout (HOP_SLACK_MS, 5 s, in the gateway) */
const SLACK_MS = 300;
const node = (url: string, id = 'B'): NodeInfo => ({ id, url, lastSeen: Date.now(), vmCount: 1, version: 'test', alive: true });

function local(): FreezeAgent & { calls: Array<{ vm: string; command: string; opts?: FreezeCallOptions }> } {
  const calls: Array<{ vm: string; command: string; opts?: FreezeCallOptions }> = [];
  return {
    calls,
    async call(vm, command, _args, opts) {
      calls.push({ vm, command, ...(opts ? { opts } : {}) });
      if (vm === 'missing') throw errors.vmNotFound(vm);
      return 3;
    },
  };
}

function agent(at: VmLocation, l = local(), unknownGraceMs?: number): RoutingAgent {
  return new RoutingAgent({ local: l, cluster: { selfId: 'A', locate: () => at }, secret: SECRET, defaultTimeoutMs: () => 1_000, slackMs: SLACK_MS, ...(unknownGraceMs !== undefined ? { unknownGraceMs } : {}) });
}

/** a fake node answering with `answer`; records what it received */
async function fakeNode(answer: (body: AgentCallBody) => { status: number; body: unknown; headers?: Record<string, string> } | 'hang' | 'drop'): Promise<{ url: string; got: Array<{ body: AgentCallBody; verified: boolean; digestOk: boolean }>; close(): Promise<void> }> {
  const got: Array<{ body: AgentCallBody; verified: boolean; digestOk: boolean }> = [];
  const server: Server = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      const body = JSON.parse(text) as AgentCallBody;
      const url = req.url ?? '';
      got.push({ body, verified: verifyHop(SECRET, req.headers, 'POST', url, Date.now(), 'agent-call') !== undefined, digestOk: url.endsWith(`digest=${bodyDigest(text)}`) });
      const a = answer(body);
      if (a === 'hang') return;
      if (a === 'drop') {
        req.socket.destroy();
        return;
      }
      res.writeHead(a.status, { 'content-type': 'application/json', ...(a.headers ?? {}) });
      res.end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    got,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('RoutingAgent', () => {
  it('local: the AgentService, without the fence; gone and conflict: NODE_UNAVAILABLE, nothing sent', async () => {
    const l = local();
    const fence = { session: 'group:g', leaseId: 'l1', epoch: 'e' };
    expect(await agent({ kind: 'local' }, l).call('a1', 'guest-fsfreeze-freeze', undefined, { priority: 'freeze', fence })).toBe(3);
    expect(l.calls).toEqual([{ vm: 'a1', command: 'guest-fsfreeze-freeze', opts: { priority: 'freeze' } }]);
    const gone = await rejection(agent({ kind: 'gone', node: node('http://127.0.0.1:1') }, l).call('b1', 'guest-fsfreeze-thaw', undefined, { fence }));
    expect([gone.code, gone.status, gone.extra]).toEqual(['NODE_UNAVAILABLE', 503, { node: 'B', sent: false }]);
    const conflict = await rejection(agent({ kind: 'conflict', nodes: ['B', 'C'] }, l).call('b1', 'guest-fsfreeze-status'));
    expect([conflict.code, conflict.extra?.nodes, conflict.extra?.sent]).toEqual(['NODE_UNAVAILABLE', ['B', 'C'], false]);
    expect(l.calls).toHaveLength(1);
  });

  it('unknown: local; a leased thaw of a VM nobody serves is NODE_UNAVAILABLE (kept and retried) for the grace time, then VM_NOT_FOUND; a forced one at once', async () => {
    const a = agent({ kind: 'unknown' }, local(), 150);
    const fence = { session: 'vm:missing', leaseId: 'l', epoch: 'e' };
    const t0 = Date.now();
    const leased = await rejection(a.call('missing', 'guest-fsfreeze-thaw', undefined, { fence }));
    expect([leased.code, leased.extra?.sent]).toEqual(['NODE_UNAVAILABLE', false]);
    expect((await rejection(a.call('missing', 'guest-fsfreeze-thaw', undefined, { fence }))).code).toBe('NODE_UNAVAILABLE');
    await waitFor(async () => (await rejection(a.call('missing', 'guest-fsfreeze-thaw', undefined, { fence }))).code === 'VM_NOT_FOUND', 2_000, 'deregistered');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect((await rejection(a.call('missing', 'guest-fsfreeze-thaw', undefined, { fence: { forced: true } }))).code).toBe('VM_NOT_FOUND');
    expect((await rejection(a.call('missing', 'guest-fsfreeze-status'))).code).toBe('VM_NOT_FOUND');
  });

  it('remote: a signed call whose digest binds the body, carrying the fence, the timeout and the actor; the result comes back', async () => {
    const n = await fakeNode(() => ({ status: 200, body: { result: 2 } }));
    try {
      const fence = { session: 'group:g', leaseId: 'l1', epoch: 'e', rollback: true };
      expect(await agent({ kind: 'remote', node: node(n.url) }).call('b1', 'guest-fsfreeze-thaw', undefined, { priority: 'thaw', timeoutMs: 700, actor: 'gateway', fence })).toBe(2);
      expect(n.got).toEqual([
        { verified: true, digestOk: true, body: { command: 'guest-fsfreeze-thaw', timeoutMs: 700, priority: 'thaw', fence, by: 'gateway', actor: 'gateway' } },
      ]);
      // only the freeze family crosses nodes
      const exec = await rejection(agent({ kind: 'remote', node: node(n.url) }).call('b1', 'guest-get-fsinfo'));
      expect(exec.code).toBe('COMMAND_NOT_SUPPORTED');
      expect(n.got).toHaveLength(1);
    } finally {
      await n.close();
    }
  });

  it("the other node's problem comes back as the same GatewayError: code, status, detail, qga, members, Retry-After", async () => {
    const n = await fakeNode(() => ({
      status: 429,
      headers: { 'retry-after': '1' },
      body: { type: 'urn:qga-gateway:problem:QUEUE_FULL', title: 'VM request queue is full', status: 429, code: 'QUEUE_FULL', detail: 'queue of b1 is full (8)', vm: 'b1', limit: 8 },
    }));
    const m = await fakeNode(() => ({
      status: 422,
      body: { type: 'x', title: 't', status: 422, code: 'AGENT_ERROR', detail: 'the agent said no', vm: 'b1', command: 'guest-fsfreeze-freeze', qga: { class: 'GenericError', desc: 'no' } },
    }));
    try {
      const q = await rejection(agent({ kind: 'remote', node: node(n.url) }).call('b1', 'guest-fsfreeze-status'));
      expect(q).toBeInstanceOf(GatewayError);
      expect([q.code, q.status, q.message, q.vm, q.extra, q.retryAfter]).toEqual(['QUEUE_FULL', 429, 'queue of b1 is full (8)', 'b1', { limit: 8 }, 1]);
      const e = await rejection(agent({ kind: 'remote', node: node(m.url) }).call('b1', 'guest-fsfreeze-freeze', undefined, { fence: { session: 's', leaseId: 'l', epoch: 'e' } }));
      expect([e.code, e.status, e.message, e.command, e.qga]).toEqual(['AGENT_ERROR', 422, 'the agent said no', 'guest-fsfreeze-freeze', { class: 'GenericError', desc: 'no' }]);
    } finally {
      await n.close();
      await m.close();
    }
  });

  it('a node that refuses the connection: sent false; one that drops it mid-call: sent true; one that never answers: AGENT_TIMEOUT within the bound', async () => {
    const closed = await freePort(); // nobody listens there
    const refused = await rejection(agent({ kind: 'remote', node: node(`http://127.0.0.1:${closed}`) }).call('b1', 'guest-fsfreeze-freeze'));
    expect([refused.code, refused.extra?.sent]).toEqual(['NODE_UNAVAILABLE', false]);
    const dropping = await fakeNode(() => 'drop');
    const hanging = await fakeNode(() => 'hang');
    try {
      const dropped = await rejection(agent({ kind: 'remote', node: node(dropping.url) }).call('b1', 'guest-fsfreeze-freeze'));
      expect([dropped.code, dropped.extra?.sent]).toEqual(['NODE_UNAVAILABLE', true]);
      const t0 = Date.now();
      // the slack on top of the command's 200 ms
      const late = await rejection(agent({ kind: 'remote', node: node(hanging.url) }).call('b1', 'guest-fsfreeze-thaw', undefined, { timeoutMs: 200 }));
      const took = Date.now() - t0;
      expect([late.code, late.command]).toEqual(['AGENT_TIMEOUT', 'guest-fsfreeze-thaw']);
      expect(took).toBeGreaterThanOrEqual(200 + SLACK_MS - 50);
      expect(took).toBeLessThan(200 + SLACK_MS + 1_500);
      // the caller going away ends the call at once
      const ac = new AbortController();
      const p = rejection(agent({ kind: 'remote', node: node(hanging.url) }).call('b1', 'guest-fsfreeze-status', undefined, { signal: ac.signal }).catch((e: unknown) => {
        throw e instanceof GatewayError ? e : errors.wrap(e);
      }));
      const t1 = Date.now();
      ac.abort(errors.agentUnavailable('b1', 'caller went away'));
      expect((await p).code).toBe('AGENT_UNAVAILABLE');
      expect(Date.now() - t1).toBeLessThan(500);
    } finally {
      await dropping.close();
      await hanging.close();
    }
  });

  it('the routing registry: a VM another live node serves exists; a gone one is NODE_UNAVAILABLE; the rest is the local registry', async () => {
    const at: Record<string, VmLocation> = { b1: { kind: 'remote', node: node('http://x') }, c1: { kind: 'gone', node: node('http://y', 'C') } };
    const reg = routingRegistry({ require: async (vm) => (vm === 'a1' ? {} : Promise.reject(errors.vmNotFound(vm))) }, () => ({ selfId: 'A', locate: (vm) => at[vm] ?? { kind: 'unknown' } }));
    await expect(reg.require('b1')).resolves.toBeDefined();
    await expect(reg.require('a1')).resolves.toBeDefined();
    expect([(await rejection(reg.require('c1'))).code, (await rejection(reg.require('c1'))).extra?.node]).toEqual(['NODE_UNAVAILABLE', 'C']);
    expect((await rejection(reg.require('zz'))).code).toBe('VM_NOT_FOUND');
  });
});
