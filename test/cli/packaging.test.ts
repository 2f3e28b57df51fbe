/**
 * Packaging (issue 16 item 5), checked without Docker or a running systemd (neither works on these
 * machines): the Dockerfile passes dockerfile-utils' linter with every rule an error, and its
 * HEALTHCHECK command really tells a ready gateway from a closed port; the systemd unit passes
 * `systemd-analyze verify`; contrib/docker-compose.yml agrees with the configuration schema.
 */
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { validate, ValidationSeverity } from 'dockerfile-utils';
import { parse } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { DEFAULT_SOCKET_ROOTS } from '../../src/config/schema.js';
import { listen, makeApp } from '../helpers/app.js';
import { freePort } from '../e2e/freeze-gateways.js';
import { ROOT } from './bundle.js';

const run = promisify(execFile);
const DIR = mkdtempSync(path.join(os.tmpdir(), 'qga-packaging-'));
afterAll(() => rmSync(DIR, { recursive: true, force: true }));
const read = (rel: string) => readFileSync(path.join(ROOT, rel), 'utf8');

describe('Dockerfile', () => {
  const text = read('Dockerfile');

  it('passes dockerfile-utils validate with every rule set to error: zero problems', () => {
    const E = ValidationSeverity.ERROR;
    const problems = validate(text, {
      deprecatedMaintainer: E,
      directiveCasing: E,
      emptyContinuationLine: E,
      instructionCasing: E,
      instructionCmdMultiple: E,
      instructionEntrypointMultiple: E,
      instructionHealthcheckMultiple: E,
      instructionJSONInSingleQuotes: E,
      instructionWorkdirRelative: E,
    });
    expect(problems.map((p) => `${p.range.start.line + 1}: ${p.message}`)).toEqual([]);
    // the linter does find problems (it is not silently passing everything)
    expect(validate('FROM node\nHEALTHCHECK CMD\nEXPOSE port\n').length).toBe(2);
  });

  it('runs as a non-root user by default, keeps state in a volume, documents the socket mounts and the user for them', () => {
    expect(text).toMatch(/^USER node$/m);
    expect(text).toMatch(/^VOLUME \["\/var\/lib\/qga-gateway"\]$/m);
    expect(text).toMatch(/QGA_GATEWAY_STATE_DIR=\/var\/lib\/qga-gateway/);
    expect(text).toContain('-v /var/run/qemu-server:/var/run/qemu-server');
    expect(text).toContain('-v /var/lib/libvirt/qemu/channel:/var/lib/libvirt/qemu/channel');
    expect(text).toContain('--user 0:0 --cap-drop ALL');
    expect(text).toMatch(/^ENTRYPOINT \["node", "\/app\/dist\/cli\.js"\]$/m);
  });

  it('HEALTHCHECK uses node (no curl in slim images) and exits 0 for a ready gateway, 1 for a closed port', async () => {
    const joined = text.replace(/\\\n\s*/g, ' ');
    const m = /^HEALTHCHECK .*? CMD (\[.*\])$/m.exec(joined);
    expect(m).not.toBeNull();
    const argv = JSON.parse(m![1]!) as string[];
    expect(argv.slice(0, 2)).toEqual(['node', '-e']);
    expect(argv[2]).toContain('/readyz');
    expect(m![0]).not.toMatch(/curl|wget/);
    const app = await makeApp();
    try {
      const port = new URL(await listen(app)).port;
      const closed = String(await freePort());
      const probe = (env: Record<string, string>) =>
        run(process.execPath, argv.slice(1), { env: { ...process.env, QGA_HEALTHCHECK_URL: '', ...env }, timeout: 15_000 }).then(
          () => 0,
          (e: { code?: number }) => e.code ?? -1,
        );
      expect(await probe({ PORT: port })).toBe(0);
      expect(await probe({ PORT: closed })).toBe(1);
      expect(await probe({ QGA_HEALTHCHECK_URL: `http://127.0.0.1:${port}/readyz` })).toBe(0);
    } finally {
      await app.close();
    }
  });
});

describe('contrib/qga-gateway.service', () => {
  const unit = read('contrib/qga-gateway.service');

  it('passes systemd-analyze verify (the command of ExecStart pointed at an existing qga-gateway)', () => {
    expect(spawnSync('systemd-analyze', ['--version']).status, 'systemd-analyze is missing: npm run pretest installs Debian\'s systemd package').toBe(0);
    // the unit names /usr/local/bin/qga-gateway (npm install -g); verify checks that the binary
    // exists, so the copy points at a stand-in that runs this checkout's CLI, nothing else changed
    const bin = path.join(DIR, 'qga-gateway');
    writeFileSync(bin, `#!/bin/sh\nexec ${process.execPath} --import tsx ${path.join(ROOT, 'src', 'cli.ts')} "$@"\n`);
    chmodSync(bin, 0o755);
    const copy = path.join(DIR, 'qga-gateway.service');
    expect(unit.match(/^ExecStart=\/usr\/local\/bin\/qga-gateway /gm)).toHaveLength(1);
    writeFileSync(copy, unit.replace(/^ExecStart=\/usr\/local\/bin\/qga-gateway /m, `ExecStart=${bin} `));
    const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
    if (!existsSync('/usr/local/bin/qga-gateway')) {
      // the original: the missing binary is its only complaint
      const orig = spawnSync('systemd-analyze', ['verify', path.join(ROOT, 'contrib', 'qga-gateway.service')], { encoding: 'utf8' });
      expect(`${orig.stdout}${orig.stderr}`.trim()).toBe('qga-gateway.service: Command /usr/local/bin/qga-gateway is not executable: No such file or directory');
    }
  });

  it('is sandboxed, with the state directory and the socket directories allowed', () => {
    const directives = new Map<string, string[]>();
    for (const line of unit.split('\n')) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (m) directives.set(m[1]!, [...(directives.get(m[1]!) ?? []), m[2]!]);
    }
    const one = (k: string) => directives.get(k)?.join(' ');
    expect(one('ProtectSystem')).toBe('strict');
    expect(one('NoNewPrivileges')).toBe('yes');
    expect(one('CapabilityBoundingSet')).toBe('');
    expect(one('ProtectHome')).toBe('yes');
    expect(one('PrivateTmp')).toBe('yes');
    expect(one('StateDirectory')).toBe('qga-gateway');
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one('RestrictAddressFamilies')).toBe('AF_UNIX AF_INET AF_INET6');
    const writable = one('ReadWritePaths')!.split(/\s+/).map((p) => p.replace(/^-/, ''));
    for (const root of DEFAULT_SOCKET_ROOTS) expect(writable).toContain(root);
    expect(one('ExecStart')).toBe('/usr/local/bin/qga-gateway serve --config /etc/qga-gateway/config.yaml');
  });
});

describe('contrib/docker-compose.yml', () => {
  interface Service {
    image?: string;
    build?: unknown;
    command?: string[];
    environment?: Record<string, string>;
    ports?: string[];
    volumes?: string[];
    user?: string;
    cap_drop?: string[];
    healthcheck?: unknown;
  }
  const compose = parse(read('contrib/docker-compose.yml')) as { services: Record<string, Service> };
  const PASSWORD = 'compose-test-password';
  /** compose's ${VAR:?message} interpolation with REDIS_PASSWORD set */
  const interpolate = (s: string) => s.replace(/\$\{REDIS_PASSWORD(:\?[^}]*)?\}/g, PASSWORD);

  it('has a gateway and a Redis, the gateway configured for that Redis', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['qga-gateway', 'redis']);
    const gw = compose.services['qga-gateway']!;
    const env = Object.fromEntries(Object.entries(gw.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]));
    expect(new URL(env.REDIS_URL!).hostname).toBe('redis');
    expect(new URL(env.REDIS_URL!).password).toBe(PASSWORD);
    expect(interpolate(compose.services.redis!.command!.join(' '))).toContain(`--requirepass ${PASSWORD}`);
    expect(gw.ports).toEqual([`${env.PORT}:${env.PORT}`]);
    expect(gw.user).toBe('0:0');
    expect(gw.cap_drop).toEqual(['ALL']);
  });

  it('its environment and mounted configuration file validate against the schema, and every variable has an effect', () => {
    const gw = compose.services['qga-gateway']!;
    const env = Object.fromEntries(Object.entries(gw.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]));
    const mount = gw.volumes!.map((v) => v.split(':')).find(([, target]) => target === gw.command![2]);
    expect(gw.command!.slice(0, 2)).toEqual(['serve', '--config']);
    expect(mount, 'the --config file is mounted from contrib/').toBeDefined();
    const file = path.join(ROOT, 'contrib', mount![0]!);
    const config = loadConfig(file, env);
    expect(config.store.type).toBe('redis');
    expect(config.server.host).toBe('0.0.0.0');
    expect(config.server.port).toBe(Number(env.PORT));
    expect(config.auth.tokens.length).toBeGreaterThan(0);
    // a variable the gateway reads changes the config (or makes it invalid) when its value changes
    const effective = (e: Record<string, string>): string => {
      try {
        return JSON.stringify(loadConfig(file, e));
      } catch (err) {
        return `invalid: ${String(err)}`;
      }
    };
    for (const [name, value] of Object.entries(env)) {
      const other = /^\d+$/.test(value) ? String(Number(value) + 1) : `${value}x`;
      expect(effective({ ...env, [name]: other }), `${name} changes nothing the gateway reads`).not.toBe(JSON.stringify(config));
    }
    // the socket directories are mounted at the paths the gateway expects
    const targets = gw.volumes!.map((v) => v.split(':')[1]);
    expect(targets).toContain('/var/run/qemu-server');
    expect(targets).toContain('/var/lib/libvirt/qemu/channel');
    for (const t of ['/var/run/qemu-server', '/var/lib/libvirt/qemu/channel']) expect(DEFAULT_SOCKET_ROOTS).toContain(t);
  });
});
