/**
 * The freeze service of an app's Services, built on first use and tied to the services' lifecycle:
 * start() reconciles and starts the deadline sweeper once the app is ready; stop() clears every
 * timer before the store closes (lifecycle parts stop in reverse order).
 */
import type { FreezeLogger as Logger } from './types.js';
import { resolveTimeouts, type Services } from '../services.js';
import { FreezeService } from './service.js';

const BUILT = new WeakMap<Services, FreezeService>();

export function freezeServiceFor(services: Services, logger: Logger): FreezeService {
  let s = BUILT.get(services);
  if (!s) {
    const created = new FreezeService({
      store: services.store,
      agent: services.agent,
      registry: services.registry,
      settings: {
        ...services.config.freeze,
        // freeze and thaw run the guest's fsfreeze hooks: the catalog's `freeze` class, as configured
        freezeTimeoutMs: resolveTimeouts(services.config).freeze,
        thawTimeoutMs: resolveTimeouts(services.config).freeze,
      },
      logger,
      releaseChannel: (vm) => services.pool.remove(vm),
    });
    services.lifecycle.push({
      name: 'freeze sweeper',
      start: () => created.start(),
      stop: () => created.stop(),
    });
    BUILT.set(services, created);
    s = created;
  }
  return s;
}

export { FreezeService } from './service.js';
export type { FreezeSettings, Caller } from './types.js';
