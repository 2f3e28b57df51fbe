/**
 * The command line: `qga-gateway [COMMAND] [OPTIONS]`. Dispatches to serve (the default),
 * check-config, token and freeze-run; prints help and the version. Every failure is one line on
 * stderr and an exit code (common.ts), never a stack trace.
 */
import { CHECK_CONFIG_HELP, checkConfig } from './check-config.js';
import { packageVersion, printFailure, usageError } from './common.js';
import { FREEZE_RUN_HELP, freezeRun } from './freeze-run.js';
import { SERVE_HELP, serve } from './serve.js';
import { TOKEN_HELP, token } from './token.js';

export const HELP = `Usage: qga-gateway [COMMAND] [OPTIONS]

HTTP/REST gateway for the QEMU Guest Agents of a fleet of VMs.

Commands:
  serve [--config FILE] [--pretty]     run the gateway (the default command)
  check-config FILE                    validate a configuration; print it (secrets masked)
  token new [--name NAME]              print a new API token and its tokenSha256 config entry
  freeze-run --url URL --vm NAME [--vm NAME …] [--ttl S] [--token-file F] -- CMD [ARGS …]
                                       freeze the VMs, run CMD, renew while it runs, thaw
Options:
  -h, --help       help (qga-gateway COMMAND --help for one command)
  -V, --version    print the version

Exit codes: 0 success; 1 runtime failure (port in use, permission denied, gateway refused);
2 usage or configuration error. freeze-run exits with CMD's status (see its --help).`;

const COMMANDS: Record<string, { help: string; run: (args: string[]) => Promise<number | undefined> | number }> = {
  serve: { help: SERVE_HELP, run: async (args) => (await serve(args), undefined) },
  'check-config': { help: CHECK_CONFIG_HELP, run: checkConfig },
  token: { help: TOKEN_HELP, run: token },
  'freeze-run': { help: FREEZE_RUN_HELP, run: freezeRun },
};

/** arguments up to a `--` (freeze-run's command is not ours to read) */
const ownArgs = (args: string[]): string[] => {
  const end = args.indexOf('--');
  return end < 0 ? args : args.slice(0, end);
};

/**
 * Runs one command line. Resolves with the exit code, or undefined when the process should keep
 * running (serve listens until a signal).
 */
export async function run(argv: string[]): Promise<number | undefined> {
  const first = argv[0];
  if (first === '--version' || first === '-V' || first === 'version') {
    if (argv.length > 1) throw usageError(`${first} takes no arguments, got "${argv[1]}" (see qga-gateway --help)`);
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  if (first === undefined || first.startsWith('-')) {
    if (first === '--help' || first === '-h' || first === 'help') {
      process.stdout.write(`${HELP}\n`);
      return 0;
    }
    return runCommand('serve', argv);
  }
  if (first === 'help') {
    const about = argv[1] ? COMMANDS[argv[1]] : undefined;
    process.stdout.write(`${about ? about.help : HELP}\n`);
    return 0;
  }
  return runCommand(first, argv.slice(1));
}

async function runCommand(name: string, args: string[]): Promise<number | undefined> {
  const command = COMMANDS[name];
  if (!command) throw usageError(`unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(', ')}; see qga-gateway --help)`);
  const own = ownArgs(args);
  if (own.includes('--help') || own.includes('-h')) {
    process.stdout.write(`${command.help}\n`);
    return 0;
  }
  return command.run(args);
}

/** The process entry: run, then exit with the code (or keep serving). */
export function main(argv: string[] = process.argv.slice(2)): void {
  run(argv).then(
    (code) => {
      if (code !== undefined) process.exit(code);
    },
    (e: unknown) => process.exit(printFailure(e)),
  );
}
