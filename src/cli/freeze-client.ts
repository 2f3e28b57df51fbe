/**
 * The HTTP side of freeze-run: freeze one VM (POST /v1/vms/{vm}/fsfreeze) or several as one group
 * (POST /v1/freeze-groups), renew the lease, thaw it. Node's own fetch; every call has a deadline.
 * A gateway's refusal becomes a CallError with its status and problem code; a network failure or
 * a timeout becomes a CallError without a status.
 */
import { errorMessage } from '../util/unknown.js';

export class CallError extends Error {
  constructor(
    message: string,
    /** the HTTP status; undefined when no answer came (network, timeout) */
    readonly status?: number,
    /** the problem's code (LEASE_EXPIRED …) */
    readonly code?: string,
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'CallError';
  }

  /** worth retrying: no answer, a 5xx or 429 */
  get transient(): boolean {
    return this.status === undefined || this.status >= 500 || this.status === 429;
  }
}

export interface Lease {
  /** the VM (one) or the group id (several) */
  kind: 'vm' | 'group';
  vms: string[];
  id: string;
  leaseId: string;
  expiresAt: string;
  /** filesystems frozen, per VM */
  frozen: Record<string, number>;
}

export interface ThawOutcome {
  /** false when the guest did not stay frozen for the whole lease (e.g. Windows VSS 10 s lapse) */
  consistent: boolean;
  reasons: string[];
}

type Json = Record<string, unknown>;

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

export class FreezeClient {
  private readonly base: string;

  constructor(
    url: string,
    private readonly token: string | undefined,
  ) {
    this.base = url.endsWith('/') ? url : `${url}/`;
  }

  async call(method: string, path: string, timeoutMs: number, body?: unknown, headers: Record<string, string> = {}): Promise<Json> {
    const h: Record<string, string> = { accept: 'application/json', ...headers };
    if (this.token) h.authorization = `Bearer ${this.token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const target = new URL(path, this.base);
    let res: Response;
    let text: string;
    try {
      res = await fetch(target, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
      text = await res.text();
    } catch (e) {
      const why = e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError') ? `no answer within ${timeoutMs} ms` : causeOf(e);
      throw new CallError(`${method} ${target.pathname}: ${why}`);
    }
    let json: Json = {};
    try {
      const parsed: unknown = text ? JSON.parse(text) : {};
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) json = parsed as Json;
    } catch {
      // not JSON (a proxy's error page): the status says enough
    }
    if (!res.ok) {
      const code = str(json.code) || undefined;
      const detail = str(json.detail) || str(json.title) || res.statusText;
      // the VM it is about (a group's failing member), when the detail does not name it
      const vm = str(json.vm);
      const about = vm && !detail.includes(vm) ? ` (VM ${vm})` : '';
      throw new CallError(`${method} ${target.pathname}: ${res.status}${code ? ` ${code}` : ''}: ${detail}${about}`, res.status, code, json);
    }
    return json;
  }

  async freeze(vms: string[], ttlSeconds: number, mountpoints: string[] | undefined, idempotencyKey: string, timeoutMs: number): Promise<Lease> {
    const headers = { 'idempotency-key': idempotencyKey };
    const extra = mountpoints && mountpoints.length > 0 ? { mountpoints } : {};
    if (vms.length === 1) {
      const vm = vms[0]!;
      const r = await this.call('POST', `v1/vms/${encodeURIComponent(vm)}/fsfreeze`, timeoutMs, { ttlSeconds, ...extra }, headers);
      return { kind: 'vm', vms, id: vm, leaseId: str(r.leaseId), expiresAt: str(r.expiresAt), frozen: { [vm]: Number(r.frozen) } };
    }
    const r = await this.call('POST', 'v1/freeze-groups', timeoutMs, { vms, ttlSeconds, ...extra }, headers);
    const frozen: Record<string, number> = {};
    if (Array.isArray(r.vms)) for (const m of r.vms as Json[]) frozen[str(m.vm)] = Number(m.frozen);
    return { kind: 'group', vms, id: str(r.id), leaseId: str(r.leaseId), expiresAt: str(r.expiresAt), frozen };
  }

  private path(lease: Lease): string {
    return lease.kind === 'vm' ? `v1/vms/${encodeURIComponent(lease.id)}/fsfreeze` : `v1/freeze-groups/${encodeURIComponent(lease.id)}`;
  }

  async renew(lease: Lease, ttlSeconds: number, timeoutMs: number): Promise<{ expiresAt: string; capped: boolean }> {
    const r = await this.call('POST', `${this.path(lease)}/renew`, timeoutMs, { leaseId: lease.leaseId, ttlSeconds });
    return { expiresAt: str(r.expiresAt), capped: r.capped === true };
  }

  async thaw(lease: Lease, timeoutMs: number): Promise<ThawOutcome> {
    const r = await this.call('DELETE', `${this.path(lease)}?leaseId=${encodeURIComponent(lease.leaseId)}`, timeoutMs);
    const reports: Json[] = lease.kind === 'vm' ? [{ vm: lease.id, ...r }] : Array.isArray(r.vms) ? (r.vms as Json[]) : [];
    const reasons: string[] = [];
    for (const m of reports) {
      if (m.consistent === false) reasons.push(`${str(m.vm)}: ${str(m.reason) || `thawed ${String(m.thawed)} of ${String(m.frozen)} filesystems`}`);
    }
    return { consistent: reasons.length === 0, reasons };
  }
}

/** fetch's "fetch failed" hides the reason in `cause` (ECONNREFUSED …) */
function causeOf(e: unknown): string {
  const cause = e instanceof Error ? (e.cause as { code?: unknown; message?: unknown } | undefined) : undefined;
  if (cause && typeof cause.code === 'string') return `${cause.code}${typeof cause.message === 'string' ? ` (${cause.message})` : ''}`;
  return errorMessage(cause ?? e);
}
