import type { Settings } from '../profile/settings.js';
import { followConsole, readConsole } from '../runtime/console.js';
import { vmmOf, vmRunning, type VmState } from '../runtime/state.js';
import { killVm, purgeAllVms, purgeVms } from '../runtime/stop.js';
import type { Logger } from '../util/logger.js';
import { runCacheOf } from './vm-boot.js';

/** The VM use cases after `run`: ls, inspect, logs, kill, purge (both faces; the smoke-test post step kills). */

export type VmListEntry = VmState & { running: boolean };

/** Every VM of the run cache, with whether its VMM still runs (unreadable states are not listed: purge removes them). */
export async function vmList(settings: Settings): Promise<VmListEntry[]> {
  return runCacheOf(settings).list();
}

/** `inspect` in the seed's shape: the state, `running`, and `.NetworkInterfaces[0].StaticConfiguration.IPConfiguration.IP`. */
export function inspectView(s: VmState & { running?: boolean }): Record<string, unknown> {
  return {
    ...s,
    NetworkInterfaces: s.network.ip ? [{ StaticConfiguration: { IPConfiguration: { IP: s.network.ip } } }] : [],
  };
}

export async function vmInspect(settings: Settings, id: string): Promise<Record<string, unknown>> {
  const s = await runCacheOf(settings).read(id);
  return inspectView({ ...s, running: vmRunning(s) });
}

/** A VM's console: what it holds so far (one chunk), or with `follow` its text as written until the VM ends. */
export async function* vmLogs(settings: Settings, id: string, o: { follow: boolean }): AsyncGenerator<string, void, undefined> {
  const s = await runCacheOf(settings).read(id);
  if (!o.follow) {
    yield await readConsole(s.serialLog);
    return;
  }
  yield* followConsole(s.serialLog, vmmOf(s));
}

/**
 * Stop a VM (graceful, forced after `timeoutMs`) and remove everything it left. `missingOk`: a VM that is
 * not (or no longer readably) in the run cache is no error; returns whether there was one to kill.
 */
export async function vmKill(settings: Settings, id: string, timeoutMs: number, log: Logger, o: { missingOk?: boolean } = {}): Promise<boolean> {
  const cache = runCacheOf(settings);
  if (o.missingOk && !(await cache.list()).some((v) => v.id === id)) return false;
  await killVm(cache, id, timeoutMs, log);
  return true;
}

/**
 * Remove every VM whose process is gone (and state that cannot be read), then the work directories of
 * vm-engine builds that were killed without a chance to clean up (SIGKILL). Returns the VM ids.
 *
 * `all` (the runner's job hooks, `purge --all`): everything of this user goes, running or not. The builds
 * still running are stopped first (SIGTERM: each removes its own VMs and work dir; SIGKILL after
 * `graceMs`), then every VM left in the run cache is forced down and torn down (jail, netns and tap,
 * cgroup, port forwards), then every build work dir is removed.
 */
export async function vmPurge(settings: Settings, log: Logger, o: { all?: boolean; graceMs?: number } = {}): Promise<string[]> {
  const { purgeWorkDirs } = await import('../engine/vm/workdir.js');
  if (!o.all) {
    const ids = await purgeVms(runCacheOf(settings), log);
    for (const dir of await purgeWorkDirs()) log.info('purged the work directory of a killed build', { dir });
    return ids;
  }
  const graceMs = o.graceMs ?? 10_000;
  // Builds first: stopping a build ends its VM too, and a build left running would start the next step's VM.
  const dirs = await purgeWorkDirs(undefined, { all: true, log, graceMs });
  const ids = await purgeAllVms(runCacheOf(settings), log, undefined, graceMs);
  for (const dir of dirs) log.info('purged a build work directory', { dir });
  return ids;
}
