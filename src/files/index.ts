/**
 * The files service of an app's Services, built on first use and tied to the services' lifecycle
 * (its handle reaper starts with the app and stops with it).
 */
import type { Services } from '../services.js';
import type { FilesLogger } from './guest.js';
import { FilesService } from './service.js';

const BUILT = new WeakMap<Services, FilesService>();

export function filesServiceFor(services: Services, log?: FilesLogger): FilesService {
  let s = BUILT.get(services);
  if (!s) {
    const created = new FilesService(services.agent, services.config.files, services.config.agent.maxReplyBytes, log);
    services.lifecycle.push({
      name: 'file handle reaper',
      start: async () => created.startReaper(),
      stop: () => created.stop(),
    });
    BUILT.set(services, created);
    s = created;
  }
  return s;
}
