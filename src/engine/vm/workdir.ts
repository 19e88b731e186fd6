import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { identify, vmmAlive } from '../../runtime/vmm-process.js';
import { ownedTempDir } from '../../util/private-dir.js';

/**
 * A vm-engine build's work directory (every stage's disk: GiBs), `$TMPDIR/firebuild-vmbuild-*`. It is
 * owned by the building process from creation (a SIGINT/SIGTERM removes it) and names that process in
 * `owner.json` (pid, start time, boot id), so that after a SIGKILL, which no handler sees, `purge` can
 * tell an orphan from a build that still runs.
 */
export const WORK_PREFIX = 'firebuild-vmbuild-';
const OWNER = 'owner.json';
/** A work dir without an owner file younger than this is a build between mkdtemp and writing it. */
const GRACE_MS = 60_000;

export async function makeWorkDir(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const work = await ownedTempDir(WORK_PREFIX);
  await fsp.writeFile(path.join(work.path, OWNER), JSON.stringify(identify(process.pid)) + '\n', { mode: 0o600 });
  return { dir: work.path, remove: work.remove };
}

/** Remove the work directories in `tmp` whose building process is gone; returns their paths. */
export async function purgeWorkDirs(tmp = os.tmpdir()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await fsp.readdir(tmp).catch(() => [] as string[])) {
    if (!name.startsWith(WORK_PREFIX)) continue;
    const dir = path.join(tmp, name);
    const st = await fsp.lstat(dir).catch(() => undefined);
    // Only directories of this user: never another user's build, never a planted symlink.
    if (!st?.isDirectory() || st.uid !== process.getuid?.()) continue;
    const owner = await fsp.readFile(path.join(dir, OWNER), 'utf8').then((t) => JSON.parse(t) as { pid: number; startTime: string; bootId: string }, () => undefined);
    const orphan = owner && typeof owner.pid === 'number' ? !vmmAlive(owner) : Date.now() - st.mtimeMs > GRACE_MS;
    if (!orphan) continue;
    await fsp.rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}
