import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { own } from './cleanup.js';
import { UserError, errnoCode } from './errors.js';

/**
 * A directory only this user can enter: created mode 0700 when missing, then checked with lstat (a real
 * directory, not a symlink; owned by the effective uid; no group or other access). Anything else at the
 * path (a planted symlink, another user's directory, a directory others can write) is refused with one
 * line, never followed or reused. Under a world-writable sticky parent (/tmp) nobody else can then
 * rename or replace it, so paths inside it need no unpredictable names.
 */
export async function ensurePrivateDir(dir: string, what = 'private directory'): Promise<string> {
  try {
    await fsp.mkdir(dir, { mode: 0o700 });
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') {
      throw new UserError(`cannot create the ${what} ${dir} (${errnoCode(err) ?? (err as Error).message}): check that its parent exists and is writable`);
    }
  }
  const st = await fsp.lstat(dir);
  const uid = process.geteuid?.() ?? 0;
  const problem = st.isSymbolicLink()
    ? 'is a symbolic link'
    : !st.isDirectory()
      ? 'is not a directory'
      : st.uid !== uid
        ? `is owned by uid ${st.uid}, not ${uid}`
        : (st.mode & 0o077) !== 0
          ? `has mode ${(st.mode & 0o777).toString(8)}, not 700`
          : undefined;
  if (problem) throw new UserError(`the ${what} ${dir} ${problem}: someone else may have planted it; remove it (rm -rf ${dir}) and run again`);
  return dir;
}

/** A fresh directory with an unpredictable name inside a private directory (mkdtemp). */
export async function privateTempDir(parent: string, prefix: string): Promise<string> {
  return fsp.mkdtemp(path.join(await ensurePrivateDir(parent), prefix));
}

/** The default place for a user's private scratch directories: `<tmpdir>/firebuild-<uid>` (mode 0700, checked). */
export function userTempRoot(base = os.tmpdir()): string {
  return path.join(base, `firebuild-${process.geteuid?.() ?? 0}`);
}

export interface OwnedDir {
  path: string;
  /** Remove the directory, then release it from the process's cleanups. */
  remove(): Promise<void>;
}

/**
 * A temp directory (mkdtemp under the system's temp dir) owned by this process from the moment it exists:
 * if firebuild is cancelled (SIGINT/SIGTERM) while it is there, the cancel removes it (util/cleanup.ts).
 */
export async function ownedTempDir(prefix: string): Promise<OwnedDir> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  const rm = (): Promise<void> => fsp.rm(dir, { recursive: true, force: true });
  const release = own(`temp dir ${dir}`, rm);
  return {
    path: dir,
    remove: async () => {
      await rm();
      release();
    },
  };
}
