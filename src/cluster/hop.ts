/**
 * Node-to-node authentication (cluster mode). A node that forwards a request, or calls another
 * node for itself, signs the call with the secret every node shares (cluster.secretFile) and
 * carries the principal IT authenticated; the node that receives the call trusts that principal
 * only when the signature is valid and fresh, and then enforces its scopes and VM globs itself.
 *
 * Headers:
 *  - `x-qga-hop`: the entry node's id. A request carrying it is never forwarded again (no loops).
 *  - `x-qga-principal`: base64url of the JSON {name, scopes, vms?} (vms: the token's VM globs).
 *  - `x-qga-signature`: `<unix ms>.<base64url HMAC-SHA256>` over the purpose, the method, the URL
 *    (path and query, as sent), the time, the entry node and the principal header, one per line.
 *
 * Purposes (domain separation): `forward` signs a client's /v1 request forwarded to the VM's node
 * (http/plugins/forward.ts; auth.ts accepts only these on /v1 routes); `agent-call` signs a node's
 * own freeze-family call to /internal/cluster/... (cluster/remote-agent.ts; only that route accepts
 * these). A signature of one purpose never verifies as the other. Only an `agent-call` may carry
 * the SYSTEM principal (the gateway's own deadline/reconcile thaws, no human behind them): a
 * `forward` carrying it does not verify, and the forward plugin builds its principal from the
 * authenticated one, never from client headers.
 *
 * A signature older or newer than ±60 s is refused (clocks of the nodes are assumed within a few
 * seconds, NTP). Within that window a captured call could be replayed: nodes should talk over
 * https (advertiseUrl) on a network the clients do not share. The body is not covered: the
 * signature authenticates the calling node, not the bytes (streamed uploads are not buffered).
 */
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const HOP_HEADER = 'x-qga-hop';
export const PRINCIPAL_HEADER = 'x-qga-principal';
export const SIGNATURE_HEADER = 'x-qga-signature';
/** the node that served a forwarded request, on every answer of one */
export const NODE_HEADER = 'x-qga-node';

/** how far a signature's time may be from this node's clock */
export const HOP_WINDOW_MS = 60_000;
/**
 * Connections one node keeps to another for forwarding (cluster/forward.ts), one request each: the
 * bound of the forwarded requests a node has in flight from one entry node (http/plugins/limits.ts).
 */
export const FORWARD_CONNECTIONS = 128;
/** the least length of the shared secret */
export const MIN_SECRET_LENGTH = 32;

const SCOPES = new Set(['read', 'write', 'admin']);
/** bounds of what a principal header may hold (a node never sends more; an attacker gets 401) */
const MAX_PRINCIPAL_HEADER = 16_384;
const MAX_GLOBS = 256;

export interface HopPrincipal {
  name: string;
  scopes: string[];
  /** VM globs; absent = every VM */
  vms?: string[];
  /** the gateway itself (SYSTEM_PRINCIPAL): carried by `agent-call` signatures only */
  system?: true;
}

/** what a signature is for; one purpose's signature never verifies as another's */
export type HopPurpose = 'forward' | 'agent-call';

/** The gateway acting on its own (deadline, reconcile, retry thaws): no scopes; cluster-internal.ts lets it thaw and read status only. */
export const SYSTEM_PRINCIPAL: HopPrincipal = Object.freeze({ name: 'gateway', scopes: [], system: true as const }) as HopPrincipal;

export interface HopParts {
  /** default `forward` */
  purpose?: HopPurpose;
  method: string;
  /** path and query exactly as the receiving node will see them (request.url) */
  url: string;
  /** this (the entry) node's id */
  entryNode: string;
  principal: HopPrincipal;
  /** ms epoch; default now (tests) */
  now?: number;
}

export interface VerifiedHop {
  entryNode: string;
  principal: HopPrincipal;
}

/** The shared secret of cluster.secretFile (trimmed); at least MIN_SECRET_LENGTH characters. */
export function loadHopSecret(file: string): string {
  const secret = readFileSync(file, 'utf8').trim();
  if (secret.length < MIN_SECRET_LENGTH) {
    throw new Error(`cluster.secretFile (${file}) holds ${secret.length} characters; at least ${MIN_SECRET_LENGTH} are needed`);
  }
  return secret;
}

/**
 * A tag of the secret each node publishes with its heartbeat, so that nodes whose secrets differ
 * are told at once (a log line, GET /v1/nodes `sameSecret`) rather than by refused requests: the
 * first 16 hex digits of an HMAC of a fixed text under the secret (it cannot be read back; a weak
 * secret could be guessed against it by whoever reads Redis, as README says: make it random).
 */
export function secretTag(secret: string): string {
  return createHmac('sha256', keyOf(secret)).update('qga-gateway cluster secret tag v1').digest('hex').slice(0, 16);
}

/** the secret as a key object, made once per secret (createHmac with a string key makes one per call) */
const keys = new Map<string, KeyObject>();
function keyOf(secret: string): KeyObject {
  let key = keys.get(secret);
  if (key === undefined) {
    if (keys.size >= 8) keys.clear();
    key = createSecretKey(Buffer.from(secret, 'utf8'));
    keys.set(secret, key);
  }
  return key;
}

function mac(secret: string, purpose: HopPurpose, method: string, url: string, time: string, entryNode: string, principal: string): Buffer {
  return createHmac('sha256', keyOf(secret)).update(`${purpose}\n${method.toUpperCase()}\n${url}\n${time}\n${entryNode}\n${principal}`).digest();
}

/** principal headers by the principal object they encode (a node signs for the same few principals again and again) */
const encoded = new WeakMap<HopPrincipal, string>();
function encodePrincipal(principal: HopPrincipal): string {
  let header = encoded.get(principal);
  if (header === undefined) {
    const p: HopPrincipal = { name: principal.name, scopes: [...principal.scopes] };
    if (principal.vms !== undefined) p.vms = [...principal.vms];
    if (principal.system === true) p.system = true;
    header = Buffer.from(JSON.stringify(p)).toString('base64url');
    encoded.set(principal, header);
  }
  return header;
}

/** The headers that authenticate a node-to-node call (`principal` is encoded once per object: do not mutate one after signing with it). */
export function signHop(secret: string, parts: HopParts): Record<string, string> {
  const purpose = parts.purpose ?? 'forward';
  if (parts.principal.system === true && purpose !== 'agent-call') throw new Error('the system principal is carried by agent-call signatures only');
  const principal = encodePrincipal(parts.principal);
  const time = String(Math.trunc(parts.now ?? Date.now()));
  const sig = mac(secret, purpose, parts.method, parts.url, time, parts.entryNode, principal).toString('base64url');
  return { [HOP_HEADER]: parts.entryNode, [PRINCIPAL_HEADER]: principal, [SIGNATURE_HEADER]: `${time}.${sig}` };
}

/**
 * How long the entry node reuses one `forward` signature for the same principal, method and URL
 * (issue 17 item 6: an HMAC per forwarded request is CPU on both nodes). The receiver checks the
 * signature's time against its ±HOP_WINDOW_MS window as for any other: a reused signature is one
 * at most this much older, nothing the window does not already allow.
 */
export const FORWARD_SIGNATURE_REUSE_MS = 1_000;
const MAX_SIGNED_PER_PRINCIPAL = 1_024;

interface Signed {
  at: number;
  headers: Record<string, string>;
}
/** recent forward signatures: by secret, by principal object, by entry node, method and URL */
const signedBySecret = new Map<string, WeakMap<HopPrincipal, Map<string, Signed>>>();

/**
 * signHop for a `forward`, reusing a signature made for the same secret, principal object, entry
 * node, method and URL within the last FORWARD_SIGNATURE_REUSE_MS (bounded per principal). The
 * headers returned are shared: do not mutate them.
 */
export function signForward(secret: string, parts: Omit<HopParts, 'purpose' | 'now'>, now: number = Date.now()): Record<string, string> {
  let byPrincipal = signedBySecret.get(secret);
  if (byPrincipal === undefined) {
    if (signedBySecret.size >= 8) signedBySecret.clear();
    byPrincipal = new WeakMap();
    signedBySecret.set(secret, byPrincipal);
  }
  let byCall = byPrincipal.get(parts.principal);
  if (byCall === undefined) {
    byCall = new Map();
    byPrincipal.set(parts.principal, byCall);
  }
  const key = `${parts.entryNode}\n${parts.method}\n${parts.url}`;
  const hit = byCall.get(key);
  if (hit !== undefined && now - hit.at < FORWARD_SIGNATURE_REUSE_MS && hit.at <= now) return hit.headers;
  const headers = signHop(secret, { ...parts, purpose: 'forward', now });
  if (hit === undefined && byCall.size >= MAX_SIGNED_PER_PRINCIPAL) byCall.clear();
  byCall.set(key, { at: now, headers });
  return headers;
}

type Headers = Record<string, string | string[] | undefined>;

function one(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return typeof v === 'string' ? v : undefined;
}

/** principals of headers that verified, by header (bounded; the same few principals come again and again) */
const parsed = new Map<string, HopPrincipal>();
const MAX_PARSED = 256;

function parsePrincipal(header: string): HopPrincipal | undefined {
  const hit = parsed.get(header);
  if (hit !== undefined) return hit;
  const p = decodePrincipal(header);
  if (p !== undefined) {
    if (parsed.size >= MAX_PARSED) parsed.delete(parsed.keys().next().value as string);
    parsed.set(header, p);
  }
  return p;
}

function decodePrincipal(header: string): HopPrincipal | undefined {
  if (header.length > MAX_PRINCIPAL_HEADER) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(header, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object') return undefined;
  const { name, scopes, vms, system } = v as Record<string, unknown>;
  if (typeof name !== 'string' || name.length === 0 || name.length > 256) return undefined;
  if (system !== undefined) {
    // exactly SYSTEM_PRINCIPAL, nothing else
    if (system !== true || name !== SYSTEM_PRINCIPAL.name || !Array.isArray(scopes) || scopes.length !== 0 || vms !== undefined) return undefined;
    return { name, scopes: [], system: true };
  }
  if (!Array.isArray(scopes) || !scopes.every((s) => typeof s === 'string' && SCOPES.has(s))) return undefined;
  if (vms !== undefined && (!Array.isArray(vms) || vms.length > MAX_GLOBS || !vms.every((g) => typeof g === 'string' && g.length <= 256))) return undefined;
  return { name, scopes: scopes as string[], ...(vms !== undefined ? { vms: vms as string[] } : {}) };
}

/**
 * The entry node and principal of a signed call, or undefined when the headers are missing,
 * malformed, signed with another secret, for another purpose/method/URL, or outside ±HOP_WINDOW_MS,
 * or when a `forward` carries the system principal. The MAC is compared in constant time.
 */
export function verifyHop(secret: string, headers: Headers, method: string, url: string, now: number = Date.now(), purpose: HopPurpose = 'forward'): VerifiedHop | undefined {
  const entryNode = one(headers, HOP_HEADER);
  const principalHeader = one(headers, PRINCIPAL_HEADER);
  const signature = one(headers, SIGNATURE_HEADER);
  if (entryNode === undefined || principalHeader === undefined || signature === undefined) return undefined;
  if (entryNode.length === 0 || entryNode.length > 128) return undefined;
  const dot = signature.indexOf('.');
  if (dot <= 0) return undefined;
  const time = signature.slice(0, dot);
  const t = Number(time);
  if (time.length > 16 || !Number.isInteger(t) || t < 0 || Math.abs(now - t) > HOP_WINDOW_MS) return undefined;
  // a signature this node verified before, over exactly these inputs (the entry node reuses one
  // for up to FORWARD_SIGNATURE_REUSE_MS): the same inputs give the same MAC, so it is valid again;
  // its time was checked against the window above, as for any other
  // (by the signature's text, then every other input compared: cheaper than hashing one key
  // string of them all, issue 17 item 6; a signature seen with other inputs is verified in full)
  const cache = verifiedCacheOf(secret);
  const hit = cache.get(signature);
  let principal: HopPrincipal;
  if (hit !== undefined && hit.url === url && hit.principalHeader === principalHeader && hit.entryNode === entryNode && hit.method === method && hit.purpose === purpose) {
    principal = hit.principal;
  } else {
    const given = Buffer.from(signature.slice(dot + 1), 'base64url');
    const expected = mac(secret, purpose, method, url, time, entryNode, principalHeader);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    const p = parsePrincipal(principalHeader);
    if (p === undefined) return undefined;
    principal = p;
    if (cache.size >= MAX_VERIFIED) cache.clear();
    cache.set(signature, { purpose, method, url, entryNode, principalHeader, principal });
  }
  if (principal.system === true && purpose !== 'agent-call') return undefined;
  return { entryNode, principal };
}

/** a signature verified, with everything else it covers (its time is in the signature's text) */
interface Verified {
  purpose: HopPurpose;
  method: string;
  url: string;
  entryNode: string;
  principalHeader: string;
  principal: HopPrincipal;
}
/** verified signatures by secret, then by the signature header: bounded, cleared when full */
const verifiedBySecret = new Map<string, Map<string, Verified>>();
const MAX_VERIFIED = 4_096;
function verifiedCacheOf(secret: string): Map<string, Verified> {
  let cache = verifiedBySecret.get(secret);
  if (cache === undefined) {
    if (verifiedBySecret.size >= 8) verifiedBySecret.clear();
    cache = new Map();
    verifiedBySecret.set(secret, cache);
  }
  return cache;
}

/** a backslash, a control character, an encoded `/`, `\` or control character, a `%` not followed by two hex digits */
const BAD_IN_PATH = /[\\\x00-\x1f\x7f]|%(?:2f|5c|[01][0-9a-f]|7f)|%(?![0-9a-f]{2})/i;
/** a `.` or `..` segment, plain or percent-encoded in any case (`%2e`, `.%2E`, …) */
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;
/** what WHATWG URL parsing (reply-from, undici) would percent-encode or cut in a path: it is not sent as written */
const NOT_AS_WRITTEN = /[ "#<>`{}?]|[^\x00-\x7f]/;

/**
 * Why the path of a request (without its query) may not be forwarded to the node serving `vm`, or
 * undefined when it may: it is sent and signed exactly as received, so it must hold no backslash,
 * no `.`/`..` segment (also `%2e`), no encoded `/` or `\` (`%2f`, `%5c`), no control character
 * (raw or encoded), nothing URL parsing would rewrite, and lie under `/v1/vms/<vm>` as written.
 * (Node's HTTP server accepts backslashes; URL parsing turns them into `/` and resolves `..`, so
 * such a path could otherwise be signed for, and reach, a route other than the one matched here.)
 */
export function unforwardablePath(path: string, vm: string): string | undefined {
  if (BAD_IN_PATH.test(path)) return 'the request path holds a backslash, a control character, an encoded "/", "\\" or control character, or a malformed %-escape';
  if (DOT_SEGMENT.test(path)) return 'the request path holds a "." or ".." segment (plain or %-encoded)';
  if (NOT_AS_WRITTEN.test(path) || path.startsWith('//')) return 'the request path holds characters that must be %-encoded';
  const base = `/v1/vms/${vm}`;
  if (path !== base && !path.startsWith(`${base}/`)) return `the request path does not start with ${base}/ as written`;
  return undefined;
}
