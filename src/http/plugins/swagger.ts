/**
 * The OpenAPI document is generated from the route schemas (nothing is written by hand), served at
 * /openapi.json, browsable at /docs, and exported to openapi/openapi.json by `npm run
 * openapi:export`; a test fails when the committed file drifts from what the app generates.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { buildLocalReference } from '../schemas/qga.js';
import { finishDocument, servedDocument } from '../schemas/document.js';
import { errorTableMarkdown } from '../../errors.js';
import { Type } from 'typebox';
import { operation } from '../routes/operation.js';

/** The document's `info.version`: the package's version (package.json, three levels up from src/ or dist/). */
export const API_VERSION = packageVersion();

function packageVersion(): string {
  const text = readFileSync(new URL('../../../package.json', import.meta.url), 'utf8');
  const version: unknown = (JSON.parse(text) as { version?: unknown }).version;
  if (typeof version !== 'string') throw new Error('package.json has no version');
  return version;
}

export async function registerSwagger(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    refResolver: { buildLocalReference },
    // named components, exact 64-bit integers, real response descriptions (schemas/document.ts)
    transformObject: (doc) => ('openapiObject' in doc ? finishDocument(doc.openapiObject) : doc.swaggerObject),
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'qga-gateway',
        version: API_VERSION,
        description:
          'HTTP/REST gateway to the QEMU Guest Agent of many VMs. Field names follow the QGA reference verbatim; ' +
          'gateway-only fields are camelCase. Errors are RFC 9457 problem+json with a stable `code`. ' +
          'Integers above 2^53 (guest time in ns, uint64 counters) are sent as exact JSON integers: parse them with a ' +
          'big-integer-aware JSON parser if you need every digit.\n\n## Error codes\n\n' +
          errorTableMarkdown(),
        license: { name: 'MIT', identifier: 'MIT' },
      },
      servers: [{ url: '/' }],
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'Configured in auth.tokens; not needed when the gateway runs without tokens on loopback' } },
      },
      security: [{ bearer: [] }],
      tags: [
        { name: 'vms', description: 'The VM registry and agent state' },
        { name: 'agent', description: 'Agent liveness, information and resync' },
        { name: 'system', description: 'Time, host name, OS, users, time zone' },
        { name: 'power', description: 'Shutdown and suspend' },
        { name: 'fsfreeze', description: 'Filesystem freeze/thaw with leases, for backup systems' },
        { name: 'filesystems', description: 'Filesystem information and trim' },
        { name: 'hardware', description: 'vCPUs, memory blocks, disks, devices, statistics' },
        { name: 'network', description: 'Network interfaces and routes' },
        { name: 'users', description: 'Passwords and SSH keys' },
        { name: 'exec', description: 'Run programs in the guest' },
        { name: 'files', description: 'Guest files: handles and whole-file streaming' },
        { name: 'raw', description: 'Verbatim QGA passthrough (admin)' },
        { name: 'service', description: 'Health, readiness, metrics, documentation' },
      ],
    },
  });
  // the documentation page is open like /openapi.json (README's threat model): a browser sends no
  // bearer token when it navigates, and the page holds nothing /openapi.json does not already serve
  // The page itself (GET /docs, Swagger UI's HTML) is an operation of the document like /ui; its
  // assets and the other spellings stay hidden (the route options are the objects @fastify/swagger
  // collected, read when the document is made)
  app.addHook('onRoute', (route) => {
    if (route.url === '/docs' && route.method === 'GET') {
      const op = operation('service', 'apiDocsPage', {
        public: true,
        summary: 'This API browsable in the browser (Swagger UI over GET /openapi.json)',
        ok: { 200: { description: 'The Swagger UI page', content: { 'text/html': { schema: Type.String() } } } },
        errors: [],
      });
      route.schema = op.schema;
      // one route object serves /docs and /docs/ (Fastify registers both spellings of a prefix's
      // root from it, and its url ends up the last one's): the document names the first
      route.config = { ...route.config, swaggerTransform: ({ schema }) => ({ schema, url: '/docs' }) };
    }
    if (route.url === '/docs' || route.url.startsWith('/docs/')) route.config = { ...route.config, public: true };
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { deepLinking: true },
    staticCSP: true,
    // /docs shows what /openapi.json serves: the configured maxima written in
    transformSpecificationClone: false,
    transformSpecification: (spec) => servedDocument(spec, app.services.config) as Record<string, unknown>,
  });
  // the document with the maxima of the configuration in force (written by the bigint-exact JSON writer)
  // (computed once per configuration: a reload that changes a maximum changes the document)
  let served: { config: unknown; doc: unknown } | undefined;
  const documentOp = operation('service', 'openApiDocument', {
    public: true,
    summary: 'This OpenAPI 3.1 document, with the configured maxima of the gateway that serves it',
    description: 'Integers above 2^53 in examples and bounds are written as exact JSON integers.',
    ok: { 200: { description: 'The OpenAPI 3.1 document', content: { 'application/json': { schema: Type.Object({}, { additionalProperties: true }) } } } },
    errors: [],
  });
  app.get('/openapi.json', documentOp, async () => {
    const config = app.services.config;
    if (served?.config !== config) served = { config, doc: servedDocument(app.swagger(), config) };
    return served.doc;
  });
}
