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
    // A guest-file-open that timed out (or whose caller left) may still have opened the file: when
    // its late reply arrives on the channel, the handle it names is closed here. Nobody else
    // could: the gateway never told anyone the number, and the agent keeps handles forever.
    services.pool.on('orphan', (e: { vm: string; command: string; value: unknown }) => {
      if (e.command !== 'guest-file-open' || typeof e.value !== 'number') return;
      const handle = e.value;
      services.agent.call(e.vm, 'guest-file-close', { handle }).then(
        () => log?.warn({ vm: e.vm, handle }, 'closed the handle of a guest-file-open whose caller had given up'),
        (err: unknown) => log?.warn({ vm: e.vm, handle, err: (err as Error).message }, 'could not close the handle of an abandoned guest-file-open'),
      );
    });
    BUILT.set(services, created);
    s = created;
  }
  return s;
}
