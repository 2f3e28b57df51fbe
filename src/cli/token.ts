/**
 * `qga-gateway token new [--name NAME] [--scopes LIST]`: a new random API token (256 bits,
 * base64url) and the config entry that accepts it by its SHA-256 (auth.tokens[].tokenSha256), so
 * the config file holds no secret.
 */
import { createHash, randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { ScopeSchema, TOKEN_NAME_PATTERN, type Scope } from '../config/schema.js';
import { parseOptions, usageError } from './common.js';

export const TOKEN_HELP = `Usage: qga-gateway token new [--name NAME] [--scopes read,write,admin]

Print a new random token (for the client) and the auth.tokens entry with its tokenSha256 (for the
gateway's configuration). The token itself is shown once and stored nowhere.
  --name NAME       the token's name in logs and audit records (default: client)
  --scopes LIST     comma-separated scopes of the entry (default: read)`;

const SCOPES: readonly string[] = ScopeSchema.anyOf.map((s) => String(s.const));

export function newToken(): { token: string; sha256: string } {
  const token = randomBytes(32).toString('base64url');
  return { token, sha256: createHash('sha256').update(token).digest('hex') };
}

export function token(args: string[]): number {
  const { values, positionals } = parseOptions('token', args, { name: { type: 'string' }, scopes: { type: 'string' } }, true);
  if (positionals.length !== 1 || positionals[0] !== 'new') throw usageError('token: the only subcommand is "token new" (see qga-gateway token --help)');
  const name = values.name ?? 'client';
  if (name.length < 1 || name.length > 64) throw usageError('token: --name must be 1 to 64 characters');
  if (!new RegExp(TOKEN_NAME_PATTERN).test(name)) throw usageError('token: --name must hold no control characters (newline, tab, NEL…) nor U+2028/U+2029 line separators');
  const scopes = (values.scopes ?? 'read').split(',').map((s) => s.trim());
  const bad = scopes.filter((s) => !SCOPES.includes(s));
  if (bad.length > 0 || scopes.length === 0) throw usageError(`token: unknown scope ${bad.join(', ')} (scopes: ${SCOPES.join(', ')})`);
  const t = newToken();
  process.stdout.write(
    `# the token, for the client (Authorization: Bearer …); shown once, stored nowhere:\n${t.token}\n` +
      `# the entry for auth.tokens in the gateway's configuration:\n` +
      stringify([{ name, tokenSha256: t.sha256, scopes: [...new Set(scopes)] as Scope[] }]),
  );
  return 0;
}
