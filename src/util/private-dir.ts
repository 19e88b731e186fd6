import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { own } from './cleanup.js';
import { InternalError, UserError, errnoCode } from './errors.js';

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

/** The names ownedTempDir gives: `firebuild-<what>-` and mkdtemp's six letters and digits. */
const OWNED_PREFIX_RE = /^firebuild-[a-z]+-$/;
const OWNED_NAME_RE = /^firebuild-[a-z]+-[A-Za-z0-9]{6}$/;

/**
 * A temp directory (mkdtemp under the system's temp dir, `firebuild-<what>-XXXXXX`) owned by this process
 * from the moment it exists: if firebuild is cancelled (SIGINT/SIGTERM) while it is there, the cancel
 * removes it (util/cleanup.ts). The registration describes it by path ({kind: 'dir'}): after a SIGKILL the
 * actions' post step removes it (removeOwnedTempDir).
 */
export async function ownedTempDir(prefix: string): Promise<OwnedDir> {
  if (!OWNED_PREFIX_RE.test(prefix)) throw new InternalError(`owned temp dir prefix '${prefix}' is not firebuild-<letters>-`);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  const rm = (): Promise<void> => fsp.rm(dir, { recursive: true, force: true });
  const release = own(`temp dir ${dir}`, rm, { kind: 'dir', path: dir });
  return {
    path: dir,
    remove: async () => {
      await rm();
      release();
    },
  };
}

/**
 * Remove a temp directory another firebuild process made with ownedTempDir and could not remove (it was
 * killed): only a path that is one, a `firebuild-<what>-XXXXXX` directory right under this process's temp
 * dir, a real directory (not a symlink) of this user. Anything else is refused with the reason, never
 * touched. Returns 'removed', 'gone' (nothing there) or the reason it was refused.
 */
export async function removeOwnedTempDir(dir: string, tmp = os.tmpdir()): Promise<'removed' | 'gone' | { refused: string }> {
  if (!path.isAbsolute(dir) || path.resolve(dir) !== dir || path.dirname(dir) !== path.resolve(tmp) || !OWNED_NAME_RE.test(path.basename(dir))) {
    return { refused: `not a firebuild temp directory under ${path.resolve(tmp)}` };
  }
  let st;
  try {
    st = await fsp.lstat(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 'gone';
    throw err;
  }
  const uid = process.geteuid?.() ?? 0;
  if (st.isSymbolicLink() || !st.isDirectory()) return { refused: 'not a directory' };
  if (st.uid !== uid) return { refused: `owned by uid ${st.uid}, not ${uid}` };
  await fsp.rm(dir, { recursive: true, force: true });
  return 'removed';
}
