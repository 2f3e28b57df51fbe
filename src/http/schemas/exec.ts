/**
 * Schemas of the exec routes. QGA members keep their names (`path`, `arg`, `env`, `input-data`,
 * `capture-output`, `exitcode`, `out-data` …); the gateway's additions are camelCase
 * (`inputText`, `wait`, `outText`, `errText`, `collectedAt`).
 *
 * Output shape: `out-data`/`err-data` are always the agent's base64, verbatim and lossless;
 * `outText`/`errText` are added when those bytes are text: valid UTF-8 without control characters
 * but tab, newline, CR and ESC (absent otherwise, so a caller never gets a silently mangled string
 * or a body blown up by escapes). Check `outText` first, fall back to decoding `out-data`.
 */
import { Type } from 'typebox';
import { VmName } from './common.js';
import { StringEnum } from './qga.js';
import { Base64, PathInteger } from './scalars.js';

export const ExecParams = Type.Object(
  { vm: VmName, pid: PathInteger('pid returned by POST /exec (a guest OS pid)') },
  { additionalProperties: false },
);

/** a process's path, arguments and environment are C strings: a NUL would cut them short */
const NO_NUL = '^[^\\u0000]+$';
const NO_NUL_OR_EMPTY = '^[^\\u0000]*$';

export const ExecBody = Type.Object(
  {
    path: Type.String({ minLength: 1, pattern: NO_NUL, description: 'path or executable name to execute (no NUL character)' }),
    arg: Type.Optional(Type.Array(Type.String({ pattern: NO_NUL_OR_EMPTY }), { description: 'argument list to pass to executable (no NUL character: a process argument ends at one)' })),
    env: Type.Optional(Type.Array(Type.String({ pattern: NO_NUL_OR_EMPTY }), { description: 'environment variables to pass to executable (NAME=value; no NUL character)' })),
    'input-data': Type.Optional(
      Base64('data to be passed to process stdin (base64 encoded). Not together with inputText.'),
    ),
    inputText: Type.Optional(
      Type.String({ description: 'stdin as text (sent as its UTF-8 bytes); the gateway base64-encodes it. Not together with input-data.' }),
    ),
    'capture-output': Type.Optional(
      // Inline rather than a $ref to GuestExecCaptureOutput: request validation uses its own Ajv.
      Type.Union([Type.Boolean(), StringEnum(['none', 'stdout', 'stderr', 'separated', 'merged'])], {
        description:
        'what output to capture. Default here: true (the agent\'s own default is false, which would leave nothing to return). ' +
          'true/false and "separated"/"none" work with every agent; "stdout", "stderr" and "merged" need QGA >= 8.0 (older → 501).',
      }),
    ),
    wait: Type.Optional(
      Type.Number({
        minimum: 0,
        'x-max-from': 'exec.maxWaitSeconds',
        description:
          'seconds to wait for the process to exit (at most exec.maxWaitSeconds, beyond → 400). With wait, the finished ' +
          'status is returned (200) if the process exits in time, otherwise 202 {pid, exited: false}. Without it: 202 {pid} at once.',
      }),
    ),
  },
  {
    additionalProperties: false,
    title: 'ExecRequest',
    // a cross-field rule JSON Schema can state; its description is the 400's detail (error-handler.ts)
    not: {
      required: ['input-data', 'inputText'],
      properties: { 'input-data': {}, inputText: {} },
      description: 'must not have both input-data and inputText: give stdin one way',
    },
  },
);

export const ExecStarted = Type.Object(
  {
    pid: Type.Integer({ format: 'int64', description: 'pid of child process in guest OS; poll GET /v1/vms/{vm}/exec/{pid}' }),
    exited: Type.Optional(
      Type.Boolean({
        description: 'false when `wait` ran out with the process still running (its status was read); absent when the request had no `wait`',
      }),
    ),
  },
  {
    additionalProperties: false,
    title: 'ExecStarted',
    description: 'The process runs (or ran) in the guest: poll GET /v1/vms/{vm}/exec/{pid} (the Location header) for its status',
  },
);

export const ExecResult = Type.Object(
  {
    pid: Type.Integer({ format: 'int64', description: 'pid of the process in the guest OS' }),
    exited: Type.Boolean({ description: 'true if process has already terminated.' }),
    exitcode: Type.Optional(Type.Integer({ format: 'int64', description: 'process exit code if it was normally terminated.' })),
    signal: Type.Optional(Type.Integer({ format: 'int64', description: 'signal number (linux) or unhandled exception code (windows) if the process was abnormally terminated.' })),
    'out-data': Type.Optional(Type.String({ description: 'base64-encoded stdout (verbatim from the agent; present once exited, if captured).' })),
    'err-data': Type.Optional(Type.String({ description: 'base64-encoded stderr (verbatim from the agent; present once exited, if captured).' })),
    'out-truncated': Type.Optional(Type.Boolean({ description: 'true if stdout was not fully captured due to size limitation (16 MiB in the agent).' })),
    'err-truncated': Type.Optional(Type.Boolean({ description: 'true if stderr was not fully captured due to size limitation (16 MiB in the agent).' })),
    outText: Type.Optional(Type.String({ description: 'stdout decoded as UTF-8; present only when out-data is text: valid UTF-8 without control characters but tab, newline, CR and ESC (with out-truncated, a character cut at the end is left out).' })),
    errText: Type.Optional(Type.String({ description: 'stderr decoded as UTF-8; present only when err-data is text: valid UTF-8 without control characters but tab, newline, CR and ESC (with err-truncated, a character cut at the end is left out).' })),
    collectedAt: Type.Optional(
      Type.String({
        format: 'date-time',
        description:
          'when the gateway read the final status from the agent. The agent forgets it at that moment; the gateway keeps it ' +
          'for exec.resultTtlSeconds, so repeating GET /exec/{pid} returns the same result.',
      }),
    ),
  },
  { additionalProperties: false, title: 'ExecResult' },
);

export const ExecStatusQuery = Type.Object(
  {
    wait: Type.Optional(
      Type.Number({
        minimum: 0,
        'x-max-from': 'exec.maxWaitSeconds',
        description: 'seconds to wait for the process to exit before answering (at most exec.maxWaitSeconds, beyond → 400)',
      }),
    ),
  },
  { additionalProperties: false },
);
