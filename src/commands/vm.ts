import type { Settings } from '../profile/settings.js';
import { followConsole, readConsole } from '../runtime/console.js';
import { z } from 'zod';
import { isVmId, vmmOf, vmRunning, type VmState } from '../runtime/state.js';
import { killVm, purgeAllVms, purgeVms, removeVmsById } from '../runtime/stop.js';
import type { Resource } from '../util/cleanup.js';
import type { Logger } from '../util/logger.js';
import { removeOwnedTempDir } from '../util/private-dir.js';
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

const ResourcesSchema = z.array(z.union([
  z.object({ kind: z.literal('vm'), id: z.string() }).strict(),
  z.object({ kind: z.literal('dir'), path: z.string() }).strict(),
]));

export interface Leftovers {
  /** The VMs torn down (ids). */
  vms: string[];
  /** The temp directories removed. */
  dirs: string[];
  /** What was not touched, and why (a path that is no firebuild temp dir, an entry that is no resource). */
  refused: string[];
}

/**
 * What a killed firebuild process still owned (its resources as util/cleanup.ts described them while it
 * ran: the actions' post step reads them from the main step's state): its VMs, by id in this run cache,
 * each forced down and torn down; then its temp directories, each only if it is a firebuild temp dir
 * right under the temp dir (private-dir.ts removeOwnedTempDir), never another path. What is gone already
 * is skipped; `resources` is checked entry by entry, never trusted.
 */
export async function removeLeftovers(settings: Settings, resources: unknown, log: Logger): Promise<Leftovers> {
  const parsed = ResourcesSchema.safeParse(resources);
  if (!parsed.success) return { vms: [], dirs: [], refused: ['the list of owned resources is not one firebuild wrote'] };
  const list: Resource[] = parsed.data;
  const refused: string[] = [];
  const ids = list.flatMap((r) => (r.kind !== 'vm' ? [] : isVmId(r.id) ? [r.id] : (refused.push(`VM id ${JSON.stringify(r.id)}: not a VM id`), [])));
  // VMs first: a build VM's disks are in its work directory.
  const { removed: vms, busy } = ids.length ? await removeVmsById(runCacheOf(settings), ids, log) : { removed: [], busy: [] };
  for (const id of busy) refused.push(`VM ${id}: the process that created it still runs`);
  const dirs: string[] = [];
  for (const r of list) {
    if (r.kind !== 'dir') continue;
    const got = await removeOwnedTempDir(r.path);
    if (got === 'removed') dirs.push(r.path);
    else if (got !== 'gone') refused.push(`${r.path}: ${got.refused}`);
  }
  return { vms, dirs, refused };
}
