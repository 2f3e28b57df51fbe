/** QGA types of guest-ssh-*-authorized-keys. */
import { Type } from 'typebox';
import { objectComponent } from './component.js';

export const GuestAuthorizedKeys = objectComponent('GuestAuthorizedKeys', 'The public keys of a user. (since 5.2)', {
  keys: Type.Array(Type.String(), { description: 'public keys (in OpenSSH/sshd(8) authorized_keys format)' }),
});
