/**
 * The command line's user errors, as child processes (issue 16 item 1): each is ONE line on stderr
 * (no stack frame), with exit 2 for usage and configuration errors and 1 for runtime failures (a
 * port in use, a port not allowed). Also: --help, --version, check-config's masked output,
 * `token new` whose tokenSha256 entry the gateway accepts, and HTTPS with the certificate swapped
 * on SIGHUP.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../e2e/freeze-gateways.js';
import { makeApp } from '../helpers/app.js';
import { waitFor } from '../integration/freeze-fixture.js';
import { bundleCli, ROOT, type CliBundle } from './bundle.js';

const DIR = mkdtempSync(path.join(os.tmpdir(), 'qga-cli-'));
let bundle: CliBundle;
beforeAll(() => {
  bundle = bundleCli();
});
afterAll(() => {
  bundle?.remove();
  rmSync(DIR, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

const CLEAN_ENV = { QGA_GATEWAY_CONFIG: '', HOST: '', PORT: '', REDIS_URL: '', QGA_STORE: '', LOG_LEVEL: '', QGA_GATEWAY_STATE_DIR: path.join(DIR, 'state') };

function cli(args: string[], opts: { env?: Record<string, string>; uid?: number; entry?: 'server' } = {}): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [opts.entry === 'server' ? bundle.server : bundle.cli, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...CLEAN_ENV, ...opts.env },
      ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** stderr's lines, all of them: a process warning from a dependency counts too (the user sees it) */
const ownLines = (stderr: string): string[] => stderr.split('\n').filter((l) => l.length > 0);

function expectOneLine(r: Result, code: number, re: RegExp): void {
  const lines = ownLines(r.stderr);
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^qga-gateway: /);
  expect(lines[0]).toMatch(re);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(r.code, r.stderr).toBe(code);
}

function file(name: string, text: string): string {
  const f = path.join(DIR, name);
  writeFileSync(f, text);
  return f;
}

const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

describe('qga-gateway command line', { timeout: 60_000 }, () => {
  it('usage and configuration errors: one line each, exit 2', async () => {
    const invalid = file('invalid.yaml', 'server: { port: "eighty", colour: blue }\nlog: { level: loud }\n');
    const broken = file('broken.yaml', 'server: [\n');
    const cases: Array<[string[], RegExp, Record<string, string>?]> = [
      [['--bogus'], /^qga-gateway: serve: unknown option --bogus \(see qga-gateway serve --help\)$/],
      [['frobnicate'], /^qga-gateway: unknown command "frobnicate" \(commands: serve, check-config, token, freeze-run; see qga-gateway --help\)$/],
      [['serve', '--config'], /^qga-gateway: serve: option --config needs a value/],
      [['serve', 'extra'], /^qga-gateway: serve: unexpected argument extra/],
      [['serve', '--config', path.join(DIR, 'missing.yaml')], /cannot read .*missing\.yaml: ENOENT/],
      [['serve', '--config', DIR], /cannot read .*: EISDIR/],
      [['serve', '--config', invalid], /^qga-gateway: invalid configuration \(.*invalid\.yaml\): .*server\.colour: unknown key.*server\.port: must be integer|server\.port: must be integer.*server\.colour: unknown key/],
      [['serve', '--config', broken], /invalid configuration \(.*broken\.yaml\): YAML syntax: /],
      [['serve'], /env PORT: must be a whole number, got "http"/, { PORT: 'http' }],
      [['check-config', file('empty.yaml', '{}\n')], /server\.port: must be <= 65535 \(set by env PORT\)/, { PORT: '70000' }],
      [['token', 'new', '--name', 'x\ny: 1'], /^qga-gateway: token: --name must hold no control characters/],
      [['token', 'new', '--name', 'x\u0085y'], /^qga-gateway: token: --name must hold no control characters/],
      [['token', 'new', '--name', 'x\u2028y'], /^qga-gateway: token: --name must hold no control characters .*U\+2028/],
      [['check-config', file('ls-name.yaml', 'auth:\n  tokens:\n    - { name: "a\\u2029b", tokenSha256: "' + 'b'.repeat(64) + '", scopes: [read] }\n')], /auth\.tokens\.0\.name: must match pattern/],
      [['check-config', file('nel-name.yaml', 'auth:\n  tokens:\n    - { name: "a\\x85b", tokenSha256: "' + 'b'.repeat(64) + '", scopes: [read] }\n')], /auth\.tokens\.0\.name: must match pattern/],
      [['check-config', file('nl-name.yaml', 'auth:\n  tokens:\n    - { name: "a\\nb", tokenSha256: "' + 'b'.repeat(64) + '", scopes: [read] }\n')], /auth\.tokens\.0\.name: must match pattern/],
      [['check-config'], /^qga-gateway: check-config: expected exactly one FILE/],
      [['check-config', invalid], /log\.level: must be one of/],
      [['check-config', file('tls.yaml', 'server: { tls: { cert: /nonexistent/c.pem, key: /nonexistent/k.pem } }\n')], /^qga-gateway: invalid configuration \(.*tls\.yaml\): server\.tls\.cert: cannot read \/nonexistent\/c\.pem: ENOENT; server\.tls\.key: cannot read/],
      [['check-config', file('both.yaml', `auth:\n  tokens:\n    - { name: a, token: abcdefghijklmnopqrstu, tokenSha256: "${'b'.repeat(64)}", scopes: [read] }\n`)], /auth\.tokens\.0: exactly one of token, tokenEnv, tokenFile, tokenSha256 is required/],
      [['check-config', file('short-hash.yaml', 'auth:\n  tokens:\n    - { name: a, tokenSha256: "abc", scopes: [read] }\n')], /auth\.tokens\.0\.tokenSha256: must match pattern/],
      [['check-config', file('garbage-tls.yaml', `server: { tls: { cert: ${file('garbage.pem', 'not a certificate\n')}, key: ${path.join(DIR, 'garbage.pem')} } }\n`)], /server\.tls: .*garbage\.pem are not a usable PEM certificate and key/],
      [['serve', '--config', path.join(DIR, 'garbage-tls.yaml')], /^qga-gateway: invalid configuration \(.*garbage-tls\.yaml\): server\.tls: .*garbage\.pem are not a usable PEM certificate and key/],
      [['--version', '--bogus'], /^qga-gateway: --version takes no arguments, got "--bogus"/],
      [['token'], /^qga-gateway: token: the only subcommand is "token new"/],
      [['token', 'new', '--scopes', 'root'], /^qga-gateway: token: unknown scope root/],
    ];
    const results = await Promise.all(cases.map(([args, , env]) => cli(args, { env })));
    results.forEach((r, i) => expectOneLine(r, 2, cases[i]![1]));
  });

  it('a port in use: one line naming EADDRINUSE, exit 1; so does the old entry src/server.ts', async () => {
    const blocker = net.createServer();
    const port = await new Promise<number>((r) => blocker.listen(0, '127.0.0.1', () => r((blocker.address() as net.AddressInfo).port)));
    try {
      // each its own state directory: one gateway process per state file (lockStateFile)
      const [a, b] = await Promise.all([
        cli(['serve'], { env: { PORT: String(port), QGA_GATEWAY_STATE_DIR: path.join(DIR, 'port-a') } }),
        cli([], { env: { PORT: String(port), QGA_GATEWAY_STATE_DIR: path.join(DIR, 'port-b') }, entry: 'server' }),
      ]);
      for (const r of [a, b]) expectOneLine(r, 1, new RegExp(`^qga-gateway: cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use \\(EADDRINUSE\\)`));
    } finally {
      blocker.close();
    }
  });

  it('an unwritable freeze.stateFile (embedded store): serve refuses to start in one line naming the path and the OS error (exit 1), check-config too (exit 2); Redis does not need it', async () => {
    const cfg = file('bad-state.yaml', stringify({ server: { port: 0 }, freeze: { stateFile: '/etc/hostname/leases.json' } }));
    const redisCfg = file('bad-state-redis.yaml', stringify({ store: { type: 'redis', redisUrl: 'redis://127.0.0.1:1' }, freeze: { stateFile: '/etc/hostname/leases.json' } }));
    const [serve, check, redis] = await Promise.all([cli(['serve', '--config', cfg]), cli(['check-config', cfg]), cli(['check-config', redisCfg])]);
    const line = /^qga-gateway: cannot write the freeze lease state file \/etc\/hostname\/leases\.json \(freeze\.stateFile\): ENOTDIR: \/etc\/hostname is not a directory$/;
    expectOneLine(serve, 1, line);
    expect(serve.stdout).not.toMatch(/qga-gateway ready/);
    expectOneLine(check, 2, line);
    expect(redis.code, redis.stderr).toBe(0);
  });

  it('a damaged state file (empty, truncated, {}, a directory): serve refuses to start in one line naming it (exit 1), check-config too (exit 2)', async () => {
    const cases: Array<[string, (f: string) => void, RegExp]> = [
      ['empty', (f) => writeFileSync(f, ''), /is damaged: it is empty/],
      ['truncated', (f) => writeFileSync(f, '{"epoch":"e1","lastFence":3,"sessions":[{"session":"vm:a"'), /is damaged: not JSON/],
      ['object', (f) => writeFileSync(f, '{}'), /is damaged: "epoch" is missing or not a string/],
      ['directory', (f) => mkdirSync(f), /cannot be read: EISDIR/],
    ];
    for (const [name, make, why] of cases) {
      const stateFile = path.join(DIR, `damaged-${name}`, 'leases.json');
      mkdirSync(path.dirname(stateFile), { recursive: true });
      make(stateFile);
      const cfg = file(`damaged-${name}.yaml`, stringify({ server: { port: 0 }, freeze: { stateFile } }));
      const [serve, check] = await Promise.all([cli(['serve', '--config', cfg]), cli(['check-config', cfg])]);
      const line = new RegExp(`^qga-gateway: the freeze lease state file ${stateFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(freeze\\.stateFile\\) ${why.source}.*the gateway does not start without the leases`);
      expectOneLine(serve, 1, line);
      expect(serve.stdout).not.toMatch(/qga-gateway ready/);
      expectOneLine(check, 2, line);
    }
  });

  it('one gateway process per state file: a second one refuses to start naming the first (exit 1); the lock of a killed one is taken over', async () => {
    const stateFile = path.join(DIR, 'shared-state', 'leases.json');
    const cfg = file('shared-state.yaml', stringify({ server: { port: 0 }, freeze: { stateFile } }));
    const start = () => {
      const child = spawn(process.execPath, [bundle.cli, 'serve', '--config', cfg], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...CLEAN_ENV } });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      return { child, exited, ready: () => waitFor(() => /qga-gateway ready/.test(out), 30_000, 'the gateway to start') };
    };
    const first = start();
    try {
      await first.ready();
      expect(readFileSync(`${stateFile}.lock`, 'utf8').trim()).toBe(String(first.child.pid));
      const second = await cli(['serve', '--config', cfg]);
      expectOneLine(second, 1, new RegExp(`is in use by another gateway process \\(pid ${first.child.pid},.*Give each its own freeze\\.stateFile`));
    } finally {
      first.child.kill('SIGKILL');
      await first.exited;
    }
    /** a gateway starts on the state file, holds its lock, and stops cleanly */
    const takesOver = async () => {
      const next = start();
      try {
        await next.ready();
        expect(readFileSync(`${stateFile}.lock`, 'utf8').trim()).toBe(String(next.child.pid));
      } finally {
        next.child.kill('SIGTERM');
        await next.exited;
      }
    };
    // killed: its lock stays behind, and the next gateway takes it over
    expect(existsSync(`${stateFile}.lock`)).toBe(true);
    await takesOver();
    // a clean stop takes its lock away
    expect(existsSync(`${stateFile}.lock`)).toBe(false);
    // a lock whose pid now runs something else (not node), or written before this boot (a state
    // directory kept across a reboot, the pid reused): stale, taken over
    const sleeper = spawn('sleep', ['30']);
    try {
      for (const [pid, beforeBoot] of [[sleeper.pid!, false], [process.pid, true]] as const) {
        writeFileSync(`${stateFile}.lock`, `${pid}\n`);
        if (beforeBoot) utimesSync(`${stateFile}.lock`, 1, 1);
        await takesOver();
      }
    } finally {
      sleeper.kill();
    }
  });

  it('a port that needs privileges: one line naming EACCES, exit 1', async () => {
    const asRoot = process.getuid?.() === 0;
    // root may bind port 80: the gateway then runs as nobody (65534), as an unprivileged user would
    const r = await cli(['serve'], { env: { PORT: '80', QGA_GATEWAY_STATE_DIR: path.join(os.tmpdir(), `qga-cli-nobody-${process.pid}`) }, ...(asRoot ? { uid: 65534 } : {}) });
    expectOneLine(r, 1, /^qga-gateway: cannot listen on 127\.0\.0\.1:80: permission denied \(EACCES\); ports below 1024 need root or CAP_NET_BIND_SERVICE$/);
    if (asRoot) {
      // a configuration file the user may not read: a configuration error (exit 2), one line
      const secret = file('root-only.yaml', 'server: { port: 8080 }\n');
      chmodSync(secret, 0o600);
      chmodSync(DIR, 0o755);
      const denied = await cli(['serve', '--config', secret], { uid: 65534 });
      expectOneLine(denied, 2, /cannot read .*root-only\.yaml: EACCES: permission denied/);
    }
  });

  it('serve --pretty: human-readable log lines instead of JSON (stdout is a pipe here)', async () => {
    const cfg = file('pretty.yaml', stringify({ server: { port: 0 }, freeze: { stateFile: path.join(DIR, 'pretty-state', 'leases.json') } }));
    for (const [args, json] of [[['--config', cfg], true], [['serve', '--pretty', '--config', cfg], false]] as const) {
      const child = spawn(process.execPath, [bundle.cli, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...CLEAN_ENV } });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      try {
        await waitFor(() => /qga-gateway ready/.test(out), 30_000, 'the gateway to start');
        const line = out.split('\n').find((l) => l.includes('qga-gateway ready'))!;
        if (json) expect(JSON.parse(line)).toMatchObject({ msg: 'qga-gateway ready', level: 30 });
        else {
          expect(line.startsWith('{')).toBe(false);
          expect(line).toMatch(/INFO.*qga-gateway ready/);
        }
      } finally {
        child.kill('SIGTERM');
        await exited;
      }
    }
  });

  it('--help and --version', async () => {
    const [help, version, serveHelp, runHelp, legacyVersion] = await Promise.all([
      cli(['--help']),
      cli(['--version']),
      cli(['serve', '--help']),
      cli(['freeze-run', '--help']),
      cli(['--version'], { entry: 'server' }),
    ]);
    expect(help.code).toBe(0);
    for (const c of ['serve', 'check-config', 'token new', 'freeze-run', '--version', 'Exit codes']) expect(help.stdout).toContain(c);
    expect(version.code).toBe(0);
    expect(version.stdout).toBe(`${VERSION}\n`);
    expect(legacyVersion.stdout).toBe(`${VERSION}\n`);
    expect(serveHelp.code).toBe(0);
    expect(serveHelp.stdout).toMatch(/^Usage: qga-gateway \[serve\] \[--config FILE\] \[--pretty\]/);
    expect(runHelp.code).toBe(0);
    expect(runHelp.stdout).toMatch(/^Usage: qga-gateway freeze-run --url URL --vm NAME/);
  });

  it('check-config prints the effective configuration with every secret masked', async () => {
    const secretFile = file('secret-token', 'file-token-0123456789abcdef\n');
    const cfg = file(
      'full.yaml',
      stringify({
        server: { host: '0.0.0.0', port: 9000 },
        store: { type: 'redis', redisUrl: 'redis://backup:hunter2-redis-pass@redis.example:6379/0' },
        auth: {
          tokens: [
            { name: 'literal', token: 'literal-token-0123456789abcdef', scopes: ['read'] },
            { name: 'hashed', tokenSha256: 'a'.repeat(64), scopes: ['admin'] },
            { name: 'file', tokenFile: secretFile, scopes: ['write'] },
          ],
        },
      }),
    );
    const r = await cli(['check-config', cfg], { env: { LOG_LEVEL: 'debug' } });
    expect(r.code, r.stderr).toBe(0);
    expect(ownLines(r.stderr)).toEqual([`qga-gateway: ${cfg}: configuration is valid`]);
    for (const secret of ['literal-token-0123456789abcdef', 'a'.repeat(64), 'hunter2-redis-pass', 'file-token-0123456789abcdef']) expect(r.stdout).not.toContain(secret);
    const doc = parse(r.stdout) as Record<string, Record<string, unknown>>;
    expect(doc.store!.redisUrl).toBe('redis://backup:********@redis.example:6379/0');
    expect(doc.auth!.tokens).toEqual([
      { name: 'literal', token: '********', scopes: ['read'] },
      { name: 'hashed', tokenSha256: '********', scopes: ['admin'] },
      { name: 'file', tokenFile: secretFile, scopes: ['write'] },
    ]);
    // defaults and the environment are applied
    expect(doc.log!.level).toBe('debug');
    expect(doc.server!.port).toBe(9000);
    expect(doc.server!.shutdownGraceMs).toBe(10_000);
  });

  it('token new: its tokenSha256 entry lets the token in, and only that token', async () => {
    const r = await cli(['token', 'new', '--name', 'ci', '--scopes', 'read,write']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    const token = lines[1]!;
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const entries = parse(lines.slice(2).join('\n')) as Array<{ name: string; tokenSha256: string; scopes: string[] }>;
    expect(entries).toEqual([{ name: 'ci', tokenSha256: createHash('sha256').update(token).digest('hex'), scopes: ['read', 'write'] }]);
    const app = await makeApp({ config: { auth: { tokens: entries, anonymousScopes: ['read'] } } });
    try {
      const ok = await app.inject({ url: '/v1/vms', headers: { authorization: `Bearer ${token}` } });
      const wrong = await app.inject({ url: '/v1/vms', headers: { authorization: `Bearer ${token.slice(0, -1)}x` } });
      const none = await app.inject({ url: '/v1/vms' });
      expect([ok.statusCode, wrong.statusCode, none.statusCode]).toEqual([200, 401, 401]);
    } finally {
      await app.close();
    }
  });

  it('a SIGHUP while starting (systemctl reload right after start) is held and applied once it listens, not the end of the process', async () => {
    const port = await freePort();
    const stateFile = path.join(DIR, 'hup-state', 'leases.json');
    const cfg = file('hup-serve.yaml', stringify({ server: { port }, log: { level: 'info' }, freeze: { stateFile } }));
    const child = spawn(process.execPath, [bundle.cli, 'serve', '--config', cfg], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...CLEAN_ENV } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    let exit: number | string | null | undefined;
    const exited = new Promise((r) => child.once('exit', (code, signal) => r((exit = code ?? signal))));
    try {
      // the state file's lock is taken early in serve, well before the gateway listens
      await waitFor(() => existsSync(`${stateFile}.lock`), 30_000, 'the state file lock');
      expect(out).not.toMatch(/qga-gateway ready/);
      child.kill('SIGHUP');
      await waitFor(() => /qga-gateway ready/.test(out) || exit !== undefined, 30_000, 'the gateway to start');
      expect(exit, out).toBeUndefined();
      await waitFor(() => /configuration reloaded \(SIGHUP\)/.test(out), 10_000, 'the held reload');
      expect(out).toMatch(/SIGHUP received while starting/);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('server.tls: HTTPS, and SIGHUP swaps the certificate for new connections', async () => {
    const cert = path.join(DIR, 'cert.pem');
    const key = path.join(DIR, 'key.pem');
    const selfSigned = (cn: string): string => {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${cn}`, '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
      return readFileSync(cert, 'utf8');
    };
    const first = selfSigned('first');
    const port = await freePort();
    const cfg = file('tls-serve.yaml', stringify({ server: { port, tls: { cert, key } }, log: { level: 'info' }, freeze: { stateFile: path.join(DIR, 'tls-state', 'leases.json') } }));
    const child = spawn(process.execPath, [bundle.cli, 'serve', '--config', cfg], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...CLEAN_ENV } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => child.once('exit', r));
    /** GET /healthz over HTTPS trusting only `ca`; the status and the served certificate's CN */
    const get = (ca: string): Promise<{ status: number; cn: string }> =>
      new Promise((resolve, reject) => {
        const req = https.get({ host: '127.0.0.1', port, path: '/healthz', ca, agent: false, timeout: 5_000 }, (res) => {
          const peer = res.socket as unknown as { getPeerX509Certificate(): X509Certificate };
          const cn = peer.getPeerX509Certificate().subject;
          res.resume();
          res.once('end', () => resolve({ status: res.statusCode ?? 0, cn }));
        });
        req.once('error', reject);
      });
    try {
      await waitFor(() => /qga-gateway ready/.test(out), 30_000, 'the HTTPS gateway to start');
      expect(out).toMatch(/"tls":true/);
      expect(await get(first)).toEqual({ status: 200, cn: 'CN=first' });
      // plain HTTP on the same port gets no answer from the gateway
      await expect(fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(3_000) })).rejects.toThrow();
      const second = selfSigned('second');
      child.kill('SIGHUP');
      await waitFor(() => /configuration reloaded \(SIGHUP\)/.test(out), 10_000, 'the reload');
      expect(out).toMatch(/"tls":"reloaded"/);
      expect(await get(second)).toEqual({ status: 200, cn: 'CN=second' });
      await expect(get(first)).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
      // a key that cannot be read: the reload fails in one log line and the certificate stays
      rmSync(key);
      child.kill('SIGHUP');
      await waitFor(() => /configuration reload \(SIGHUP\) failed/.test(out), 10_000, 'the failed reload');
      expect(out).toMatch(/server\.tls\.key: cannot read/);
      expect(await get(second)).toEqual({ status: 200, cn: 'CN=second' });
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
