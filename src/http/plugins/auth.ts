/**
 * Bearer-token authentication and scope checks, before anything else runs (onRequest), so an
 * unauthenticated caller never costs a validation, a lookup or an agent round trip.
 *
 * Scopes: `read` (GET routes), `write` (routes that change the guest), `admin` (raw passthrough,
 * forced thaw, VM registration). A route declares `config: { scope }` when it differs from the
 * default for its method; service routes declare `config: { public: true }`.
 * Without configured tokens the caller is anonymous with `auth.anonymousScopes` (read only unless
 * configured otherwise); config loading then refuses any non-loopback listen address. VM globs are
 * matched without regular expressions (util/glob.ts).
 *
 * Cluster mode: a request another node forwards carries that node's signature (cluster/hop.ts) and
 * the principal IT authenticated; with a valid, fresh signature that principal (its scopes and VM
 * globs) is the request's, whatever the Authorization header says, and is checked here like a
 * token's. A request with any hop header and a missing, wrong or stale signature is 401, as is one
 * on a gateway not in cluster mode.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HOP_HEADER, PRINCIPAL_HEADER, SIGNATURE_HEADER, loadHopSecret, verifyHop, type HopPrincipal, type HopPurpose, type VerifiedHop } from '../../cluster/hop.js';
import type { Config, Scope, TokenConfig } from '../../config/schema.js';
import { errors } from '../../errors.js';
import { globMatcher } from '../../util/glob.js';
import { isObjectLike } from '../../util/unknown.js';

export interface Principal {
  name: string;
  scopes: ReadonlySet<Scope>;
  /** the token's VM globs (util/glob.ts); undefined = every VM */
  vms?: (vm: string) => boolean;
  /** the same VM globs as written (carried to another node in cluster mode) */
  globs?: readonly string[];
}

declare module 'fastify' {
  interface FastifyContextConfig {
    scope?: Scope;
    public?: boolean;
    /** the hop signature purpose this route accepts (cluster/hop.ts); default `forward` */
    hopPurpose?: HopPurpose;
    /** the settings a route's own body limit comes from, as its 413 names them (routes/operation.ts) */
    bodyLimitFrom?: string;
  }
  interface FastifyRequest {
    principal: Principal;
  }
}

const PRINCIPAL = Symbol('qga.principal');
const HOP = Symbol('qga.hop');

/** The entry node and principal of a request another node forwarded (a valid hop signature), else undefined. */
export function hopOf(request: FastifyRequest): VerifiedHop | undefined {
  return (request as FastifyRequest & { [HOP]?: VerifiedHop })[HOP];
}

/** The principal as another node receives it (cluster/hop.ts). */
export function hopPrincipal(p: Principal): HopPrincipal {
  return { name: p.name, scopes: [...p.scopes], ...(p.globs ? { vms: [...p.globs] } : {}) };
}

interface TokenEntry {
  digest: Buffer;
  principal: Principal;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}


/** The SHA-256 a config entry compares against: given as tokenSha256, or of the token it names. */
function configuredDigest(t: TokenConfig, env: Record<string, string | undefined>): Buffer {
  if (t.tokenSha256 !== undefined) return Buffer.from(t.tokenSha256, 'hex');
  const secret = t.token ?? (t.tokenEnv ? env[t.tokenEnv] : undefined) ?? (t.tokenFile ? readFileSync(t.tokenFile, 'utf8').trim() : '');
  if (secret.length < 16) throw new Error(`auth token "${t.name}" is shorter than 16 characters`);
  return digest(secret);
}

export function loadTokens(config: Config, env: Record<string, string | undefined> = process.env): TokenEntry[] {
  return config.auth.tokens.map((t) => {
    return {
      digest: configuredDigest(t, env),
      principal: { name: t.name, scopes: new Set(t.scopes), ...(t.vms ? { vms: globMatcher(t.vms), globs: [...t.vms] } : {}) },
    };
  });
}

export function canAccessVm(p: Principal, vm: string): boolean {
  return !p.vms || p.vms(vm);
}

export function requireScope(request: FastifyRequest, scope: Scope): void {
  if (!request.principal.scopes.has(scope)) {
    throw errors.missingScope(request.principal.name, scope);
  }
}

/**
 * The tokens and the anonymous principal in force: read by every request, replaced as a whole by
 * a config reload (SIGHUP). A reload that cannot read a token throws and changes nothing.
 */
/** tokens whose principal AuthTokens.find keeps (a handful are configured in practice) */
const MAX_CACHED = 256;

export class AuthTokens {
  private tokens: TokenEntry[] = [];
  private anon: Principal = { name: 'anonymous', scopes: new Set() };
  /** cluster.secretFile's secret (cluster mode), else undefined: no hop is accepted */
  private secret: string | undefined;
  /** principals carried by other nodes, by their header (as `recent`) */
  private readonly carried = new Map<string, Principal>();

  constructor(config: Config, env?: Record<string, string | undefined>) {
    this.reload(config, env);
  }

  reload(config: Config, env?: Record<string, string | undefined>): void {
    const tokens = loadTokens(config, env);
    // read once, at start: the forwarding side signs with the secret read at start too (a new
    // secret needs every node restarted)
    const { enabled, secretFile } = config.cluster;
    if (this.secret === undefined && enabled && secretFile !== undefined) this.secret = loadHopSecret(secretFile);
    this.tokens = tokens;
    this.recent.clear();
    this.carried.clear();
    this.anon = { name: 'anonymous', scopes: new Set(config.auth.anonymousScopes) };
  }

  get anonymous(): Principal {
    return this.anon;
  }

  get configured(): boolean {
    return this.tokens.length > 0;
  }

  /**
   * Principals of tokens that matched recently, by token (issue 14: the SHA-256 and the compares
   * on every request). Only tokens that matched are kept, at most MAX_CACHED (the oldest goes), so
   * unknown tokens always take the constant-time path below and cannot crowd the cache; a reload
   * empties it.
   */
  private readonly recent = new Map<string, Principal>();

  find(secret: string): Principal | undefined {
    const hit = this.recent.get(secret);
    if (hit !== undefined) return hit;
    const found = this.match(secret);
    if (found !== undefined) {
      if (this.recent.size >= MAX_CACHED) this.recent.delete(this.recent.keys().next().value as string);
      this.recent.set(secret, found);
    }
    return found;
  }

  /** The verified hop of a request carrying hop headers, else undefined (no secret, bad or stale signature). */
  verifyHop(request: FastifyRequest, purpose: HopPurpose = 'forward'): VerifiedHop | undefined {
    return this.secret === undefined ? undefined : verifyHop(this.secret, request.headers, request.method, request.url, Date.now(), purpose);
  }

  /** The Principal of a verified hop's carried principal (cached like tokens). */
  carriedPrincipal(hop: VerifiedHop, header: string): Principal {
    const hit = this.carried.get(header);
    if (hit !== undefined) return hit;
    const { name, scopes, vms } = hop.principal;
    const p: Principal = { name, scopes: new Set(scopes as Scope[]), ...(vms ? { vms: globMatcher(vms), globs: vms } : {}) };
    if (this.carried.size >= MAX_CACHED) this.carried.delete(this.carried.keys().next().value as string);
    this.carried.set(header, p);
    return p;
  }

  private match(secret: string): Principal | undefined {
    const d = digest(secret);
    // every entry is compared, in constant time each, so the answer's timing says nothing about which matched
    let found: Principal | undefined;
    for (const t of this.tokens) if (timingSafeEqual(t.digest, d) && !found) found = t.principal;
    return found;
  }
}

export function registerAuth(app: FastifyInstance, config: Config, env?: Record<string, string | undefined>): AuthTokens {
  const auth = new AuthTokens(config, env);
  // the principal auth found, on the request itself (a defineProperty per request cost more)
  app.decorateRequest('principal', {
    getter(this: FastifyRequest & { [PRINCIPAL]?: Principal }): Principal {
      return this[PRINCIPAL] ?? auth.anonymous;
    },
  });

  // callback style: an async hook costs a promise and a microtask per request
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      authenticate(request);
    } catch (e) {
      done(e as Error);
      return;
    }
    done();
  });

  /**
   * A node-to-node request that does not verify is the client's 401 (on its entry node's answer),
   * but its cause is the operator's: say it, once per 10 s per claimed entry node (a bounded map).
   */
  const hopRefusalsLogged = new Map<string, number>();
  function noteRefusedHop(request: FastifyRequest, claimed: unknown): void {
    const node = typeof claimed === 'string' ? claimed.slice(0, 64) : '';
    const now = Date.now();
    if (now - (hopRefusalsLogged.get(node) ?? -Infinity) < 10_000) return;
    if (hopRefusalsLogged.size >= 256) hopRefusalsLogged.clear();
    hopRefusalsLogged.set(node, now);
    request.log.warn(
      { audit: true, action: 'hop-refused', entryNode: node, route: request.routeOptions.url },
      "a node-to-node request did not verify with this node's cluster.secretFile: the nodes' secrets differ, their clocks are more than 60 s apart, or it is forged; its client got 401",
    );
  }

  function authenticate(request: FastifyRequest & { [PRINCIPAL]?: Principal; [HOP]?: VerifiedHop }): void {
    const cfg = request.routeOptions.config;
    let principal = auth.anonymous;
    const headers = request.headers;
    if (headers[HOP_HEADER] !== undefined || headers[SIGNATURE_HEADER] !== undefined || headers[PRINCIPAL_HEADER] !== undefined) {
      // forwarded by another node: its principal, never a bearer token
      // a forwarding signature on /v1 routes, an agent-call signature on the internal route only
      const hop = auth.verifyHop(request, cfg?.hopPurpose ?? 'forward');
      if (!hop) {
        noteRefusedHop(request, headers[HOP_HEADER]);
        throw errors.unauthenticated('hop');
      }
      request[HOP] = hop;
      principal = auth.carriedPrincipal(hop, headers[PRINCIPAL_HEADER] as string);
    } else if (auth.configured) {
      const header = request.headers.authorization;
      const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
      if (m) {
        const found = auth.find(m[1]);
        if (!found) throw errors.unauthenticated('unknown');
        principal = found;
      } else if (!cfg?.public) {
        throw errors.unauthenticated('missing');
      }
    }
    request[PRINCIPAL] = principal;
    if (cfg?.public) return;
    const scope: Scope = cfg?.scope ?? (request.method === 'GET' || request.method === 'HEAD' ? 'read' : 'write');
    requireScope(request, scope);
    const vm = isObjectLike(request.params) ? request.params.vm : undefined;
    if (typeof vm === 'string' && !canAccessVm(principal, vm)) {
      throw errors.vmsOutOfReach(principal.name, [vm]);
    }
  }
  return auth;
}
