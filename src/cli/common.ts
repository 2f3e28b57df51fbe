/**
 * What every command shares: its errors (one line on stderr and an exit code, never a stack trace),
 * option parsing that turns node:util parseArgs' errors into usage errors, and the version.
 *
 * Exit codes: 0 success; 1 a runtime failure (port in use, permission denied, a gateway that
 * refused); 2 a usage or configuration error (unknown option, unreadable or invalid config).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../config/load.js';
import { errorMessage } from '../util/unknown.js';

export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const usageError = (message: string): CliError => new CliError(message, EXIT_USAGE);
export const runtimeError = (message: string): CliError => new CliError(message, EXIT_RUNTIME);

/** a ConfigError as the usage error naming the file (the TLS check's own errors name only server.tls) */
export function configUsageError(e: ConfigError, file: string | undefined): CliError {
  return usageError(new ConfigError(e.problems, file ?? 'defaults + environment').message);
}

/** several lines (a config's problem list) folded into one */
export function oneLine(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim().replace(/^- /, ''))
    .filter((l) => l.length > 0)
    .join('; ')
    .replace(/:; /g, ': ');
}

/** the one line a failure prints, and its exit code; anything not a CliError is a runtime failure */
export function describeFailure(e: unknown): { line: string; exitCode: number } {
  if (e instanceof CliError) return { line: oneLine(e.message), exitCode: e.exitCode };
  return { line: oneLine(errorMessage(e)), exitCode: EXIT_RUNTIME };
}

export function printFailure(e: unknown, prefix = 'qga-gateway'): number {
  const { line, exitCode } = describeFailure(e);
  process.stderr.write(`${prefix}: ${line}\n`);
  return exitCode;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs (strict), its errors as usage errors naming the command */
export function parseOptions<O extends Options>(command: string, args: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals });
  } catch (e) {
    const code = e instanceof Error && 'code' in e ? String(e.code) : '';
    const msg = errorMessage(e);
    const option = /'(-[^']*)'/.exec(msg)?.[1];
    const see = `(see qga-gateway ${command} --help)`;
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw usageError(`${command}: unknown option ${option ?? msg} ${see}`);
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw usageError(`${command}: unexpected argument ${option ?? /'([^']*)'/.exec(msg)?.[1] ?? ''} ${see}`);
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const name = /(--[\w-]+)/.exec(msg)?.[1] ?? /'(-\w)/.exec(msg)?.[1];
      throw usageError(`${command}: ${name && /argument missing/.test(msg) ? `option ${name} needs a value` : msg.split('.')[0]} ${see}`);
    }
    throw usageError(`${command}: ${msg} ${see}`);
  }
}

/** package.json's version: two levels up from src/cli/ and from dist/cli/ alike */
export function packageVersion(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  try {
    const pkg = JSON.parse(readFileSync(join(here, '..', '..', 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** an errno-style code (EADDRINUSE, EACCES, ENOENT …) of a failed system call */
export function errnoCode(e: unknown): string | undefined {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}
