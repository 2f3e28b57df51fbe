/**
 * guest-exec / guest-exec-status (qga/commands.c): the first status reply with exited:true
 * reaps the record, later queries get "Invalid parameter 'pid'"; records never polled stay.
 */
import type { JsonObject } from '../../src/qga/types.js';
import { generic } from '../errors.js';
import { CappedSink, EXEC_OUTPUT_MAX, findProgram } from '../programs.js';
import { enumOf, list, opt, req, type TypeSpec } from '../visitor.js';
import { decodeBase64 } from './files.js';
import type { AgentRuntime, CaptureMode, CommandDef, ExecRecord } from './types.js';

const CAPTURE: TypeSpec = {
  kind: 'alternate',
  name: 'GuestExecCaptureOutput',
  bool: true,
  enum: enumOf('GuestExecCaptureOutputMode', ['none', 'stdout', 'stderr', 'separated', 'merged']),
};

/** Every simulated process lives at least this long, so a first status poll usually sees it running. */
const MIN_RUN_MS = 10;

function captureMode(v: unknown): CaptureMode {
  if (v === undefined || v === false) return 'none';
  if (v === true) return 'separated';
  return v as CaptureMode;
}

function startExec(rt: AgentRuntime, args: Record<string, unknown>): ExecRecord {
  const path = args.path as string;
  const stdin = args['input-data'] === undefined ? Buffer.alloc(0) : decodeBase64(args['input-data'] as string);
  const capture = captureMode(args['capture-output']);
  const program = findProgram(path);
  if (!program) {
    throw generic(`Guest agent command failed, error was 'Failed to execute child process \u201c${path}\u201d (No such file or directory)'`);
  }
  const keepOut = capture === 'stdout' || capture === 'separated' || capture === 'merged';
  const keepErr = capture === 'stderr' || capture === 'separated';
  const out = new CappedSink(EXEC_OUTPUT_MAX, keepOut);
  const err = capture === 'merged' ? out : new CappedSink(EXEC_OUTPUT_MAX, keepErr);
  const end = program((args.arg as string[] | undefined) ?? [], {
    stdin,
    out,
    err,
    env: args.env as string[] | undefined,
    fs: rt.state.files,
  });
  const pid = rt.proc.nextPid++;
  const runMs = ((end.seconds ?? 0) * 1000 + MIN_RUN_MS) * rt.timeScale;
  const record: ExecRecord = {
    pid,
    exitAt: rt.now() + runMs,
    exitcode: end.exitcode,
    signal: end.signal,
    capture,
    out: out.toBuffer(),
    err: capture === 'merged' ? Buffer.alloc(0) : err.toBuffer(),
    outTruncated: out.truncated,
    errTruncated: capture === 'merged' ? false : err.truncated,
  };
  rt.proc.execs.set(pid, record);
  return record;
}

function finalStatus(rt: AgentRuntime, r: ExecRecord): JsonObject {
  const status: JsonObject = { exited: true };
  if (r.signal !== undefined) status.signal = r.signal;
  else status.exitcode = r.exitcode ?? 0;
  const fixed = rt.traits.execTruncatedFixed;
  if (r.out.length > 0) status['out-data'] = r.out.toString('base64');
  if (r.err.length > 0) status['err-data'] = r.err.toString('base64');
  // before the fix, has_out_truncated was set to the flag itself and the value left false
  if (r.out.length > 0 && (fixed || r.outTruncated)) status['out-truncated'] = fixed ? r.outTruncated : false;
  if (r.err.length > 0 && (fixed || r.errTruncated)) status['err-truncated'] = fixed ? r.errTruncated : false;
  return status;
}

export const execCommands: CommandDef[] = [
  {
    name: 'guest-exec-status',
    since: '2.5',
    args: [req('pid', 'int')],
    run(rt, args) {
      const pid = Number(args.pid);
      const r = rt.proc.execs.get(pid);
      if (!r) throw generic("Invalid parameter 'pid'");
      if (rt.now() < r.exitAt) return { exited: false };
      rt.proc.execs.delete(pid);
      return finalStatus(rt, r);
    },
  },
  {
    name: 'guest-exec',
    since: '2.5',
    args: (traits) => [
      req('path', 'str'),
      opt('arg', list('str')),
      opt('env', list('str')),
      opt('input-data', 'str'),
      // before 8.0 capture-output was a plain bool
      opt('capture-output', traits.execCaptureModes ? CAPTURE : 'bool'),
    ],
    run: (rt, args) => ({ pid: startExec(rt, args).pid }),
  },
];
