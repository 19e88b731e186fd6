import * as fsp from 'node:fs/promises';
import * as path from 'node:path';

/**
 * A cgroup v2 per VM, `<cgroup2 mount>/firebuild/<vmm-id>` (or `<parent>/<vmm-id>` for a run cache with a
 * cgroup parent of its own: runner instances sharing a host): the VMM (QEMU, or the jailer and the
 * Firecracker it execs) starts inside it, so whatever it forks stays inside, and `kill`/`purge` reap a
 * cancelled or orphaned VM with one write to `cgroup.kill` (Linux >= 5.14). Hosts without a writable
 * cgroup v2 hierarchy run VMs without one (the pid is then the only handle).
 */
export const CGROUP_PARENT = 'firebuild';

/** The cgroup2 mount point from /proc/mounts (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones). */
export async function cgroup2Mount(mounts = '/proc/mounts'): Promise<string | undefined> {
  const text = await fsp.readFile(mounts, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f[2] === 'cgroup2' && f[1]) return f[1].replace(/\\040/g, ' ');
  }
  return undefined;
}

/**
 * Where the VM's cgroup is (or would be); undefined without a cgroup2 mount. `parent` is the subtree of the
 * VM's run cache (a runner instance's own, FIREBUILD_CGROUP_PARENT; checked relative when it was read).
 */
export async function vmCgroupPath(id: string, parent = CGROUP_PARENT): Promise<string | undefined> {
  if (!/^[a-z0-9]{1,64}$/.test(id)) throw new Error(`invalid cgroup id ${id}`);
  if (path.isAbsolute(parent) || parent.split('/').includes('..')) throw new Error(`invalid cgroup parent ${parent}`);
  const mount = await cgroup2Mount();
  return mount ? path.join(mount, parent, id) : undefined;
}

/** Make the VM's cgroup; undefined when the host has no usable cgroup v2 (with cgroup.kill). */
export async function createVmCgroup(id: string, parent = CGROUP_PARENT): Promise<string | undefined> {
  const dir = await vmCgroupPath(id, parent);
  if (!dir) return undefined;
  try {
    await fsp.mkdir(dir, { recursive: true });
    await fsp.access(path.join(dir, 'cgroup.kill'));
    return dir;
  } catch {
    await fsp.rmdir(dir).catch(() => undefined);
    return undefined;
  }
}

export async function cgroupPids(dir: string): Promise<number[]> {
  const text = await fsp.readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map(Number);
}

/** Kill every process in the cgroup, wait until it is empty, and remove it. Missing cgroups are fine. */
export async function reapCgroup(dir: string, timeoutMs = 5000): Promise<void> {
  try {
    await fsp.access(dir);
  } catch {
    return;
  }
  if ((await cgroupPids(dir)).length) {
    await fsp.writeFile(path.join(dir, 'cgroup.kill'), '1').catch(() => undefined);
    const deadline = Date.now() + timeoutMs;
    while ((await cgroupPids(dir)).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  }
  // rmdir fails with EBUSY for a moment after the last process leaves: retry briefly.
  for (let i = 0; i < 40; i++) {
    try {
      await fsp.rmdir(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
