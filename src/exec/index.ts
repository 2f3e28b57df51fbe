/**
 * The exec service of an app's Services, built on first use and tied to the services' lifecycle
 * (its reaper starts with the app and stops with it).
 */
import type { Services } from '../services.js';
import { ExecService } from './service.js';

const BUILT = new WeakMap<Services, ExecService>();

export function execServiceFor(services: Services, log?: ExecService['log']): ExecService {
  let s = BUILT.get(services);
  if (!s) {
    const created = new ExecService(
      services.agent,
      async (vm) => (await services.agent.info(vm)).versionTuple,
      services.config.exec,
      log,
    );
    services.lifecycle.push({
      name: 'exec reaper',
      start: async () => created.startReaper(),
      stop: async () => created.stop(),
    });
    BUILT.set(services, created);
    s = created;
  }
  return s;
}
