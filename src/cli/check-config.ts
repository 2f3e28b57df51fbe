/**
 * `qga-gateway check-config FILE`: validates FILE plus the environment exactly as `serve` would and
 * prints the effective configuration (defaults filled in, state file resolved) as YAML, with every
 * secret masked: literal tokens, token hashes, and the password of a Redis URL.
 */
import { stringify } from 'yaml';
import { ConfigError, loadConfig } from '../config/load.js';
import { readTls } from '../http/tls.js';
import { stateFileProblems } from '../store/memory-file.js';
import { configUsageError, parseOptions, usageError } from './common.js';

export const CHECK_CONFIG_HELP = `Usage: qga-gateway check-config FILE

Validate FILE (plus the environment: HOST, PORT, LOG_LEVEL, REDIS_URL, QGA_STORE) as serve would
and print the effective configuration as YAML, secrets masked.
With the embedded store it also checks that freeze.stateFile can be written (its directory is
created when missing, as serve does).
Exit codes: 0 valid; 2 unreadable or invalid, or the state file not writable (one line on stderr
naming every problem).`;

export const MASK = '********';

/** keys whose values are secrets wherever they appear */
const SECRET_KEYS = new Set(['token', 'tokensha256', 'password', 'secret']);

/** a URL's password (redis://user:pw@host) masked; anything that is not such a URL unchanged */
export function maskUrl(value: string): string {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/@:]*):([^/@]*)@/i, (_m, scheme: string, user: string) => `${scheme}${user}:${MASK}@`);
}

/** a deep copy with secrets masked */
export function maskSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskSecrets);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEYS.has(k.toLowerCase()) && v !== undefined ? MASK : maskSecrets(v);
    return out;
  }
  return typeof value === 'string' ? maskUrl(value) : value;
}

export function checkConfig(args: string[]): number {
  const { positionals } = parseOptions('check-config', args, {}, true);
  if (positionals.length !== 1) throw usageError('check-config: expected exactly one FILE (see qga-gateway check-config --help)');
  const file = positionals[0]!;
  let config;
  try {
    config = loadConfig(file);
    // what serve does with the files beyond reading them: the certificate and key must make a pair
    if (config.server.tls) readTls(config.server.tls);
    // and the embedded store's state file must be writable where it is configured
    const stateProblem = stateFileProblems(config);
    if (stateProblem) throw usageError(stateProblem);
  } catch (e) {
    if (e instanceof ConfigError) throw configUsageError(e, file);
    throw e;
  }
  process.stdout.write(`# effective configuration of ${file} (defaults and environment applied; secrets masked)\n`);
  process.stdout.write(stringify(maskSecrets(config)));
  process.stderr.write(`qga-gateway: ${file}: configuration is valid\n`);
  return 0;
}
