import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { cniDel, loadCniNetwork, withTapPlugin } from '../net/cni.js';
import { NETNS_DIR, netnsName, removeNetns, removePortForwards } from '../net/host.js';
import { isolatedVmProcesses } from '../net/isolated-user.js';
import { DEFAULT_LOCK_DIR } from '../net/network.js';
import { diskFullError } from '../util/disk-space.js';
import type { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { backendFor } from '../vmm/backend.js';
import { reapCgroup, vmCgroupPath } from './cgroup.js';
import { endVm } from './owner.js';
import { STOP_LINE, exitCodeOf, readConsole } from './console.js';
import { type RunCache, vmmOf, vmOrphaned, type VmState } from './state.js';
import { identify, signalVmm, vmmAlive, waitVmmGone, type VmmIdentity } from './vmm-process.js';

/** The end of a VM's life: the graceful stop request, kill, the teardown of all it left, and purge. */

export const RUN_DISK_HINT = 'free space there, or point --run-cache at a larger file system';

/** The one-line error when the file system holding the VM's disk is full (checked after a VM failed), else undefined. */
export async function vmDiskFull(s: VmState): Promise<UserError | undefined> {
  return diskFullError(path.join(s.cacheDir, 'rootfs.ext4'), `the disk of VM ${s.name}`, RUN_DISK_HINT);
}

/** Ask the guest to stop: the stop line on QEMU's console socket, or Ctrl+Alt+Del through Firecracker's API. */
export async function requestStop(s: VmState): Promise<boolean> {
  try {
    return await backendFor(s.backend).requestStop(s, STOP_LINE);
  } catch {
    // no channel (the guest or the VMM is wedged): the forced path follows
    return false;
  }
}

/**
 * Remove everything a VM left on the host; each step tolerates what is already gone. One at a time per VM
 * (endVm): the VM is released from this process's ownership when nothing of it is left.
 */
export function teardown(cache: RunCache, s: VmState, lockDir: string, log: Logger): Promise<void> {
  return endVm(s.id, () => removeVm(cache, s, lockDir, log));
}

async function removeVm(cache: RunCache, s: VmState, lockDir: string, log: Logger): Promise<void> {
  if (s.cgroup) await reapCgroup(s.cgroup);
  else {
    // A launch killed between making the VM's cgroup and recording it in the state: the cgroup named after
    // the id is the VM's all the same (ids are unique per VM).
    const cg = await vmCgroupPath(s.id, cache.cgroupParent).catch(() => undefined);
    if (cg) await reapCgroup(cg);
  }
  // Only the recorded VMM (pid, start time, boot id), never whatever process holds its pid now.
  if (signalVmm(vmmOf(s), 'SIGKILL', { group: s.network.isolated === true })) await waitVmmGone(vmmOf(s), 5000);
  // An isolated VM whose wrapper died alone (SIGKILL, no cgroup): its QEMU and slirp4netns, found by their
  // process group and the run cache path on their command line.
  if (s.network.isolated && s.pid) {
    for (const p of await isolatedVmProcesses(s.pid, s.cacheDir)) {
      const who = identify(p);
      if (signalVmm(who, 'SIGKILL')) await waitVmmGone(who, 5000);
    }
  }
  const problems: string[] = [];
  const cni = s.network.cni;
  if (cni) {
    if (s.network.ports.length) await removePortForwards(lockDir, s.id).catch((e: Error) => problems.push(e.message));
    const result = await fsp.readFile(path.join(s.cacheDir, 'cni-result.json'), 'utf8').then((t) => JSON.parse(t) as unknown).catch(() => undefined);
    try {
      const { net } = await withTapPlugin(await loadCniNetwork(cni.confDir, cni.network), cni.binDir);
      await cniDel(net, cni.binDir, { containerId: s.id, netns: path.join(NETNS_DIR, cni.netns), ifname: cni.ifname }, result);
    } catch (e) {
      problems.push((e as Error).message);
    }
    await removeNetns(cni.netns).catch((e: Error) => problems.push(e.message));
  }
  if (s.jailDir) await fsp.rm(s.jailDir, { recursive: true, force: true });
  await cache.remove(s.id);
  if (problems.length) log.warn('teardown left something behind', { id: s.id, problems });
}

/** Stop a VM (graceful stop, then forced after the timeout) and remove everything it left. */
export async function killVm(cache: RunCache, id: string, timeoutMs: number, log: Logger, lockDir = DEFAULT_LOCK_DIR): Promise<void> {
  const s = await cache.read(id);
  let stop: 'graceful' | 'forced' | 'already stopped' = 'already stopped';
  const vmm = vmmOf(s);
  if (vmmAlive(vmm)) {
    const asked = await requestStop(s);
    stop = 'graceful';
    if (!asked || !(await waitVmmGone(vmm, timeoutMs))) {
      stop = 'forced';
      log.warn(asked ? 'VM did not stop in time: forcing it' : 'VM has no stop channel: forcing it', { id });
      if (!s.cgroup && signalVmm(vmm, 'SIGTERM', { group: s.network.isolated === true })) await waitVmmGone(vmm, 2000);
    }
  }
  const exit = exitCodeOf(await readConsole(s.serialLog));
  await teardown(cache, s, lockDir, log);
  log.info('VM removed', { id, name: s.name, stop, ...(exit !== undefined ? { 'exit-code': exit } : {}) });
}

/**
 * Remove every VM whose process is gone (crashed, powered off, killed, or whose creating `run` died before
 * its VMM started), with all it left on the host; then every run cache directory holding no readable state
 * (RunCache.unreadable: a corrupt state.json, a directory a killed `run` left): its directory, and the
 * cgroup and network namespace named after its id (the state that would name more is unreadable).
 */
export async function purgeVms(cache: RunCache, log: Logger, lockDir = DEFAULT_LOCK_DIR): Promise<string[]> {
  // Gone: the VMM has exited; or a build VM whose build was killed (its VM would run the RUN on for nobody).
  const gone = (await cache.list()).filter((v) => !v.running || vmOrphaned(v));
  for (const v of gone) {
    await teardown(cache, v, lockDir, log);
    log.info('purged', { id: v.id, name: v.name });
  }
  const unreadable = await purgeUnreadable(cache, await cache.unreadable(), log);
  return [...gone.map((v) => v.id), ...unreadable];
}

/** Remove VM directories without a readable state (their cgroup and netns too, when the id is known); returns their ids or names. */
async function purgeUnreadable(cache: RunCache, unreadable: Awaited<ReturnType<RunCache['unreadable']>>, log: Logger): Promise<string[]> {
  for (const u of unreadable) {
    if (u.id) {
      const cg = await vmCgroupPath(u.id, cache.cgroupParent);
      if (cg) await reapCgroup(cg);
      await removeNetns(netnsName(u.id)).catch((e: Error) => log.warn('could not remove the network namespace', { id: u.id, error: e.message }));
    }
    await fsp.rm(u.dir, { recursive: true, force: true });
    log.info('purged unreadable VM state', { dir: u.dir, reason: u.reason });
  }
  return unreadable.map((u) => u.id ?? u.name);
}

/**
 * The VMs `ids` of a process that was killed (the actions' post step: the ids its main step recorded as it
 * launched them), each forced down and torn down as `purge --all` does (no graceful stop: the work they
 * did is cancelled): its VMM, cgroup, network, jail and run cache entry. An id with no readable state (its
 * launch was killed while creating it) has its directory, cgroup and network namespace removed as purge
 * does. Ids not in the run cache are skipped; so is a VM whose creating or building process still runs
 * (it is not a killed process's: `busy`).
 */
export async function removeVmsById(cache: RunCache, ids: string[], log: Logger, lockDir = DEFAULT_LOCK_DIR): Promise<{ removed: string[]; busy: string[] }> {
  const wanted = new Set(ids);
  const listed = (await cache.list()).filter((v) => wanted.has(v.id));
  const live = (o: VmmIdentity | undefined): boolean => !!o && o.pid !== process.pid && vmmAlive(o);
  const busy = listed.filter((v) => live(v.creator) || live(v.boundTo)).map((v) => v.id);
  const vms = listed.filter((v) => !busy.includes(v.id));
  for (const v of vms) {
    await teardown(cache, v, lockDir, log);
    log.info('VM removed', { id: v.id, name: v.name, running: v.running });
  }
  const left = (await cache.unreadable(0)).filter((u) => u.id !== undefined && wanted.has(u.id));
  return { removed: [...vms.map((v) => v.id), ...(await purgeUnreadable(cache, left, log))], busy };
}

/**
 * Stop processes that own VMs or build work (a vm-engine build, a `run` in the foreground) and that must
 * not outlive a CI job: SIGTERM first, so each runs its own cleanups (util/cleanup.ts: its VMs, its work
 * dir), then SIGKILL whatever is still there after `graceMs`. Only processes whose recorded identity
 * (pid, start time, boot id) still matches are signalled. Returns how many were running.
 */
export async function stopOwners(owners: VmmIdentity[], graceMs: number, log: Logger): Promise<number> {
  const live = owners.filter((o) => o.pid !== process.pid && vmmAlive(o));
  for (const o of live) signalVmm(o, 'SIGTERM');
  for (const o of live) {
    if (await waitVmmGone(o, graceMs)) continue;
    log.warn('a firebuild process did not end on SIGTERM: killing it', { pid: o.pid });
    if (signalVmm(o, 'SIGKILL')) await waitVmmGone(o, 5000);
  }
  return live.length;
}

/**
 * `purge --all` (the runner's job hooks): every VM of the run cache goes, running or not, build VMs
 * included, each torn down as `kill` does but without waiting for the guest (a job is over; nothing in
 * it is worth a graceful stop); then every directory without a readable state, however young. The
 * processes that created those VMs are stopped first (stopOwners), so none of them starts another.
 */
export async function purgeAllVms(cache: RunCache, log: Logger, lockDir = DEFAULT_LOCK_DIR, graceMs = 10_000): Promise<string[]> {
  const owners = (await cache.list()).flatMap((v) => [v.boundTo, v.creator].filter((o): o is NonNullable<typeof o> => !!o));
  await stopOwners(owners, graceMs, log);
  // What their cleanups removed is gone from the listing now; the rest is forced.
  const vms = await cache.list();
  for (const v of vms) {
    await teardown(cache, v, lockDir, log);
    log.info('purged', { id: v.id, name: v.name, running: v.running });
  }
  return [...vms.map((v) => v.id), ...(await purgeUnreadable(cache, await cache.unreadable(0), log))];
}
