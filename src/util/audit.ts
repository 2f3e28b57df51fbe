/**
 * The audit trail: actions a security review asks about (forced thaws, thaws on an unverified
 * lease), one structured log line each with `audit: true`, whoever did them. Built once by the
 * composition root and handed to the services that act on a principal's behalf.
 */
export interface AuditEvent {
  /** what was done, e.g. force-thaw */
  action: string;
  /** the principal (token name) that did it */
  by: string;
  [field: string]: unknown;
}

export interface AuditLog {
  record(event: AuditEvent, message: string): void;
}

export function createAuditLog(logger: { warn(obj: object, msg: string): void }): AuditLog {
  return { record: (event, message) => logger.warn({ audit: true, ...event }, message) };
}
