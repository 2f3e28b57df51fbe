/** QGA types of guest-ssh-*-authorized-keys. */
import { Type } from 'typebox';
import { component } from './component.js';

export const GuestAuthorizedKeys = component(
  'GuestAuthorizedKeys',
  Type.Object(
    {
      keys: Type.Array(Type.String(), { description: 'public keys (in OpenSSH/sshd(8) authorized_keys format)' }),
    },
    { description: 'The public keys of a user. (since 5.2)' },
  ),
);
