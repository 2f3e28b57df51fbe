/**
 * HTTP metrics, registered on the registry the composition root made (pool/metrics.ts). Labels
 * are route patterns, never URLs. The labelled children are looked up once per route and status
 * and kept (no label hashing per request); request-log.ts calls these from its response hook.
 */
import { Counter, Histogram, type Registry } from 'prom-client';

/** statuses counted as rejections: refused before or instead of doing the work */
export const REJECTION_STATUSES: readonly number[] = [401, 403, 404, 409, 429];

export interface RouteMetrics {
  /** one answered request of this route (seconds from arrival to the end of the answer) */
  observe(status: number, seconds: number): void;
}

export interface HttpMetrics {
  forRoute(method: string, route: string): RouteMetrics;
  /** a rejection (a status of REJECTION_STATUSES) */
  rejected(status: number): void;
}

/** byte totals kept by the files service (files/guest.ts), read at scrape time */
export interface TransferTotals {
  readonly download: number;
  readonly upload: number;
}

export function createHttpMetrics(registry: Registry, transfers?: TransferTotals): HttpMetrics {
  if (transfers) {
    let seen = { download: 0, upload: 0 };
    new Counter({
      name: 'qga_transfer_bytes_total',
      help: 'File bytes moved through the file routes: download (read from guests), upload (written to guests)',
      labelNames: ['direction'],
      registers: [registry],
      collect() {
        // the files service keeps plain totals (no metric call per chunk); add what moved since the last scrape
        const now = { download: transfers.download, upload: transfers.upload };
        this.inc({ direction: 'download' }, now.download - seen.download);
        this.inc({ direction: 'upload' }, now.upload - seen.upload);
        seen = now;
      },
    });
  }
  const requests = new Histogram({
    name: 'qga_http_request_duration_seconds',
    help: 'HTTP request duration by method, route pattern and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [registry],
  });
  const rejections = new Counter({
    name: 'qga_rejections_total',
    help: 'Requests refused, by HTTP status code (401, 403, 404, 409, 429)',
    labelNames: ['code'],
    registers: [registry],
  });
  const rejectionChildren = new Map<number, { inc(): void }>();
  for (const s of REJECTION_STATUSES) {
    const child = rejections.labels({ code: String(s) });
    rejectionChildren.set(s, child);
  }
  return {
    forRoute(method, route) {
      const children = new Map<number, Histogram.Internal<'method' | 'route' | 'status'>>();
      return {
        observe(status, seconds) {
          let child = children.get(status);
          if (child === undefined) {
            child = requests.labels({ method, route, status: String(status) });
            children.set(status, child);
          }
          child.observe(seconds);
        },
      };
    },
    rejected(status) {
      rejectionChildren.get(status)?.inc();
    },
  };
}
