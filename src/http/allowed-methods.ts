/**
 * Which methods a path takes, for 405 METHOD_NOT_ALLOWED with `Allow` (Fastify itself answers 404
 * for a known path with another method). Every route is recorded as it is added; a request that
 * found no route is matched against the recorded patterns.
 */
import type { FastifyInstance } from 'fastify';

interface Pattern {
  re: RegExp;
  methods: Set<string>;
}

function compile(url: string): RegExp {
  const parts = url.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  // the path as routed, exactly: Fastify does not ignore a trailing slash, so `/ping/` is no
  // route at all (404), not a 405 naming the very method that was used
  return new RegExp(`^${parts.join('/')}$`);
}

export function trackAllowedMethods(app: FastifyInstance): (path: string) => string[] {
  const patterns = new Map<string, Pattern>();
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    let p = patterns.get(route.url);
    if (!p) {
      p = { re: compile(route.url), methods: new Set() };
      patterns.set(route.url, p);
    }
    for (const m of methods) p.methods.add(m.toUpperCase());
  });
  return (path) => {
    const allow = new Set<string>();
    for (const p of patterns.values()) if (p.re.test(path)) for (const m of p.methods) allow.add(m);
    return [...allow].sort();
  };
}
