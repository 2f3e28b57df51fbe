/**
 * Config = defaults ← YAML file ← environment. Validation is strict: unknown keys, wrong types and
 * out-of-range values all fail, every one of them listed in one ConfigError. Nothing falls back to
 * a default silently once a key is present.
 */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { CORE_SCHEMA, load as loadYamlFast } from 'js-yaml';
import { parse as parseYaml } from 'yaml';
import { Settings } from 'typebox/system';
import { Value } from 'typebox/value';
import { Compile } from 'typebox/compile';
import type { TLocalizedValidationError } from 'typebox/error';
import { errorMessage, isRecord } from '../util/unknown.js';
import { ConfigSchema, type Config } from './schema.js';
import { applyRedisUrlEnv, storeChecks } from './store-checks.js';
import { clusterChecks } from './cluster-checks.js';

export class ConfigError extends Error {
  constructor(
    readonly problems: string[],
    source: string,
  ) {
    super(`invalid configuration (${source}):\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

/** Environment variables that override file keys, for containers and one-off runs. */
const ENV_KEYS: Array<{ env: string; path: string[]; kind: 'string' | 'int' | 'bool' }> = [
  { env: 'HOST', path: ['server', 'host'], kind: 'string' },
  { env: 'PORT', path: ['server', 'port'], kind: 'int' },
  { env: 'LOG_LEVEL', path: ['log', 'level'], kind: 'string' },
  { env: 'REDIS_URL', path: ['store', 'redisUrl'], kind: 'string' },
  { env: 'QGA_STORE', path: ['store', 'type'], kind: 'string' },
];

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (const key of path.slice(0, -1)) {
    const next = cur[key] ?? {};
    if (!isRecord(next)) return; // the schema check reports it
    cur[key] = next;
    cur = next;
  }
  cur[path[path.length - 1]] = value;
}

/** Apply the environment overrides; returns the config keys they set (`server.port` → `PORT`), for the problems that name them. */
function applyEnv(raw: Record<string, unknown>, env: Env, problems: string[]): Map<string, string> {
  const set = new Map<string, string>();
  for (const { env: name, path, kind } of ENV_KEYS) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    set.set(path.join('.'), name);
    if (kind === 'int') {
      if (!/^\d+$/.test(v)) {
        problems.push(`env ${name}: must be a whole number, got "${v}"`);
        continue;
      }
      setPath(raw, path, Number(v));
    } else if (kind === 'bool') {
      setPath(raw, path, v === 'true' || v === '1');
    } else {
      setPath(raw, path, v);
    }
  }
  // REDIS_URL alone means "use redis": the obvious intent of setting it.
  if (env.REDIS_URL && !env.QGA_STORE) setPath(raw, ['store', 'type'], 'redis');
  // … and wins over the file's sentinels / clusterNodes
  applyRedisUrlEnv(raw, env);
  return set;
}

function describe(err: SchemaError): string {
  const key = keyOf(err.instancePath);
  if (err.keyword === 'additionalProperties') return `${key === '(root)' ? '' : key + '.'}${err.params.additionalProperties.join(', ')}: unknown key`;
  return `${key}: ${err.message}`;
}

/** The schema compiled once (its JIT check is ~10x faster than Value.Check on 10,000 VM entries). */
let validator: { Check(value: unknown): value is Config } | undefined;
const configValidator = () => (validator ??= Compile(ConfigSchema) as unknown as { Check(value: unknown): value is Config });

/** Validate an already-parsed object (tests build configs in code through this). */
export function buildConfig(input: unknown, env: Env = {}, source = 'inline'): Config {
  const problems: string[] = [];
  const raw: Record<string, unknown> = isRecord(input) ? structuredClone(input) : {};
  const notMapping = input !== null && input !== undefined && !isRecord(input);
  if (notMapping) problems.push('(root): the configuration must be a mapping');
  const fromEnv = applyEnv(raw, env, problems);
  const withDefaults = Value.Default(ConfigSchema, raw);
  // Check first: listing errors walks the schema far more slowly (seconds for 10,000 VMs), so it
  // runs only for a config that fails (issue 14: start-up with 10,000 VMs under 2 s)
  const valid = configValidator().Check(withDefaults);
  if (!valid) {
    for (const line of schemaProblems(withDefaults)) {
      // a value the environment set is named as such (PORT=70000 is not in the file)
      const key = line.slice(0, line.indexOf(':'));
      const name = fromEnv.get(key);
      problems.push(name === undefined ? line : `${line} (set by env ${name})`);
    }
  }
  if (problems.length === 0 && valid) {
    semanticChecks(withDefaults, env, problems);
    if (problems.length === 0) return withDefaults;
    throw new ConfigError(problems, source);
  }
  // The checks across keys too, so that one run names every problem (not the schema's first, then
  // the rest once those are fixed): those that read a key the schema refused are left out, as their
  // verdict on a value of the wrong type would mislead; a check that cannot run on it says nothing.
  const refused = problems.map((line) => line.slice(0, line.indexOf(':'))).filter((key) => key !== '(root)' && !key.startsWith('env '));
  const more: string[] = [];
  if (!notMapping) {
    try {
      semanticChecks(withDefaults as Config, env, more);
    } catch {
      // a value of the wrong type somewhere the check reads: the schema's problems say why
    }
  }
  const readsRefused = (line: string): boolean => refused.some((key) => line.includes(key));
  throw new ConfigError([...problems, ...more.filter((line) => !readsRefused(line))], source);
}

/** One error of Value.Errors: a union on `keyword`, each keyword with its own `params`. */
type SchemaError = TLocalizedValidationError;
type ConstError = Extract<SchemaError, { keyword: 'const' }>;

const isConstError = (e: SchemaError): e is ConstError => e.keyword === 'const';

/**
 * Every schema error, one line each. TypeBox stops at Settings.maxErrors (8 by default), which one
 * bad union alone can use up, so the limit is lifted for this one-off check; and a union's branch
 * errors are folded: an enum-like union becomes "must be one of …", a tagged one (endpoint) reports
 * only the branch the value comes closest to.
 */
function schemaProblems(value: unknown): string[] {
  const before = Settings.Get().maxErrors;
  Settings.Set({ maxErrors: 10_000 });
  let errors: SchemaError[];
  try {
    errors = Value.Errors(ConfigSchema, value);
  } finally {
    Settings.Set({ maxErrors: before });
  }
  // the same union schema fails once per array item: a union is its schema path AND its value path
  const unions = errors.filter((e) => e.keyword === 'anyOf');
  const unionOf = (e: SchemaError): SchemaError | undefined =>
    unions.find((u) => e.schemaPath.startsWith(`${u.schemaPath}/anyOf/`) && (e.instancePath === u.instancePath || e.instancePath.startsWith(`${u.instancePath}/`)));
  const kept: SchemaError[] = [];
  const lines: string[] = [];
  for (const e of errors) if (e.keyword !== 'anyOf' && !unionOf(e)) kept.push(e);
  for (const union of unions) {
    const branches = new Map<string, SchemaError[]>();
    for (const e of errors) {
      if (unionOf(e) !== union) continue;
      const branch = e.schemaPath.slice(union.schemaPath.length + '/anyOf/'.length).split('/')[0];
      branches.set(branch, [...(branches.get(branch) ?? []), e]);
    }
    const all = [...branches.values()];
    const consts = all.flat().filter(isConstError).filter((e) => e.instancePath === union.instancePath);
    if (consts.length === all.flat().length) {
      const allowed = consts.map((e) => String(e.params.allowedValue));
      lines.push(`${keyOf(union.instancePath)}: must be one of ${allowed.join(', ')}`);
      continue;
    }
    // the branch whose tag (a const member) matched, else the one with the fewest complaints
    const best = [...all].sort((a, b) => Number(a.some((e) => e.keyword === 'const')) - Number(b.some((e) => e.keyword === 'const')) || a.length - b.length)[0] ?? [];
    kept.push(...best);
  }
  for (const e of kept) {
    if (e.keyword === 'boolean') continue; // the additionalProperties error says it better
    lines.push(describe(e));
  }
  return [...new Set(lines)];
}

function keyOf(instancePath: string): string {
  return instancePath.replace(/^\//, '').replace(/\//g, '.') || '(root)';
}

function semanticChecks(c: Config, env: Env, problems: string[]): void {
  const names = new Set<string>();
  c.vms.forEach((vm, i) => {
    if (names.has(vm.name)) problems.push(`vms.${i}.name: duplicate VM name "${vm.name}"`);
    names.add(vm.name);
  });
  c.registry.allowedSocketRoots?.forEach((root, i) => {
    if (!isAbsolute(root)) problems.push(`registry.allowedSocketRoots.${i}: "${root}" must be an absolute path`);
  });
  c.registry.allowedTcpEndpoints.forEach((entry, i) => {
    const port = entry.slice(entry.lastIndexOf(':') + 1);
    if (port !== '*' && (Number(port) < 1 || Number(port) > 65535)) problems.push(`registry.allowedTcpEndpoints.${i}: port ${port} is not 1-65535 (or * for any)`);
  });
  storeChecks(c, problems);
  clusterChecks(c, problems);
  if (c.freeze.defaultTtlSeconds > c.freeze.maxTtlSeconds) problems.push('freeze.defaultTtlSeconds: must not exceed freeze.maxTtlSeconds');
  if (c.freeze.maxTtlSeconds > c.freeze.maxTotalSeconds) problems.push('freeze.maxTtlSeconds: must not exceed freeze.maxTotalSeconds');
  if (c.server.requestTimeoutMs > 0 && c.server.headersTimeoutMs > c.server.requestTimeoutMs) problems.push('server.headersTimeoutMs: must not exceed server.requestTimeoutMs');
  if (c.agent.backoffInitialMs > c.agent.backoffMaxMs) problems.push('agent.backoffInitialMs: must not exceed agent.backoffMaxMs');
  c.auth.tokens.forEach((t, i) => {
    const given = [t.token, t.tokenEnv, t.tokenFile, t.tokenSha256].filter((x) => x !== undefined).length;
    if (given !== 1) problems.push(`auth.tokens.${i}: exactly one of token, tokenEnv, tokenFile, tokenSha256 is required`);
    if (t.tokenEnv !== undefined) {
      const v = env[t.tokenEnv];
      if (!v) problems.push(`auth.tokens.${i}.tokenEnv: environment variable ${t.tokenEnv} is not set`);
      else if (v.trim().length < 16) problems.push(`auth.tokens.${i}.tokenEnv: the token in ${t.tokenEnv} is shorter than 16 characters`);
    }
    if (t.tokenFile !== undefined) {
      let v = '';
      try {
        v = readFileSync(t.tokenFile, 'utf8').trim();
      } catch (e) {
        problems.push(`auth.tokens.${i}.tokenFile: cannot read ${t.tokenFile}: ${errnoCode(e) ?? errorMessage(e)}`);
      }
      if (v && v.length < 16) problems.push(`auth.tokens.${i}.tokenFile: the token in ${t.tokenFile} is shorter than 16 characters`);
    }
  });
  for (const key of ['cert', 'key'] as const) {
    const f = c.server.tls?.[key];
    if (f === undefined) continue;
    try {
      accessSync(f, constants.R_OK);
    } catch (e) {
      problems.push(`server.tls.${key}: cannot read ${f}: ${errnoCode(e) ?? errorMessage(e)}`);
    }
  }
  // one file-read chunk (base64 is 4/3 of it, plus the JSON around it) must fit in one reply line
  const readReply = Math.ceil(c.files.readChunkBytes / 3) * 4 + 4096;
  if (readReply > c.agent.maxReplyBytes) {
    problems.push(`files.readChunkBytes: a ${c.files.readChunkBytes}-byte read is a ${readReply}-byte reply, above agent.maxReplyBytes (${c.agent.maxReplyBytes})`);
  }
  const rawReply = Math.ceil(c.files.maxRawReadBytes / 3) * 4 + 4096;
  if (rawReply > c.agent.maxReplyBytes) {
    problems.push(`files.maxRawReadBytes: a ${c.files.maxRawReadBytes}-byte read is a ${rawReply}-byte reply, above agent.maxReplyBytes (${c.agent.maxReplyBytes})`);
  }
  if (c.agent.maxBufferedBytes < c.agent.maxReplyBytes) {
    problems.push(`agent.maxBufferedBytes: ${c.agent.maxBufferedBytes} is below agent.maxReplyBytes (${c.agent.maxReplyBytes}); one largest reply must fit in the budget`);
  }
  if (c.auth.tokens.length === 0 && !isLoopback(c.server.host)) {
    problems.push(`server.host: "${c.server.host}" is not loopback and no auth.tokens are configured; refusing to expose an unauthenticated gateway`);
  }
}

/** The errno code (ENOENT, EACCES, …) of a failed file-system call. */
function errnoCode(e: unknown): string | undefined {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The file name of the embedded store's leases inside the state directory. */
export const STATE_FILE_NAME = 'freeze-leases.json';

function writable(dir: string): boolean {
  // an existing directory must be writable; a missing one, creatable in its parent
  let d = dir;
  while (!existsSync(d)) {
    const up = dirname(d);
    if (up === d) return false;
    d = up;
  }
  try {
    accessSync(d, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Where the gateway keeps its state (the embedded store's leases), first match:
 * $QGA_GATEWAY_STATE_DIR, $STATE_DIRECTORY (systemd StateDirectory=; the first of a
 * colon-separated list), /var/lib/qga-gateway when writable (or creatable), else
 * $XDG_STATE_HOME/qga-gateway, else ~/.local/state/qga-gateway. Always absolute.
 */
export function defaultStateDir(env: Env = process.env): string {
  if (env.QGA_GATEWAY_STATE_DIR) return resolve(env.QGA_GATEWAY_STATE_DIR);
  const systemd = env.STATE_DIRECTORY?.split(':')[0];
  if (systemd) return resolve(systemd);
  if (writable('/var/lib/qga-gateway')) return '/var/lib/qga-gateway';
  if (env.XDG_STATE_HOME && isAbsolute(env.XDG_STATE_HOME)) return join(env.XDG_STATE_HOME, 'qga-gateway');
  return join(env.HOME || homedir(), '.local', 'state', 'qga-gateway');
}

/**
 * The embedded store always persists its leases: an unset freeze.stateFile becomes
 * `<defaultStateDir>/freeze-leases.json`, a relative one is made absolute (against the working
 * directory), so the file does not move with a later chdir and is logged as it is used. With
 * Redis the same path names the journal of the leases the process holds, `<stateFile>.held`
 * (freeze/held-journal.ts).
 */
export function withStateFile(c: Config, env: Env = process.env): Config {
  const stateFile = c.freeze.stateFile ? resolve(c.freeze.stateFile) : join(defaultStateDir(env), STATE_FILE_NAME);
  return { ...c, freeze: { ...c.freeze, stateFile } };
}

/**
 * Load from a YAML file (or none) plus the environment, with the state file resolved
 * (withStateFile). Throws ConfigError.
 */
export function loadConfig(file: string | undefined, env: Env = process.env): Config {
  return withStateFile(loadRaw(file, env), env);
}

/**
 * js-yaml (YAML 1.2 core schema: no timestamps, merge keys or binary) is about ten times faster
 * than the yaml package on a config listing 10,000 VMs (0.3 s against 2.6 s; issue 14 start-up);
 * a document it refuses is parsed again by the yaml package, whose error message is reported.
 */
function parseYamlFile(text: string): unknown {
  try {
    return loadYamlFast(text, { schema: CORE_SCHEMA });
  } catch {
    return parseYaml(text);
  }
}

/**
 * A YAML syntax error without the excerpt of the file the parsers add (the lines around the error,
 * which may hold a token or a password: this goes to stderr and, on a reload, to the log).
 */
function yamlProblem(e: unknown): string {
  const err = e as { message?: unknown; reason?: unknown; mark?: { line?: unknown; column?: unknown } };
  // yaml: "<what> at line L, column C:\n\n<excerpt>"
  if (typeof err.message === 'string' && (e as { name?: unknown }).name === 'YAMLParseError') return err.message.split('\n')[0].replace(/:$/, '');
  // js-yaml: reason, and a 0-based mark
  if (typeof err.reason === 'string' && typeof err.mark?.line === 'number' && typeof err.mark.column === 'number') {
    return `${err.reason} at line ${err.mark.line + 1}, column ${err.mark.column + 1}`;
  }
  return 'the file is not valid YAML';
}

function loadRaw(file: string | undefined, env: Env): Config {
  if (!file) return buildConfig({}, env, 'defaults + environment');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([`cannot read ${file}: ${errorMessage(e)}`], file);
  }
  let doc: unknown;
  try {
    doc = parseYamlFile(text);
  } catch (e) {
    throw new ConfigError([`YAML syntax: ${yamlProblem(e)}`], file);
  }
  return buildConfig(doc ?? {}, env, file);
}
