/**
 * GET /v1/vms: the fleet a page at a time, in name order, filtered by agent state, labels and
 * capability, and always by the caller's VM globs. Pages come from the registry's sorted index
 * (registry.page): a page of 1,000 out of 10,000 VMs is a binary search and a walk, never a sort.
 *
 * The cursor is opaque to clients: base64url of `v1:<last name of the page>`. The next page starts
 * after that name, so VMs registered or removed between two pages neither repeat nor shift the
 * others (a VM added behind the cursor is simply not on a later page).
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import { errors } from '../../errors.js';
import type { VmRecord } from '../../registry/registry.js';
import { canAccessVm, type Principal } from '../plugins/auth.js';
import type { HttpServices } from '../services.js';
import { operation } from './operation.js';
import type { ClusterService, RemoteVm, RemoteVms } from '../../cluster/directory.js';
import { freezeIndex, remoteVmObject } from './vm-fleet.js';
import { VmSummary, summarize } from './vms.js';

export const LIST_LIMIT_DEFAULT = 100;
export const LIST_LIMIT_MAX = 1_000;
const CURSOR_PREFIX = 'v1:';
const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const ListQuery = Type.Object(
  {
    state: Type.Optional(
      Type.Union([Type.Literal('up'), Type.Literal('down'), Type.Literal('unknown')], { description: 'only VMs whose agent is in this state' }),
    ),
    label: Type.Optional(
      Type.Array(Type.String({ pattern: '^[^=]+=', maxLength: 512 }), {
        maxItems: 16,
        description: 'key=value: only VMs with this label (its exact value, or one element of a `;`-separated list such as `pve.tags`); repeat for several, all must match (`?label=env=prod&label=pve.name=web-01`)',
      }),
    ),
    capability: Type.Optional(
      Type.String({ pattern: '^[a-z][a-z0-9-]{0,63}$', description: 'only VMs whose agent offers and enables this command (`guest-exec`)' }),
    ),
    limit: Type.Integer({ format: 'int32', minimum: 1, maximum: LIST_LIMIT_MAX, default: LIST_LIMIT_DEFAULT, description: `page size (default ${LIST_LIMIT_DEFAULT}, at most ${LIST_LIMIT_MAX})` }),
    cursor: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,256}$', description: 'the `next` of the previous page' })),
  },
  { additionalProperties: false },
);

export const VmPage = Type.Object(
  {
    items: Type.Array(VmSummary),
    next: Type.Union([Type.String(), Type.Null()], { description: 'cursor of the next page; null on the last page' }),
  },
  { title: 'VmPage', description: 'One page of the VMs the caller may use, in name order' },
);

export function encodeCursor(lastName: string): string {
  return Buffer.from(CURSOR_PREFIX + lastName, 'utf8').toString('base64url');
}

/** The name a cursor continues after; VALIDATION_FAILED for one this gateway did not hand out. */
export function decodeCursor(cursor: string): string {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const name = text.startsWith(CURSOR_PREFIX) ? text.slice(CURSOR_PREFIX.length) : '';
  if (!VM_NAME.test(name)) throw errors.validation('cursor is not one this gateway handed out: pass the `next` of the previous page unchanged, or no cursor for the first page');
  return name;
}

/** key=value → [key, value], split at the first `=` */
function parseLabel(s: string): [string, string] {
  const eq = s.indexOf('=');
  return [s.slice(0, eq), s.slice(eq + 1)];
}

interface Filter {
  state?: 'up' | 'down' | 'unknown';
  label?: string[];
  capability?: string;
}

/** the VM's own label `key` (never an inherited member: `?label=toString=x` is a 500 otherwise) */
function labelOf(labels: Record<string, string> | undefined, key: string): string | undefined {
  return labels !== undefined && Object.hasOwn(labels, key) ? labels[key] : undefined;
}

/** A label matches its exact value, or one element of a `;`-separated list (Proxmox's `pve.tags`). */
function labelMatches(value: string | undefined, wanted: string): boolean {
  if (value === undefined) return false;
  return value === wanted || (value.includes(';') && !wanted.includes(';') && value.split(';').includes(wanted));
}

/** The caller's globs and the query's filters as one test; the cheap ones first. */
function matcher(services: HttpServices, principal: Principal, q: Filter): (rec: VmRecord) => boolean {
  const labels = (q.label ?? []).map(parseLabel);
  const { state, capability } = q;
  return (rec) => {
    if (!canAccessVm(principal, rec.name)) return false;
    for (const [k, v] of labels) if (!labelMatches(labelOf(rec.labels, k), v)) return false;
    if (state === undefined && capability === undefined) return true;
    const fleet = services.agent.fleetState(rec.name);
    if (state !== undefined && fleet.agent.state !== state) return false;
    return capability === undefined || (fleet.capabilities?.includes(capability) ?? false);
  };
}

/** The same test for a VM another node publishes (a gone node's VMs are in state unknown). */
function remoteMatcher(principal: Principal, q: Filter): (vm: RemoteVm) => boolean {
  const labels = (q.label ?? []).map(parseLabel);
  const { state, capability } = q;
  return (vm) => {
    if (!canAccessVm(principal, vm.name)) return false;
    for (const [k, v] of labels) if (!labelMatches(labelOf(vm.summary.labels, k), v)) return false;
    if (state !== undefined && (vm.alive ? vm.summary.agent.state : 'unknown') !== state) return false;
    return capability === undefined || (vm.alive && (vm.summary.capabilities?.includes(capability) ?? false));
  };
}

type Item = Static<typeof VmSummary>;

/**
 * Cluster mode: this node's page and the other nodes' (from the directory cache, cluster/
 * directory.ts) merged in name order. Each side yields at most `limit` matches after the cursor;
 * the first `limit` of their union is the page. A VM this node has in its registry but another
 * node serves (a shared VM it does not own) is listed from that node's entry, once.
 */
async function clusterPage(
  services: HttpServices,
  cluster: ClusterService,
  remoteVms: RemoteVms,
  principal: Principal,
  q: Filter & { limit: number },
  after: string | undefined,
): Promise<{ items: Item[]; next: string | null }> {
  const match = matcher(services, principal, q);
  const servedHere = (name: string) => {
    const kind = cluster.locate(name).kind;
    return kind === 'local' || kind === 'unknown';
  };
  const local = await services.registry.page({ after, limit: q.limit, match: (rec) => servedHere(rec.name) && match(rec) });
  const rmatch = remoteMatcher(principal, q);
  const remote: RemoteVm[] = [];
  let remoteMore = false;
  for (const name of remoteVms.after(after)) {
    if (servedHere(name)) continue;
    const vm = remoteVms.get(name);
    if (!vm || !rmatch(vm)) continue;
    if (remote.length >= q.limit) {
      remoteMore = true;
      break;
    }
    remote.push(vm);
  }
  const merged: Array<{ name: string; rec?: VmRecord; vm?: RemoteVm }> = [...local.items.map((rec) => ({ name: rec.name, rec })), ...remote.map((vm) => ({ name: vm.name, vm }))];
  merged.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const page = merged.slice(0, q.limit);
  const more = local.more || remoteMore || merged.length > q.limit;
  const view = { endpoints: principal.scopes.has('admin') };
  const freezes = await freezeIndex(services, page.map((e) => e.name));
  const items = page.map((e) => (e.rec ? summarize(services, e.rec, view, freezes) : remoteVmObject(cluster, e.vm as RemoteVm, view, freezes)));
  const last = page.at(-1);
  return { items, next: more && last ? encodeCursor(last.name) : null };
}

export default async function vmListRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { services } = fastify;

  app.get(
    '/vms',
    operation('vms', 'listVms', {
      summary: 'List registered VMs a page at a time, filtered (config, discovered sockets, API-registered)',
      description:
        'VMs in name order, only those the caller’s VM globs allow. Filters: `state` (agent state), `label=key=value` ' +
        '(repeatable; all must match), `capability` (an enabled agent command). `limit` (default 100, at most 1,000) ' +
        'VMs per page; `next` is the cursor of the following page (null on the last). The cursor stays valid while ' +
        'VMs come and go: no VM is listed twice and none that stays registered is skipped. In cluster mode the list is the ' +
        "whole cluster's, each VM with the `node` that serves it (and `conflict`, the other live nodes that serve the name, when two or more do); a gone " +
        "node's VMs are listed with agent state `unknown` (GET /v1/vms/{vm} answers one of them the same way).",
      querystring: ListQuery,
      ok: { 200: VmPage },
      errors: [400, 401, 403, 503],
    }),
    async (request) => {
      const q = request.query;
      const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
      const cluster = services.cluster;
      if (cluster?.remote) return clusterPage(services, cluster, cluster.remote, request.principal, q, after);
      const page = await services.registry.page({ after, limit: q.limit, match: matcher(services, request.principal, q) });
      const view = { endpoints: request.principal.scopes.has('admin') };
      // ITEM BUILDER (helper S owns the item's fields: agent, frozen): one VM object per record
      const freezes = await freezeIndex(services, page.items.map((rec) => rec.name));
      const items = page.items.map((rec) => summarize(services, rec, view, freezes));
      const last = page.items.at(-1);
      return { items, next: page.more && last ? encodeCursor(last.name) : null };
    },
  );
}
