/** QGA types of guest-exec and guest-exec-status. */
import { Type } from 'typebox';
import { component, enumComponent, objectComponent } from './component.js';

export const GuestExecStatus = objectComponent('GuestExecStatus', 'Status of a process started by guest-exec. (since 2.5)', {
  exited: Type.Boolean({ description: 'true if process has already terminated.' }),
  exitcode: Type.Optional(Type.Integer({ format: 'int64', description: 'process exit code if it was normally terminated.' })),
  signal: Type.Optional(
    Type.Integer({
      format: 'int64',
      description:
        'signal number (linux) or unhandled exception code (windows) if the process was abnormally terminated.',
    }),
  ),
  'out-data': Type.Optional(
    Type.String({ description: 'base64-encoded stdout of the process. Only populated after the process exits.' }),
  ),
  'err-data': Type.Optional(
    Type.String({
      description:
        "base64-encoded stderr of the process. out-data and err-data are present only if 'capture-output' was " +
        "specified for 'guest-exec'. Only populated after the process exits.",
    }),
  ),
  'out-truncated': Type.Optional(Type.Boolean({ description: 'true if stdout was not fully captured due to size limitation.' })),
  'err-truncated': Type.Optional(Type.Boolean({ description: 'true if stderr was not fully captured due to size limitation.' })),
});

export const GuestExec = objectComponent('GuestExec', 'PID of a process started by guest-exec. (since 2.5)', { pid: Type.Integer({ format: 'int64', description: 'pid of child process in guest OS' }) });

export const GuestExecCaptureOutputMode = enumComponent(
  'GuestExecCaptureOutputMode',
  'guest-exec capture modes: none, stdout only, stderr only, separated (out-data and err-data), merged (both ' +
    'into out-data; not effective on windows guests). (since 8.0)',
  ['none', 'stdout', 'stderr', 'separated', 'merged'],
);

export const GuestExecCaptureOutput = component(
  'GuestExecCaptureOutput',
  Type.Union(
    [
      Type.Boolean({ description: 'captures both stdout and stderr if true (since 2.5)' }),
      GuestExecCaptureOutputMode,
    ],
    { description: 'Controls what guest-exec output gets captured: a flag, or (preferred) a mode. (since 8.0)' },
  ),
);
