/**
 * A real redis-server with TLS and an ACL user, for tests: a self-signed CA and a server
 * certificate for 127.0.0.1/localhost made with openssl (EC P-256, valid one day) in a temp dir;
 * redis-server on a TLS port (`tls-port`; Debian's build links OpenSSL) plus a plain loopback port
 * for the test's own probes; the default user off and one ACL user `app` with a random password,
 * also written to a password file. Clients are not asked for a certificate unless a test sets
 * `tls-auth-clients yes` (a client certificate signed by the same CA is made for that).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort, rawAuthCommand, spawnRedisServer } from './redis.js';

const run = promisify(execFile);

export interface TestRedisTls {
  /** rediss://app:<password>@127.0.0.1:<tls port> */
  url: string;
  /** the same without user and password */
  bareUrl: string;
  tlsPort: number;
  username: string;
  password: string;
  /** a file holding the password (with a trailing newline, as editors write it) */
  passwordFile: string;
  /** the CA that signed the server's certificate (and the client's) */
  caFile: string;
  /** a client certificate and key signed by that CA, for mutual TLS (`CONFIG SET tls-auth-clients yes`) */
  clientCertFile: string;
  clientKeyFile: string;
  dir: string;
  /** one raw command on the plain port, authenticated as the ACL user */
  command(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/** A CA, a server certificate (SAN IP:127.0.0.1, DNS:localhost) and a client certificate signed by it, in `dir`. */
export async function makeTestCertificates(dir: string): Promise<{ caFile: string; certFile: string; keyFile: string; clientCertFile: string; clientKeyFile: string }> {
  const f = (n: string) => path.join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '1', '-subj', '/CN=qga-test-ca']);
  await run('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost']);
  await writeFile(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.crt'), '-days', '1', '-extfile', f('ext.cnf')]);
  await run('openssl', ['req', ...ec, '-keyout', f('client.key'), '-out', f('client.csr'), '-subj', '/CN=qga-gateway']);
  await run('openssl', ['x509', '-req', '-in', f('client.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('client.crt'), '-days', '1']);
  return { caFile: f('ca.crt'), certFile: f('server.crt'), keyFile: f('server.key'), clientCertFile: f('client.crt'), clientKeyFile: f('client.key') };
}

export async function startRedisTls(): Promise<TestRedisTls> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-redis-tls-'));
  try {
    const { caFile, certFile, keyFile, clientCertFile, clientKeyFile } = await makeTestCertificates(dir);
    const [tlsPort, plainPort] = [await freePort(), await freePort()];
    const username = 'app';
    const password = randomBytes(18).toString('base64url');
    const passwordFile = path.join(dir, 'redis-password');
    await writeFile(passwordFile, password + '\n', { mode: 0o600 });
    const conf = path.join(dir, 'redis.conf');
    await writeFile(
      conf,
      [
        `port ${plainPort}`,
        `tls-port ${tlsPort}`,
        'bind 127.0.0.1',
        'protected-mode no',
        `dir ${dir}`,
        'save ""',
        'appendonly no',
        'loglevel warning',
        `tls-cert-file ${certFile}`,
        `tls-key-file ${keyFile}`,
        `tls-ca-cert-file ${caFile}`,
        'tls-auth-clients no',
        'user default off',
        `user ${username} on >${password} ~* &* +@all`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const proc = await spawnRedisServer([conf], plainPort);
    // AUTH and the command pipelined on one plain connection; the reply of the second is kept
    const command = (...args: string[]): Promise<string> => rawAuthCommand(plainPort, [username, password], args);
    return {
      url: `rediss://${username}:${password}@127.0.0.1:${tlsPort}`,
      bareUrl: `rediss://127.0.0.1:${tlsPort}`,
      tlsPort,
      username,
      password,
      passwordFile,
      caFile,
      clientCertFile,
      clientKeyFile,
      dir,
      command,
      async stop() {
        await proc.stop('SIGKILL');
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
