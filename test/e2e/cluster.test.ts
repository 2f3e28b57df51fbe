/**
 * Cluster mode from the outside (issue 17 items 6 and "Checked by"): three gateway PROCESSES (the
 * real `serve` command) on one real redis-server, each with its own simulated VMs:
 *   a: a1, dup     b: b1, dup     c: c1, c2        (dup: the same VM name on two nodes)
 * Forwarding of every route kind from one node to another (JSON read and write, problems, the
 * file stream both ways with Range, exec wait), the principal carried to the serving node,
 * GET /v1/nodes and the cluster-wide GET /v1/vms, a VM name conflict, a freeze through one node
 * and its thaw through another (and a group spanning nodes), a node SIGKILLed and started again
 * (503 NODE_UNAVAILABLE timing measured at both ends), a Redis restart, and — when the rig is
 * present — the real VM served by one node and read through another.
 *
 * Default run: one cycle of each, heartbeat TTL 1.5 s. QGA_CLUSTER_FULL=1: five kill/restart
 * cycles, three Redis restarts, a 64 MiB file. The measured figures are printed ([cluster] lines).
 * Freeze only ever reaches the SIMULATED VMs, never a real qemu-ga of this machine.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadHopSecret, signHop, type HopPrincipal } from '../../src/cluster/hop.js';
import { ask, bearer, CLUSTER_TOKENS, startCluster, until, type Answer, type ClusterNode, type TestCluster } from '../helpers/cluster.js';
import { announceVmSkip, startVm, vmAvailable, type RunningVm } from '../helpers/vm.js';
import { pseudoRandom } from '../integration/files-support.js';

const FULL = process.env.QGA_CLUSTER_FULL === '1';
const CYCLES = FULL ? 5 : 1;
const REDIS_CYCLES = FULL ? 3 : 1;
const FILE_BYTES = (FULL ? 64 : 3) * 1024 * 1024;
const TTL_MS = 1_500;
const INTERVAL_MS = 500;
const FORWARD_MS = 3_000;
/** the headers bound of a forwarded ping: max(cluster.forwardTimeoutMs, agent.timeouts.fast) */
const PING_BOUND_MS = Math.max(FORWARD_MS, 5_000);
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
const say = (line: string): void => void process.stdout.write(`[cluster] ${line}\n`);

let cl: TestCluster;
let a: ClusterNode;
let b: ClusterNode;
let c: ClusterNode;

/** the node serving tcp1 as c's forwarding shows it (undefined: not served right now) */
async function tcpOwner(): Promise<string | undefined> {
  const r = await ask(c, 'GET', '/v1/vms/tcp1/ping');
  const by = r.headers.get('x-qga-node');
  return r.status === 200 && (by === 'a' || by === 'b') ? by : undefined;
}

/** the nodes' list as a node answers it */
async function nodesVia(n: ClusterNode): Promise<Array<Record<string, unknown>>> {
  const r = await ask(n, 'GET', '/v1/nodes');
  if (r.status !== 200) return [];
  return (r.json?.items ?? []) as Array<Record<string, unknown>>;
}
const aliveIds = async (n: ClusterNode): Promise<string[]> =>
  (await nodesVia(n))
    .filter((x) => x.alive !== false)
    .map((x) => String(x.id))
    .sort();
/** every node sees every node alive */
const converged = async (): Promise<boolean> => {
  for (const n of cl.nodes) if ((await aliveIds(n)).join() !== 'a,b,c') return false;
  return true;
};

/** a ping's round trip differs from one ping to the next: it is compared as a number, the rest exactly */
function stable(json: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!json || typeof json.rttMs !== 'number') return json;
  const { rttMs: _rtt, ...rest } = json;
  return rest;
}

function expectSame(via: Answer, direct: Answer, what: string): void {
  expect(via.status, `${what}: ${via.text.slice(0, 300)}`).toBe(direct.status);
  expect(via.headers.get('content-type'), what).toBe(direct.headers.get('content-type'));
  if (direct.json) {
    expect(stable(via.json), what).toEqual(stable(direct.json));
    expect(typeof via.json?.rttMs, what).toBe(typeof direct.json.rttMs);
  } else expect(via.text, what).toBe(direct.text);
}

const HOME: Record<string, string> = { a1: 'a', b1: 'b', c1: 'c', c2: 'c' };
/** the first node → VM ping (every VM but dup) that is not answered 200 by the VM's node, described; undefined when all are */
async function firstMiss(): Promise<string | undefined> {
  for (const n of cl.nodes) {
    for (const [vm, home] of Object.entries(HOME)) {
      const r = await ask(n, 'GET', `/v1/vms/${vm}/ping`);
      const by = r.headers.get('x-qga-node') ?? n.id;
      if (r.status !== 200 || by !== home) return `${n.id} → ${vm}: ${r.status} ${String(r.json?.code ?? '')} from ${by}: ${String(r.json?.detail ?? '').slice(0, 300)}`;
    }
  }
  return undefined;
}
const everyRoute = async (): Promise<boolean> => (await firstMiss()) === undefined;

/** A GET whose body is read as it comes: `started` once bytes arrived, `ended` when the response ended or was cut. */
function download(url: string): { started: Promise<void>; ended: Promise<{ status: number; bytes: number; complete: boolean }> } {
  let onStart: () => void = () => undefined;
  const started = new Promise<void>((r) => (onStart = r));
  const ended = new Promise<{ status: number; bytes: number; complete: boolean }>((resolve) => {
    const req = http.get(url, { headers: bearer(CLUSTER_TOKENS.ops) }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
        onStart();
      });
      res.on('close', () => resolve({ status: res.statusCode ?? 0, bytes, complete: res.complete }));
    });
    req.on('error', () => resolve({ status: 0, bytes: 0, complete: false }));
  });
  return { started, ended };
}

function expectProblem(r: Answer, status: number, code: string): void {
  expect(r.status, r.text.slice(0, 400)).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(r.json?.code).toBe(code);
}

beforeAll(async () => {
  cl = await startCluster({
    heartbeatTtlMs: TTL_MS,
    heartbeatIntervalMs: INTERVAL_MS,
    nodes: [
      { id: 'a', vms: ['a1', 'dup'] },
      { id: 'b', vms: ['b1', 'dup'] },
      { id: 'c', vms: ['c1', 'c2'] },
    ],
    // one simulated VM on TCP that a and b can both reach: served by whichever holds its ownership lease
    tcpVms: [{ name: 'tcp1', nodes: ['a', 'b'] }],
    // a forwarded ping then waits at most max(this, its agent timeout class: fast, 5 s) for its answer
    config: { cluster: { forwardTimeoutMs: FORWARD_MS } },
  });
  [a, b, c] = cl.nodes;
  const ms = await until(converged, 10_000, 'every node to list a, b and c alive');
  await until(async () => (await tcpOwner()) !== undefined, 10_000, 'a or b to serve tcp1');
  say(`3 nodes ready (start ${cl.nodes.map((n) => `${n.id} ${n.startMs.toFixed(0)} ms`).join(', ')}), converged ${ms.toFixed(0)} ms later`);
}, 120_000);

afterAll(async () => {
  await cl?.stop();
});

describe('cluster of three gateway processes on one Redis', { timeout: 60_000 }, () => {
  it('GET /v1/nodes: every node lists a, b, c with URL, VM count, version and lastSeen', async () => {
    const owner = await tcpOwner();
    for (const via of cl.nodes) {
      const list = await nodesVia(via);
      expect(list.map((n) => n.id).sort()).toEqual(['a', 'b', 'c']);
      for (const n of list) {
        const node = cl.node(String(n.id));
        expect(n).toMatchObject({ url: node.url, vmCount: node.id === owner ? 3 : 2, version: VERSION, alive: true, self: node === via });
        expect(n.lastSeen).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
        const seen = Date.parse(String(n.lastSeen));
        expect(Date.now() - seen).toBeGreaterThanOrEqual(-1_000);
        expect(Date.now() - seen).toBeLessThanOrEqual(TTL_MS);
      }
    }
  });

  it('GET /v1/vms through any node: the whole cluster with node, in pages', async () => {
    const owner = await tcpOwner();
    for (const via of cl.nodes) {
      const r = await ask(via, 'GET', '/v1/vms?limit=1000');
      expect(r.status).toBe(200);
      const items = r.json?.items as Array<Record<string, unknown>>;
      const owners = Object.fromEntries(items.filter((v) => v.name !== 'dup').map((v) => [v.name, v.node]));
      expect(owners).toEqual({ a1: 'a', b1: 'b', c1: 'c', c2: 'c', tcp1: owner });
      // paging walks the same list
      const seen: Array<Record<string, unknown>> = [];
      let cursor: string | null = null;
      for (let page = 0; page < 10; page++) {
        const p = await ask(via, 'GET', `/v1/vms?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        expect(p.status).toBe(200);
        const got = p.json?.items as Array<Record<string, unknown>>;
        expect(got.length).toBeLessThanOrEqual(2);
        seen.push(...got);
        cursor = (p.json?.next as string | null) ?? null;
        if (!cursor) break;
      }
      expect(cursor).toBeNull();
      expect(seen.map((v) => `${v.name}@${v.node}`)).toEqual(items.map((v) => `${v.name}@${v.node}`));
      // filters apply to the other nodes' VMs too
      const onC = await ask(via, 'GET', '/v1/vms?label=host=c');
      expect(onC.status).toBe(200);
      expect((onC.json?.items as Array<Record<string, unknown>>).map((v) => `${v.name}@${v.node}`)).toEqual(['c1@c', 'c2@c']);
    }
  });

  it('JSON reads and problems forwarded: the same answer as asked directly, with X-Qga-Node', async () => {
    const paths = ['/ping', '/agent', '/hostname', '/os', '/timezone', '/vcpus', '/memory/block-info', '/exec/424242'];
    for (const p of paths) {
      const direct = await ask(c, 'GET', `/v1/vms/c1${p}`);
      for (const via of [a, b]) {
        const fwd = await ask(via, 'GET', `/v1/vms/c1${p}`);
        expectSame(fwd, direct, `${via.id} → c: GET ${p}`);
        expect(fwd.headers.get('x-qga-node'), p).toBe('c');
      }
    }
    expectProblem(await ask(a, 'GET', '/v1/vms/c1/exec/424242'), 404, 'NOT_FOUND');
    // the VM object through another node names its node; one request id on both nodes
    const obj = await ask(a, 'GET', '/v1/vms/c1', { headers: { 'x-request-id': 'cluster-e2e-rid-1' } });
    expect(obj.status).toBe(200);
    expect(obj.json).toMatchObject({ name: 'c1', node: 'c' });
    expect(obj.headers.get('x-qga-node')).toBe('c');
    expect(obj.headers.get('x-request-id')).toBe('cluster-e2e-rid-1');
    await until(() => c.log().includes('"requestId":"cluster-e2e-rid-1"'), 5_000, "c's log line of the forwarded request");
    // a body the schema refuses: the same 400 problem either way
    const bad400 = await ask(a, 'POST', '/v1/vms/c1/exec', { body: { path: 42 } });
    expectSame(bad400, await ask(c, 'POST', '/v1/vms/c1/exec', { body: { path: 42 } }), 'POST exec 400');
    expectProblem(bad400, 400, 'VALIDATION_FAILED');
    // a VM nobody serves stays the entry node's own 404
    expectProblem(await ask(a, 'GET', '/v1/vms/nope/ping'), 404, 'VM_NOT_FOUND');
  });

  it('JSON write and exec wait forwarded: a → c, the result readable on c', async () => {
    const started = await ask(a, 'POST', '/v1/vms/c1/exec', { body: { path: '/bin/echo', arg: ['from', 'a'], 'capture-output': true } });
    expect(started.status, started.text).toBe(202);
    expect(started.headers.get('x-qga-node')).toBe('c');
    const pid = started.json?.pid as number;
    const onC = await until(async () => (await ask(c, 'GET', `/v1/vms/c1/exec/${pid}`)).json?.exited === true, 5_000, 'the exec to finish on c');
    expect(onC).toBeGreaterThanOrEqual(0);
    const st = await ask(b, 'GET', `/v1/vms/c1/exec/${pid}`);
    expect(st.status).toBe(200);
    expect(st.json).toMatchObject({ pid, exited: true, exitcode: 0, outText: 'from a\n' });

    const waited = await ask(b, 'POST', '/v1/vms/c2/exec', { body: { path: '/bin/echo', arg: ['waited'], 'capture-output': true, wait: 10 } });
    expect(waited.status, waited.text).toBe(200);
    expect(waited.headers.get('x-qga-node')).toBe('c');
    expect(waited.json).toMatchObject({ exited: true, exitcode: 0, outText: 'waited\n' });
  });

  it('file stream forwarded both ways: upload through a, Range download through b, same bytes and headers as on c', async () => {
    const data = pseudoRandom(FILE_BYTES, 17);
    const url = `/v1/vms/c1/files/content?path=${encodeURIComponent('/tmp/cluster.bin')}`;
    const up = await ask(a, 'PUT', url, { raw: data, timeoutMs: 120_000 });
    expect(up.status, up.text).toBe(200);
    expect(up.headers.get('x-qga-node')).toBe('c');
    const whole = await ask(b, 'GET', url, { timeoutMs: 120_000 });
    expect(whole.status).toBe(200);
    expect(whole.headers.get('x-qga-node')).toBe('c');
    expect(whole.headers.get('content-length')).toBe(String(FILE_BYTES));
    expect(sha(Buffer.from(whole.text, 'latin1'))).toBe(sha(data));
    for (const range of ['bytes=1000-1999', `bytes=${FILE_BYTES - 4096}-`, 'bytes=-10']) {
      const direct = await ask(c, 'GET', url, { headers: { range } });
      const fwd = await ask(a, 'GET', url, { headers: { range } });
      expect(fwd.status, range).toBe(206);
      for (const h of ['content-range', 'content-length', 'content-type', 'accept-ranges']) expect(fwd.headers.get(h), `${range} ${h}`).toBe(direct.headers.get(h));
      expect(fwd.text, range).toBe(direct.text);
    }
    expect(Buffer.from((await ask(a, 'GET', url, { headers: { range: 'bytes=1000-1999' } })).text, 'latin1')).toEqual(data.subarray(1000, 2000));
    const head = await ask(b, 'HEAD', url);
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(FILE_BYTES));
    expectProblem(await ask(a, 'GET', url, { headers: { range: `bytes=${FILE_BYTES + 10}-` } }), 416, 'RANGE_NOT_SATISFIABLE');
  });

  it('the entry node enforces the token: scopes and VM globs refused there (403) before any forwarding; no token or a forged hop is 401', async () => {
    const url = `/v1/vms/c1/files/content?path=${encodeURIComponent('/tmp/reader.bin')}`;
    expectProblem(await ask(a, 'PUT', url, { raw: Buffer.from('x'), token: CLUSTER_TOKENS.reader }), 403, 'FORBIDDEN');
    expect((await ask(a, 'GET', '/v1/vms/c1/ping', { token: CLUSTER_TOKENS.reader })).status).toBe(200);
    expectProblem(await ask(b, 'GET', '/v1/vms/c1/ping', { token: CLUSTER_TOKENS.aOnly }), 403, 'FORBIDDEN');
    const mine = await ask(b, 'GET', '/v1/vms/a1/ping', { token: CLUSTER_TOKENS.aOnly });
    expect(mine.status).toBe(200);
    expect(mine.headers.get('x-qga-node')).toBe('a');
    expectProblem(await ask(a, 'GET', '/v1/vms/c1/ping', { token: 'no-such-token-0123456789abcdef' }), 401, 'UNAUTHENTICATED');
    // a client posing as a node (hop headers without the secret's signature) gets nothing of it
    const forged = {
      'x-qga-hop': 'a',
      'x-qga-principal': Buffer.from(JSON.stringify({ name: 'ops', scopes: ['read', 'write', 'admin'] })).toString('base64url'),
      'x-qga-signature': `${Date.now()}.${Buffer.alloc(32).toString('base64url')}`,
    };
    expectProblem(await ask(c, 'PUT', url, { raw: Buffer.from('x'), token: CLUSTER_TOKENS.reader, headers: forged }), 401, 'UNAUTHENTICATED');
    expectProblem(await ask(a, 'PUT', url, { raw: Buffer.from('x'), token: CLUSTER_TOKENS.reader, headers: forged }), 401, 'UNAUTHENTICATED');
  });

  it('the serving node enforces the carried principal: a hop signed with the shared secret, carrying less than the bearer token next to it, is refused at c (403, X-Qga-Node c)', async () => {
    const secret = loadHopSecret(cl.secretFile);
    /** straight to c, as a node would forward it: hop-signed, with the ops bearer token (which c must ignore) */
    const hopTo = (method: string, url: string, principal: HopPrincipal, body?: unknown) =>
      ask(c, method, url, { ...(body !== undefined ? { body } : {}), headers: signHop(secret, { method, url, entryNode: 'a', principal }) });
    const readWrite: HopPrincipal = { name: 'rw', scopes: ['read', 'write'] };
    const rawPing = '/v1/vms/c1/qga/guest-ping';
    const forced = '/v1/vms/c1/fsfreeze?force=true';
    for (const [method, url, body] of [
      ['POST', rawPing, {}],
      ['DELETE', forced, undefined],
    ] as const) {
      const r = await hopTo(method, url, readWrite, body);
      expectProblem(r, 403, 'FORBIDDEN');
      expect(r.headers.get('x-qga-node'), url).toBe('c');
    }
    // VM globs of the carried principal: a* does not reach c1
    const globbed = await hopTo('GET', '/v1/vms/c1/ping', { name: 'a-only', scopes: ['read'], vms: ['a*'] });
    expectProblem(globbed, 403, 'FORBIDDEN');
    expect(globbed.headers.get('x-qga-node')).toBe('c');
    // the same signed calls with admin carried pass: the 403s came from the carried principal
    const ok = await hopTo('POST', rawPing, { name: 'root', scopes: ['read', 'write', 'admin'] }, {});
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ return: {} });
    expect(ok.headers.get('x-qga-node')).toBe('c');
    expect((await hopTo('GET', '/v1/vms/c1/ping', { name: 'c-only', scopes: ['read'], vms: ['c*'] })).status).toBe(200);
  });

  it('VM name conflict: both nodes report dup with conflict, a third node answers 503 naming them', async () => {
    for (const [via, other] of [
      [a, 'b'],
      [b, 'a'],
    ] as const) {
      const r = await ask(via, 'GET', '/v1/vms/dup');
      expect(r.status, r.text).toBe(200);
      expect(r.json?.node).toBe(via.id);
      expect(r.json?.conflict).toEqual([other]);
      // neither drops the traffic: each still serves its own dup
      expect((await ask(via, 'GET', '/v1/vms/dup/ping')).status).toBe(200);
    }
    const third = await ask(c, 'GET', '/v1/vms/dup/ping');
    expectProblem(third, 503, 'NODE_UNAVAILABLE');
    expect(third.json?.detail).toMatch(/\ba\b.*\bb\b|\bb\b.*\ba\b/);
    // several nodes: `nodes`, and no `node` (it held their ids joined by a comma, h12 F8)
    expect([...((third.json?.nodes as string[] | undefined) ?? [])].sort()).toEqual(['a', 'b']);
    expect(third.json).not.toHaveProperty('node');
    // the VM object too: only a gone node's VM is answered from the directory
    expectProblem(await ask(c, 'GET', '/v1/vms/dup'), 503, 'NODE_UNAVAILABLE');
    // in every list `conflict` is the other live nodes besides the item's `node`: a and b list their own,
    // c lists the first (a) with the other (b)
    for (const [via, node, conflict] of [
      [a, 'a', ['b']],
      [b, 'b', ['a']],
      [c, 'a', ['b']],
    ] as const) {
      const r = await ask(via, 'GET', '/v1/vms?limit=1000');
      const dup = (r.json?.items as Array<Record<string, unknown>>).filter((v) => v.name === 'dup');
      expect(dup.map((v) => [v.node, v.conflict]), `via ${via.id}`).toEqual([[node, conflict]]);
    }
  });

  it('freeze through a, status and thaw through b with the lease (simulated VM on c)', async () => {
    const vm = c.vm.c2;
    const fr = await ask(a, 'POST', '/v1/vms/c2/fsfreeze', { body: { ttlSeconds: 30 } });
    expect(fr.status, fr.text).toBe(201);
    expect(fr.headers.get('x-qga-node')).toBe('c');
    expect(vm.state.frozen).toBe(true);
    const leaseId = String(fr.json?.leaseId);
    const st = await ask(b, 'GET', '/v1/vms/c2/fsfreeze');
    expect(st.status).toBe(200);
    expect(st.json).toMatchObject({ status: 'frozen', lease: { leaseId, owner: 'ops' } });
    expectProblem(await ask(b, 'DELETE', '/v1/vms/c2/fsfreeze?leaseId=not-the-lease'), 409, 'LEASE_CONFLICT');
    expect(vm.state.frozen).toBe(true);
    const th = await ask(b, 'DELETE', `/v1/vms/c2/fsfreeze?leaseId=${encodeURIComponent(leaseId)}`);
    expect(th.status, th.text).toBe(200);
    expect(th.json).toMatchObject({ vm: 'c2' });
    expect(vm.state.frozen).toBe(false);
  });

  it('a freeze group spanning nodes: frozen through b, thawed through a', async () => {
    const g = await ask(b, 'POST', '/v1/freeze-groups', { body: { vms: ['a1', 'c1'], ttlSeconds: 30 } });
    expect(g.status, g.text).toBe(201);
    expect(a.vm.a1.state.frozen).toBe(true);
    expect(c.vm.c1.state.frozen).toBe(true);
    const id = String(g.json?.id);
    const leaseId = String(g.json?.leaseId);
    const got = await ask(c, 'GET', `/v1/freeze-groups/${encodeURIComponent(id)}`);
    expect(got.status, got.text).toBe(200);
    // c asked each member's node now (a1 on a, c1 on itself); the lease as b took it
    expect(got.json).toEqual({
      id,
      lease: { leaseId, owner: 'ops', fence: g.json?.fence, createdAt: g.json?.createdAt, expiresAt: g.json?.expiresAt, hardDeadline: g.json?.hardDeadline, expired: false, group: id },
      vms: [
        { vm: 'a1', status: 'frozen' },
        { vm: 'c1', status: 'frozen' },
      ],
    });
    const del = await ask(a, 'DELETE', `/v1/freeze-groups/${encodeURIComponent(id)}?leaseId=${encodeURIComponent(leaseId)}`);
    expect(del.status, del.text).toBe(200);
    expect(a.vm.a1.state.frozen).toBe(false);
    expect(c.vm.c1.state.frozen).toBe(false);
  });

  it('a hung node (SIGSTOP): a forwarded request waiting on it answers 503 once it is declared gone, not at its own time bound', async () => {
    // a long poll of c1 through a: bounded by forwardTimeoutMs + its 10 s wait (13 s)
    const t0 = performance.now();
    const waiting = ask(a, 'GET', '/v1/vms/c1/wait?for=ip&family=ipv6&scope=global&timeout=10');
    await new Promise((r) => setTimeout(r, 300));
    process.kill(c.pid, 'SIGSTOP');
    try {
      const r = await waiting;
      const ms = performance.now() - t0;
      say(`a long poll through a to c, c stopped: ${r.status} ${String(r.json?.code)} after ${ms.toFixed(0)} ms (c gone after its TTL ${TTL_MS} ms)`);
      expectProblem(r, 503, 'NODE_UNAVAILABLE');
      expect(String(r.json?.detail)).toMatch(/stopped heartbeating while this request waited/);
      // about the TTL after the stop (plus a read interval and slack), far from the 13 s bound
      expect(ms).toBeLessThan(TTL_MS + 2 * INTERVAL_MS + 4_000);
    } finally {
      process.kill(c.pid, 'SIGCONT');
      await until(converged, 15_000, 'c back for every node');
    }
  });

  it(`node death (SIGKILL) and return, ${CYCLES} cycle(s): 502/503 before the TTL, 503 NODE_UNAVAILABLE at once after, routing resumes`, { timeout: 60_000 + CYCLES * 20_000 }, async () => {
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      // a forwarded request in flight when its node dies ends in 502/503, never hangs
      // before: c1, once used, is up in a's cluster-wide list (c publishes its agents' state with its
      // heartbeat), as c published it in a heartbeat made after this cycle began (after the group
      // thaw above): the checks after the kill read what c published last, which must not be a
      // heartbeat from the group's freeze that a had not read yet
      const cycleStart = Date.now();
      expect((await ask(a, 'GET', '/v1/vms/c1/ping')).status).toBe(200);
      await until(async () => {
        const cSeen = Date.parse(String((await nodesVia(a)).find((n) => n.id === 'c')?.lastSeen));
        if (!(cSeen > cycleStart)) return false;
        const up = await ask(a, 'GET', '/v1/vms?state=up');
        return (up.json?.items as Array<Record<string, unknown>>).some((v) => v.name === 'c1' && v.node === 'c');
      }, 2 * INTERVAL_MS + 2_000, "c1 listed up by a, from a heartbeat of c made in this cycle");
      const sent = Date.now();
      const inflight = ask(a, 'POST', '/v1/vms/c1/exec', { body: { path: '/bin/sleep', arg: ['30'], wait: 20 }, timeoutMs: 25_000 });
      await until(() => c.vm.c1.stats.commandLog.some((x) => x.command === 'guest-exec-status' && x.at >= sent), 5_000, 'the exec to be polled on c');
      // and a download of a 1 GiB file streaming through a when c dies: cut, never hangs
      c.vm.c1.addVirtualFile('/big.bin', 1024 * 1024 * 1024, cycle);
      const dl = download(`${a.url}/v1/vms/c1/files/content?path=${encodeURIComponent('/big.bin')}`);
      await dl.started;
      const killedAt = performance.now();
      await c.kill();
      const killedWall = Date.now();
      const mid = await inflight;
      const midMs = performance.now() - killedAt;
      expect([502, 503], mid.text).toContain(mid.status);
      expect(midMs).toBeLessThan(2_000);
      const cut = await dl.ended;
      const cutMs = performance.now() - killedAt;
      expect(cut.status).toBe(200);
      expect(cut.complete).toBe(false);
      expect(cut.bytes).toBeLessThan(1024 * 1024 * 1024);
      expect(cutMs).toBeLessThan(2_000);

      // until the directory says c is gone: every answer 502/503, none slow
      const before: number[] = [];
      let slowest = 0;
      let goneMs = Number.NaN;
      let goneWall = Number.NaN;
      for (;;) {
        const r = await ask(a, 'GET', '/v1/vms?state=unknown', { timeoutMs: 5_000 });
        expect(r.status).toBe(200);
        if ((r.json?.items as Array<Record<string, unknown>>).some((v) => v.name === 'c1')) {
          goneMs = performance.now() - killedAt;
          goneWall = Date.now();
          break;
        }
        const p = await ask(a, 'GET', '/v1/vms/c1/ping', { timeoutMs: 5_000 });
        before.push(p.status);
        slowest = Math.max(slowest, p.ms);
        expect([502, 503], p.text).toContain(p.status);
        if (performance.now() - killedAt > TTL_MS + INTERVAL_MS + 5_000) throw new Error('c1 never showed agent.state unknown');
        await new Promise((res) => setTimeout(res, 25));
      }
      // then: 503 NODE_UNAVAILABLE at once, for every route kind
      const after: Answer[] = [];
      for (const [m, p] of [
        ['GET', '/v1/vms/c1/ping'],
        ['GET', '/v1/vms/c2/agent'],
        ['POST', '/v1/vms/c1/fsfreeze'],
        ['GET', '/v1/vms/c1/files/content?path=/tmp/x'],
      ] as const) {
        const r = await ask(a, m, p, m === 'POST' ? { body: {} } : {});
        expectProblem(r, 503, 'NODE_UNAVAILABLE');
        after.push(r);
      }
      const afterMax = Math.max(...after.map((r) => r.ms));
      // c's last heartbeat as the directory read it: the TTL runs from there
      const cInfo = (await nodesVia(a)).find((n) => n.id === 'c');
      expect(cInfo).toMatchObject({ id: 'c', url: c.url, alive: false });
      const lastSeen = Date.parse(String(cInfo?.lastSeen));
      say(
        `cycle ${cycle}: in-flight exec answered ${mid.status} ${midMs.toFixed(0)} ms after SIGKILL, a streaming download cut after ${(cut.bytes / 2 ** 20).toFixed(0)} MiB by ${cutMs.toFixed(0)} ms; c gone after ${goneMs.toFixed(0)} ms, ` +
          `${goneWall - lastSeen} ms after its last heartbeat (sent ${killedWall - lastSeen} ms before the kill) ` +
          `(TTL ${TTL_MS}, interval ${INTERVAL_MS}); ${before.length} pings before that (${[...new Set(before)].join('/')}, slowest ${slowest.toFixed(0)} ms); ` +
          `NODE_UNAVAILABLE answers after it: max ${afterMax.toFixed(0)} ms`,
      );
      // gone no sooner than the TTL after its last heartbeat, and within one read interval (+ slack) of it
      expect(lastSeen).toBeLessThanOrEqual(killedWall);
      expect(goneWall - lastSeen).toBeGreaterThanOrEqual(TTL_MS);
      expect(goneWall - lastSeen).toBeLessThanOrEqual(TTL_MS + INTERVAL_MS + 1_500);
      expect(goneMs).toBeLessThanOrEqual(TTL_MS + INTERVAL_MS + 1_500);
      expect(slowest).toBeLessThan(1_000);
      expect(afterMax).toBeLessThan(500);
      // the list through a: c's VMs (both) unknown, still attributed to c
      const unknown = await ask(a, 'GET', '/v1/vms?state=unknown');
      expect(unknown.status).toBe(200);
      const onC = (unknown.json?.items as Array<Record<string, unknown>>).filter((v) => v.node === 'c');
      expect(onC.map((v) => v.name)).toEqual(['c1', 'c2']);
      // the VM object answers 200 from a's directory, as the list item: node c, agent unknown since c's
      // last heartbeat, c's last published labels and frozen state (every other route: 503 above)
      const obj = await ask(a, 'GET', '/v1/vms/c1');
      expect(obj.status, obj.text).toBe(200);
      expect(obj.headers.get('x-qga-node')).toBeNull();
      expect(obj.json).toEqual(onC[0]);
      expect(obj.json).toMatchObject({ name: 'c1', node: 'c', labels: { host: 'c' }, frozen: false, agent: { state: 'unknown', since: cInfo?.lastSeen, lastError: 'node c stopped heartbeating' } });

      // c comes back: routing resumes by itself
      await c.start();
      const readyAt = performance.now();
      await until(async () => {
        const r = await ask(a, 'GET', '/v1/vms/c1/ping');
        return r.status === 200 && r.headers.get('x-qga-node') === 'c';
      }, 10_000, 'a to route c1 to c again');
      const resumeMs = performance.now() - readyAt;
      say(`cycle ${cycle}: c restarted (ready in ${c.startMs.toFixed(0)} ms); a routes to it again ${resumeMs.toFixed(0)} ms after its /readyz`);
      expect(resumeMs).toBeLessThanOrEqual(INTERVAL_MS * 2 + 1_500);
      await until(converged, 10_000, 'every node to list a, b and c alive again');
    }
  });

  it('SIGKILL of the node that serves tcp1 (TCP, reachable from a and b) and through which c2 was frozen: c2 thawed by its deadline, tcp1 moves to the other node', async () => {
    const owner = await tcpOwner();
    expect(owner === 'a' || owner === 'b').toBe(true);
    const from = cl.node(String(owner));
    const to = from === a ? b : a;
    // the other node forwards to the owner: one node talks to the agent
    const via = await ask(to, 'GET', '/v1/vms/tcp1/ping');
    expect(via.status).toBe(200);
    expect(via.headers.get('x-qga-node')).toBe(from.id);
    // a freeze of c's VM taken through the node about to die
    const vm = c.vm.c2;
    const fr = await ask(from, 'POST', '/v1/vms/c2/fsfreeze', { body: { ttlSeconds: 1 } });
    expect(fr.status, fr.text).toBe(201);
    expect(vm.state.frozen).toBe(true);
    const expiresAt = Date.parse(String(fr.json?.expiresAt));

    const t0 = performance.now();
    await from.kill();
    const killedWall = Date.now();
    await until(() => !vm.state.frozen, 10_000, 'the deadline thaw of c2');
    const thawedAt = vm.stats.commandLog.filter((x) => x.command === 'guest-fsfreeze-thaw').at(-1)?.at ?? Date.now();
    expect(thawedAt - expiresAt).toBeGreaterThanOrEqual(0);
    expect(thawedAt - expiresAt).toBeLessThanOrEqual(250 + 1_500);
    expect((await ask(c, 'GET', '/v1/vms/c2/fsfreeze')).json).toMatchObject({ status: 'thawed', lease: null });

    await until(async () => (await tcpOwner()) === to.id, TTL_MS + 2 * INTERVAL_MS + 5_000, `tcp1 to move to ${to.id}`);
    const movedWall = Date.now();
    const moveMs = performance.now() - t0;
    const info = (await nodesVia(c)).find((n) => n.id === from.id);
    expect(info?.alive).toBe(false);
    const lastSeen = Date.parse(String(info?.lastSeen));
    say(
      `${from.id} SIGKILLed: c2's lease taken through it thawed ${thawedAt - expiresAt} ms past expiresAt (sweep 250 ms); ` +
        `tcp1 moved ${from.id} → ${to.id} ${moveMs.toFixed(0)} ms after the kill, ${movedWall - lastSeen} ms after ${from.id}'s last heartbeat (sent ${killedWall - lastSeen} ms before the kill)`,
    );
    // not before the dead owner's lease ran out (TTL from its last renewal, sent with its last heartbeat), and soon after
    expect(movedWall - lastSeen).toBeGreaterThanOrEqual(TTL_MS);
    expect(movedWall - lastSeen).toBeLessThanOrEqual(TTL_MS + 2 * INTERVAL_MS + 2_000);
    const direct = await ask(to, 'GET', '/v1/vms/tcp1');
    expect(direct.json).toMatchObject({ name: 'tcp1', node: to.id });
    // the old owner comes back: the VM stays where it is
    await from.start();
    await until(converged, 10_000, `${from.id} back in every node's list`);
    const back = await ask(from, 'GET', '/v1/vms/tcp1/ping');
    expect(back.status).toBe(200);
    expect(back.headers.get('x-qga-node')).toBe(to.id);
  });

  it(`Redis restart (${REDIS_CYCLES} time(s), data lost): the cluster recovers by itself`, { timeout: 60_000 + REDIS_CYCLES * 30_000 }, async () => {
    for (let cycle = 1; cycle <= REDIS_CYCLES; cycle++) {
      const t0 = performance.now();
      await cl.redis.kill();
      // every node notices (its readiness depends on the store)
      await until(async () => {
        for (const n of cl.nodes) if ((await ask(n, 'GET', '/readyz')).status !== 503) return false;
        return true;
      }, 15_000, 'every node to answer /readyz 503 while Redis is down');
      const noticed = performance.now() - t0;
      // a node's own VMs keep answering without Redis
      const local = await ask(c, 'GET', '/v1/vms/c1/ping');
      expect(local.status).toBe(200);
      const fwd = await ask(a, 'GET', '/v1/vms/c1/ping', { timeoutMs: 10_000 });
      expect(fwd.status, fwd.text).toBe(200);
      expect(fwd.headers.get('x-qga-node')).toBe('c');
      expect(fwd.json).toMatchObject({ ok: true });
      // a freeze needs its lease in Redis: refused (forwarded to c, refused there), nothing frozen
      const refused = await ask(a, 'POST', '/v1/vms/c2/fsfreeze', { body: { ttlSeconds: 30 }, timeoutMs: 10_000 });
      expectProblem(refused, 503, 'STORE_UNAVAILABLE');
      expect(refused.headers.get('x-qga-node')).toBe('c');
      expect(c.vm.c2.state.frozen).toBe(false);
      // every node keeps routing with the directory it read last, and says so
      for (const n of cl.nodes) {
        await until(async () => (await ask(n, 'GET', '/v1/nodes')).json?.stale === true, 5_000, `${n.id} to say stale: true`);
        expect(await aliveIds(n)).toEqual(['a', 'b', 'c']);
      }
      await cl.redis.restart();
      const up = performance.now();
      await until(async () => {
        for (const n of cl.nodes) if ((await ask(n, 'GET', '/readyz')).status !== 200) return false;
        return true;
      }, 20_000, 'every node ready again');
      const readyMs = performance.now() - up;
      await until(converged, 20_000, 'every node to list a, b and c alive after the Redis restart');
      await until(everyRoute, 20_000, 'every node to reach every VM again');
      const recoveredMs = performance.now() - up;
      // and it stays so: no VM drops out of a node's directory afterwards (checked for 4 heartbeat intervals)
      const held = performance.now();
      while (performance.now() - held < 4 * INTERVAL_MS) {
        const miss = await firstMiss();
        expect(miss, `${(performance.now() - up).toFixed(0)} ms after redis-server was back, ${(performance.now() - held).toFixed(0)} ms after every route worked`).toBeUndefined();
      }
      say(
        `Redis restart ${cycle}: nodes unready ${noticed.toFixed(0)} ms after the kill; during the outage a → c1 ping answered ${fwd.status} ` +
          `in ${fwd.ms.toFixed(0)} ms; after redis-server was back: ready in ${readyMs.toFixed(0)} ms, membership and forwarding back in ${recoveredMs.toFixed(0)} ms`,
      );
      expect(recoveredMs).toBeLessThanOrEqual(15_000);
      // a freeze works again, through one node and thawed through another
      const fr = await ask(b, 'POST', '/v1/vms/c2/fsfreeze', { body: { ttlSeconds: 30 } });
      expect(fr.status, fr.text).toBe(201);
      const th = await ask(a, 'DELETE', `/v1/vms/c2/fsfreeze?leaseId=${encodeURIComponent(String(fr.json?.leaseId))}`);
      expect(th.status, th.text).toBe(200);
      expect(c.vm.c2.state.frozen).toBe(false);
    }
  });

  it.skipIf(!FULL)('a node that hangs (SIGSTOP, sockets open): a ping in flight answers 503 at its bound, new ones 503 at once once it is gone; SIGCONT: back by itself', async () => {
    expect((await ask(a, 'GET', '/v1/vms/c1/ping')).status).toBe(200);
    c.pause();
    const pausedAt = performance.now();
    try {
      const hung = await ask(a, 'GET', '/v1/vms/c1/ping', { timeoutMs: PING_BOUND_MS + 10_000 });
      expectProblem(hung, 503, 'NODE_UNAVAILABLE');
      await until(async () => {
        const r = await ask(a, 'GET', '/v1/vms?state=unknown');
        return (r.json?.items as Array<Record<string, unknown>>).some((v) => v.name === 'c1');
      }, TTL_MS + INTERVAL_MS + 5_000, 'c gone for a');
      const goneMs = performance.now() - pausedAt;
      const now = await ask(a, 'GET', '/v1/vms/c1/ping');
      expectProblem(now, 503, 'NODE_UNAVAILABLE');
      say(`c SIGSTOPped: the ping in flight answered 503 after ${hung.ms.toFixed(0)} ms (bound ${PING_BOUND_MS}); c gone after ${goneMs.toFixed(0)} ms; then 503 in ${now.ms.toFixed(0)} ms`);
      expect(hung.ms).toBeGreaterThanOrEqual(PING_BOUND_MS - 50);
      expect(hung.ms).toBeLessThanOrEqual(PING_BOUND_MS + 1_500);
      expect(now.ms).toBeLessThan(500);
    } finally {
      c.resume();
    }
    const resumedAt = performance.now();
    await until(async () => {
      const r = await ask(a, 'GET', '/v1/vms/c1/ping');
      return r.status === 200 && r.headers.get('x-qga-node') === 'c';
    }, 10_000, 'a to route c1 to c after SIGCONT');
    say(`c SIGCONTed: routed to again ${(performance.now() - resumedAt).toFixed(0)} ms later`);
  });

  // the last test of the file: b is not started again (its return is the SIGKILL tests' subject)
  it('a node stopped with SIGTERM leaves at once: gone for the others well before the TTL, even while it drains a request in flight', async () => {
    // a request b is still answering (a 2 s long poll): b drains it before exiting
    const inFlight = ask(b, 'GET', '/v1/vms/b1/wait?for=ip&family=ipv6&scope=global&timeout=2');
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    const stopping = b.terminate();
    let exitMs = Number.NaN;
    void stopping.then(() => (exitMs = performance.now() - t0));
    let last: unknown;
    await until(async () => {
      const list = await nodesVia(a);
      last = list;
      return list.find((n) => n.id === 'b')?.alive === false;
    }, 10_000, 'a to see b gone').catch((e: unknown) => {
      throw new Error(`${String(e)}; b exited: ${!b.running} after ${exitMs} ms; a's list: ${JSON.stringify(last)}; b's log: ${b.log().slice(-1500)}`);
    });
    const goneMs = performance.now() - t0;
    expect(await stopping).toBe(0);
    say(`SIGTERM of b: exited after ${exitMs.toFixed(0)} ms, gone for a after ${goneMs.toFixed(0)} ms (a SIGKILLed node: TTL ${TTL_MS} ms)`);
    expect(goneMs).toBeLessThan(TTL_MS - INTERVAL_MS);
    expectProblem(await ask(a, 'GET', '/v1/vms/b1/ping'), 503, 'NODE_UNAVAILABLE');
    // the drained request got its answer (408: no such address), and b exited only after it
    expect((await inFlight).status).toBe(408);
    expect(exitMs).toBeGreaterThan(goneMs);
  });
});

announceVmSkip('cluster real VM');

describe.skipIf(!vmAvailable())('cluster: the real VM served by one node, read through another', { timeout: 120_000 }, () => {
  let rig: TestCluster;
  let guest: RunningVm;
  beforeAll(async () => {
    guest = await startVm('cluster');
    rig = await startCluster({
      heartbeatTtlMs: TTL_MS,
      heartbeatIntervalMs: INTERVAL_MS,
      nodes: [
        { id: 'x', vms: ['x1'] },
        { id: 'y', vms: [], extraVms: [{ name: 'guest', endpoint: { type: 'unix', path: guest.socketPath } }] },
      ],
    });
    const [x] = rig.nodes;
    await until(async () => (await ask(x, 'GET', '/v1/vms/guest/ping')).headers.get('x-qga-node') === 'y', 10_000, 'x to route the real VM to y');
  }, 300_000);
  afterAll(async () => {
    await rig?.stop();
    await guest?.stop();
  });

  it('ping, agent info and a file read of the real guest through x, as y answers them', async () => {
    const [x, y] = rig.nodes;
    for (const p of ['/ping', '/agent', '/hostname', `/files/content?path=${encodeURIComponent('/etc/os-release')}`]) {
      const direct = await ask(y, 'GET', `/v1/vms/guest${p}`);
      const fwd = await ask(x, 'GET', `/v1/vms/guest${p}`);
      expect(direct.status, `${p}: ${direct.text.slice(0, 200)}`).toBe(200);
      expectSame(fwd, direct, p);
      expect(fwd.headers.get('x-qga-node')).toBe('y');
    }
    expect((await ask(x, 'GET', '/v1/vms/guest/hostname')).json?.['host-name']).toBe(guest.name);
    expect((await ask(x, 'GET', `/v1/vms/guest/files/content?path=${encodeURIComponent('/etc/os-release')}`)).text).toMatch(/debian/i);
  });
});
