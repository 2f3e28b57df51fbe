/**
 * Guest users and their credentials: guest-get-users, guest-set-user-password,
 * guest-ssh-get/add/remove-authorized-keys. Changing credentials grants logins to the guest, so
 * those routes need the admin scope.
 *
 * The agent hands the username and password to chpasswd as "user:password\n" and writes keys as
 * lines of authorized_keys, so a ':' in a username or a line break in a password or key could
 * smuggle in a second entry: the schemas refuse them before anything is sent.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import { isAgentError } from '../../qga/agent-errors.js';
import { VmName } from '../schemas/common.js';
import { GuestAuthorizedKeys, GuestUser } from '../schemas/qga.js';
import { callAgent, expectObject } from './agent-reply.js';
import { operation } from './operation.js';
import { getListRoute } from './qga-get.js';

const USERNAME_PATTERN = '^[^:/\\\\\\u0000-\\u001f\\u007f]{1,256}$';

const UserParams = Type.Object(
  {
    vm: VmName,
    username: Type.String({
      pattern: USERNAME_PATTERN,
      description: 'the guest user account (no ":", "/", "\\" or control characters)',
      examples: ['root'],
    }),
  },
  { additionalProperties: false },
);

const MAX_KEYS = 1024;
const SshKey = Type.String({
  minLength: 1,
  maxLength: 16_384,
  pattern: '^[^\\r\\n\\u0000]+$',
  description: 'a public key in OpenSSH authorized_keys format (one line)',
  examples: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqrG3Xi1qv3dHh1yYVt0F1Rk8j2Hc0bLq+0mJ3uN7ad user@host'],
});

const PasswordBody = Type.Object(
  {
    password: Type.String({
      minLength: 1,
      maxLength: 4096,
      pattern: '^[^\\r\\n\\u0000]+$',
      description:
        'The new password as plain text (or, with crypted=true, a crypt(3) hash). The gateway base64-encodes it for ' +
        'the agent; do not encode it yourself.',
    }),
    crypted: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          'true if password is already crypt()d (the caller picks a scheme the guest supports), false if raw. Not ' +
          'every guest OS supports crypted passwords.',
      }),
    ),
  },
  { additionalProperties: false },
);

const AddKeysBody = Type.Object(
  {
    keys: Type.Array(SshKey, { maxItems: MAX_KEYS, description: 'the public keys to add' }),
    reset: Type.Optional(Type.Boolean({ description: 'ignore the existing content, set it with the given keys only' })),
  },
  { additionalProperties: false },
);

const RemoveKeysQuery = Type.Object(
  {
    key: Type.Array(SshKey, {
      minItems: 1,
      maxItems: MAX_KEYS,
      description: 'a public key to remove; repeat the parameter for several (?key=…&key=…). Keys already missing are not an error.',
    }),
  },
  { additionalProperties: false },
);

export default async function userRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  getListRoute(fastify, {
    url: '/vms/:vm/users',
    operationId: 'getUsers',
    tag: 'users',
    summary: 'Users currently logged in to the guest',
    command: 'guest-get-users',
    key: 'users',
    item: GuestUser,
    listDescription: 'A unique list of users',
  });

  app.put(
    '/vms/:vm/users/:username/password',
    operation('users', 'setUserPassword', {
      scope: 'admin',
      summary: "Set a guest user's password (admin)",
      description: 'The password is sent as plain text (TLS!) and base64-encoded by the gateway, as the agent requires.',
      command: 'guest-set-user-password',
      params: UserParams,
      body: PasswordBody,
      ok: { 204: Type.Null({ description: 'password changed' }) },
    }),
    async (request, reply) => {
      const { vm, username } = request.params;
      const { password, crypted } = request.body;
      await callAgent(fastify, request, vm, 'guest-set-user-password', {
        username,
        password: Buffer.from(password, 'utf8').toString('base64'),
        crypted: crypted ?? false,
      });
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/vms/:vm/users/:username/ssh-keys',
    operation('users', 'getSshAuthorizedKeys', {
      summary: "A guest user's ~/.ssh/authorized_keys (Unix guests)",
      description: 'A user without an authorized_keys file has no keys: 200 with an empty list (the agent reports a missing file as an error).',
      command: 'guest-ssh-get-authorized-keys',
      params: UserParams,
      ok: { 200: GuestAuthorizedKeys },
    }),
    async (request) => {
      const { vm, username } = request.params;
      let value;
      try {
        value = await callAgent(fastify, request, vm, 'guest-ssh-get-authorized-keys', { username });
      } catch (e) {
        // no ~/.ssh/authorized_keys (or no ~/.ssh): no keys, not a failure
        if (isAgentError(e, 'no-such-file')) return { keys: [] };
        throw e;
      }
      return expectObject<Static<typeof GuestAuthorizedKeys>>(vm, 'guest-ssh-get-authorized-keys', value);
    },
  );

  app.post(
    '/vms/:vm/users/:username/ssh-keys',
    operation('users', 'addSshAuthorizedKeys', {
      scope: 'admin',
      summary: "Append public keys to a guest user's authorized_keys, or replace them all with reset (admin)",
      command: 'guest-ssh-add-authorized-keys',
      params: UserParams,
      body: AddKeysBody,
      ok: { 204: Type.Null({ description: 'keys added' }) },
    }),
    async (request, reply) => {
      const { vm, username } = request.params;
      const { keys, reset } = request.body;
      await callAgent(fastify, request, vm, 'guest-ssh-add-authorized-keys', {
        username,
        keys,
        ...(reset === undefined ? {} : { reset }),
      });
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/vms/:vm/users/:username/ssh-keys',
    operation('users', 'removeSshAuthorizedKeys', {
      scope: 'admin',
      summary: "Remove public keys from a guest user's authorized_keys (admin)",
      description: 'The keys go in the query string (DELETE bodies are not portable), URL-encoded, one `key` parameter each.',
      command: 'guest-ssh-remove-authorized-keys',
      params: UserParams,
      querystring: RemoveKeysQuery,
      ok: { 204: Type.Null({ description: 'keys removed (or already missing)' }) },
    }),
    async (request, reply) => {
      const { vm, username } = request.params;
      await callAgent(fastify, request, vm, 'guest-ssh-remove-authorized-keys', { username, keys: request.query.key });
      return reply.code(204).send(null);
    },
  );
}
