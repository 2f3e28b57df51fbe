/**
 * Schemas of the file routes: the raw handle API (QGA arguments and results verbatim) and the
 * whole-file content routes (raw bytes, any size, streamed).
 */
import { Type } from 'typebox';
import { VmName } from './common.js';
import { StringEnum } from './qga.js';
import { Base64, PathInteger } from './scalars.js';

/** The open modes the agent takes (its fopen table): anything else would be its 422. */
export const FOPEN_MODES = ['r', 'rb', 'w', 'wb', 'a', 'ab', 'r+', 'rb+', 'r+b', 'w+', 'wb+', 'w+b', 'a+', 'ab+', 'a+b'] as const;

/** no NUL: no guest OS takes one in a path (the agent refuses it, or would cut the path there) */
export const GuestPath = Type.String({ minLength: 1, maxLength: 4096, pattern: '^[^\\u0000]+$', description: 'Full path to the file in the guest (no NUL character)' });

export const ContentQuery = Type.Object({ path: GuestPath }, { additionalProperties: false });

export const UploadQuery = Type.Object(
  {
    path: GuestPath,
    mode: Type.Optional(
      StringEnum(['truncate', 'append'], {
        description: 'truncate (default): create the file or empty it first ("w"); append: add to its end ("a")',
      }),
    ),
    offset: Type.Optional(
      Type.Integer({
        format: 'int64', maximum: Number.MAX_SAFE_INTEGER,
        minimum: 0,
        description:
          'resume an interrupted upload: write the body starting at this byte of the existing file (opened "r+": it must ' +
          'exist, nothing is truncated). At most the current size (HEAD gives it), else 416. Not with a mode (append or truncate: 400).',
      }),
    ),
  },
  { additionalProperties: false },
);

export const UploadResult = Type.Object(
  {
    path: Type.String(),
    bytesWritten: Type.Integer({ format: 'int64', description: 'bytes of the body written to the file' }),
    position: Type.Integer({ format: 'int64', description: 'file position after the last byte written: the file size when writing reached its end' }),
  },
  { additionalProperties: false, title: 'UploadResult' },
);

export const HandleParams = Type.Object(
  { vm: VmName, handle: PathInteger('file handle returned by POST /files/handles') },
  { additionalProperties: false },
);

export const OpenBody = Type.Object(
  {
    path: GuestPath,
    mode: Type.Optional(StringEnum(FOPEN_MODES, { description: 'open mode, as per fopen(), "r" is the default' })),
  },
  { additionalProperties: false, title: 'OpenFileRequest' },
);

export const OpenResult = Type.Object(
  {
    handle: Type.Integer({ format: 'int64', description: 'Guest file handle' }),
    expiresAt: Type.String({ format: 'date-time', description: 'the gateway closes the handle if it is unused until then; every use extends it' }),
  },
  { additionalProperties: false, title: 'OpenedHandle' },
);

export const ReadBody = Type.Object(
  {
    count: Type.Optional(
      Type.Integer({
        format: 'int64',
        minimum: 1,
        'x-max-from': 'files.maxRawReadBytes',
        description: 'maximum number of bytes to read (default is 4KB; at most files.maxRawReadBytes, beyond → 400)',
      }),
    ),
  },
  { additionalProperties: false, title: 'ReadFileRequest' },
);

export const WriteBody = Type.Object(
  {
    'buf-b64': Base64('base64-encoded string representing data to be written'),
    count: Type.Optional(Type.Integer({ format: 'int64', maximum: Number.MAX_SAFE_INTEGER, minimum: 0, description: 'bytes to write (actual bytes, after base64-decode), default is all content in buf-b64 buffer after base64 decoding' })),
  },
  { additionalProperties: false, title: 'WriteFileRequest' },
);

export const TrackedHandleView = Type.Object(
  {
    handle: Type.Integer({ format: 'int64' }),
    path: Type.Optional(Type.String({ description: 'absent for a handle adopted after it was opened elsewhere' })),
    mode: Type.Optional(Type.String()),
    openedAt: Type.String({ format: 'date-time' }),
    lastUsedAt: Type.String({ format: 'date-time' }),
    expiresAt: Type.String({ format: 'date-time', description: 'when the reaper closes it if still unused' }),
  },
  { additionalProperties: false, title: 'TrackedFileHandle' },
);

export const HandleList = Type.Object({ handles: Type.Array(TrackedHandleView) }, { additionalProperties: false, title: 'FileHandleList' });

export const BinaryBody = { description: 'the file bytes, streamed (any length; any Content-Type is accepted and stored verbatim)' };

export const SeekBody = Type.Object(
  {
    // int64 in the agent; the gateway takes offsets within ±(2^53 - 1) (8 PiB), beyond → 400
    offset: Type.Integer({ format: 'int64', minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER, description: 'bytes to skip over in the file stream' }),
    // Inline rather than a $ref to GuestFileWhence: request validation uses its own Ajv.
    whence: Type.Union([Type.Integer({ format: 'int32', minimum: 0, maximum: 2 }), StringEnum(['set', 'cur', 'end'])], {
      description: 'Symbolic name (set, cur, end; preferred) or the historical integer (0, 1, 2)',
    }),
  },
  { additionalProperties: false, title: 'SeekFileRequest' },
);
