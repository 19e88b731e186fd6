import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { stopOwners } from '../../runtime/stop.js';
import { identify, vmmAlive } from '../../runtime/vmm-process.js';
import type { Logger } from '../../util/logger.js';
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

type Owner = { pid: number; startTime: string; bootId: string };

/** This user's work directories in `tmp` (never another user's build, never a planted symlink), with their owners. */
async function workDirs(tmp: string): Promise<{ dir: string; mtimeMs: number; owner: Owner | undefined }[]> {
  const out: { dir: string; mtimeMs: number; owner: Owner | undefined }[] = [];
  for (const name of await fsp.readdir(tmp).catch(() => [] as string[])) {
    if (!name.startsWith(WORK_PREFIX)) continue;
    const dir = path.join(tmp, name);
    const st = await fsp.lstat(dir).catch(() => undefined);
    if (!st?.isDirectory() || st.uid !== process.getuid?.()) continue;
    const owner = await fsp.readFile(path.join(dir, OWNER), 'utf8').then((t) => JSON.parse(t) as Owner, () => undefined);
    out.push({ dir, mtimeMs: st.mtimeMs, owner: owner && typeof owner.pid === 'number' ? owner : undefined });
  }
  return out;
}

/**
 * Remove the work directories in `tmp` whose building process is gone; returns their paths. With `all`
 * (`purge --all`, the runner's job hooks) every one of this user's goes: the builds still running are
 * stopped first (SIGTERM, so each removes its own VMs and work dir; SIGKILL after `graceMs`).
 */
export async function purgeWorkDirs(tmp = os.tmpdir(), o: { all?: false } | { all: true; log: Logger; graceMs?: number } = {}): Promise<string[]> {
  const removed: string[] = [];
  if (o.all) await stopOwners((await workDirs(tmp)).flatMap((w) => (w.owner ? [w.owner] : [])), o.graceMs ?? 10_000, o.log);
  for (const w of await workDirs(tmp)) {
    const orphan = o.all || (w.owner ? !vmmAlive(w.owner) : Date.now() - w.mtimeMs > GRACE_MS);
    if (!orphan) continue;
    await fsp.rm(w.dir, { recursive: true, force: true });
    removed.push(w.dir);
  }
  return removed;
}
