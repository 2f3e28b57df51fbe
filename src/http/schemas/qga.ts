/**
 * Every object, enum and alternate of the QGA reference as a named TypeBox schema, in one
 * import. Importing this module loads all of them into the component registry; call
 * `registerQgaSchemas(app)` on the root instance (before routes) so that their `$ref`s resolve
 * for validation, serialization and the OpenAPI document.
 */
import type { FastifyInstance } from 'fastify';
import { registerComponents } from './component.js';

export * from './qga-system.js';
export * from './qga-file.js';
export * from './qga-exec.js';
export * from './qga-disk.js';
export * from './qga-fs.js';
export * from './qga-hw.js';
export * from './qga-net.js';
export * from './qga-users.js';
export { componentSchemas, buildLocalReference, described, StringEnum } from './component.js';

export function registerQgaSchemas(app: FastifyInstance): void {
  registerComponents(app);
}
