/**
 * Behaviour that differs between qemu-ga releases, keyed by the simulated version string.
 * Sources: QGA-FACTS.md and QEMU's history (qmp-dispatch, qga/main.c, qga/commands.c).
 */

export type VersionTuple = [number, number, number];

export function parseVersion(v: string): VersionTuple {
  const m = /^(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(v);
  if (!m) return [0, 0, 0];
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

export function versionAtLeast(v: VersionTuple, major: number, minor = 0, micro = 0): boolean {
  if (v[0] !== major) return v[0] > major;
  if (v[1] !== minor) return v[1] > minor;
  return v[2] >= micro;
}

export interface VersionTraits {
  /** what a request carrying a top-level "id" gets */
  requestId: 'echo' | 'ignore' | 'reject';
  /** parse errors say "JSON parse error, ..." (3.0+) rather than "Invalid JSON syntax" */
  detailedParseErrors: boolean;
  /** "QMP input member 'x' is unexpected" (3.0+) vs "QMP input object member ..." */
  newMemberWording: boolean;
  /** reason appended to "Command X has been disabled" while frozen */
  frozenReason: string | undefined;
  /** reason appended for a command blocked by the guest admin (-b) */
  blockedReason: string | undefined;
  /** commands missing from the build are absent from guest-info (9.1+) instead of disabled */
  lackingCommandsAbsent: boolean;
  /** guest-exec-status reports out-truncated/err-truncated correctly (fixed in 10.1, backported) */
  execTruncatedFixed: boolean;
  /** guest-get-fsinfo has total-bytes-privileged (9.1+) */
  fsinfoPrivilegedBytes: boolean;
  /** guest-exec capture-output also takes a GuestExecCaptureOutputMode (8.0+), not just a bool */
  execCaptureModes: boolean;
}

export function traitsFor(version: string): VersionTraits {
  const v = parseVersion(version);
  const atLeast = (a: number, b = 0, c = 0): boolean => versionAtLeast(v, a, b, c);
  const newFilters = atLeast(9, 1);
  let requestId: VersionTraits['requestId'] = 'reject';
  if (atLeast(4)) requestId = 'echo';
  else if (atLeast(2, 12) && !atLeast(3)) requestId = 'ignore';
  let frozenReason: string | undefined;
  if (newFilters) frozenReason = 'the command is not allowed';
  else if (atLeast(6)) frozenReason = 'the agent is in frozen state';
  return {
    requestId,
    detailedParseErrors: atLeast(3),
    newMemberWording: atLeast(3),
    frozenReason,
    blockedReason: newFilters ? 'the command is not allowed' : undefined,
    lackingCommandsAbsent: newFilters,
    // the real 7.2.22 rig reports the flags correctly: the fix reached the 7.2 stable series
    execTruncatedFixed: atLeast(10, 1) || (v[0] === 7 && v[1] === 2 && v[2] >= 20),
    fsinfoPrivilegedBytes: newFilters,
    execCaptureModes: atLeast(8),
  };
}
