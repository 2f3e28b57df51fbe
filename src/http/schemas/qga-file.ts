/**
 * QGA types of the file commands (guest-file-open/-read/-write/-seek/-flush/-close): the results
 * and the GuestFileWhence alternate. Request-side alternates may use anyOf (Ajv validates them;
 * no bigint is involved), response objects may not (see component.ts).
 */
import { Type } from 'typebox';
import { component, enumComponent, objectComponent } from './component.js';

export const GuestFileRead = objectComponent('GuestFileRead', 'Result of guest agent file-read operation. (since 0.15.0)', {
  count: Type.Integer({ format: 'int64', minimum: 0, description: 'number of bytes read (note: count is before base64-encoding is applied)' }),
  'buf-b64': Type.String({ description: 'base64-encoded bytes read' }),
  eof: Type.Boolean({ description: 'whether EOF was encountered during read operation.' }),
});

export const GuestFileWrite = objectComponent('GuestFileWrite', 'Result of guest agent file-write operation. (since 0.15.0)', {
  count: Type.Integer({
    format: 'int64',
    minimum: 0,
    description: 'number of bytes written (note: count is actual bytes written, after base64-decoding of provided buffer)',
  }),
  eof: Type.Boolean({ description: 'whether EOF was encountered during write operation.' }),
});

export const GuestFileSeek = objectComponent('GuestFileSeek', 'Result of guest agent file-seek operation. (since 0.15.0)', {
  position: Type.Integer({ format: 'int64', description: 'current file position' }),
  eof: Type.Boolean({ description: 'whether EOF was encountered during file seek' }),
});

export const QGASeek = enumComponent(
  'QGASeek',
  'Symbolic names for use in guest-file-seek: set = to the specified offset (whence 0), cur = add offset to the ' +
    'current location (whence 1), end = add offset to the end of the file (whence 2). (since 2.6)',
  ['set', 'cur', 'end'],
);

export const GuestFileWhence = component(
  'GuestFileWhence',
  Type.Union(
    [
      Type.Integer({
        format: 'int64',
        description:
          'Integral value (0 for set, 1 for cur, 2 for end), available for historical reasons, and might differ from ' +
          "the host's or guest's SEEK_* values (since: 0.15)",
      }),
      QGASeek,
    ],
    { description: 'Controls the meaning of offset to guest-file-seek: an integer, or (preferred) a QGASeek name. (since 2.6)' },
  ),
);
