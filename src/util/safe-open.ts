import { spawn } from 'node:child_process';
import { constants, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError, errnoCode } from './errors.js';

/**
 * Reading files of a directory another user controls, as root, without being tricked into reading
 * something else. firebuild-priv (runner-setup --privileged-vms) runs firebuild as root on behalf of the
 * runner user, whose store lives under that user's home: the user could replace a stored image's rootfs,
 * kernel or metadata by a symlink to /etc/shadow (or a symlinked directory, a hard link, a FIFO, a huge
 * sparse file) and read root's file back from the VM. The privileged helper says so explicitly with
 * FIREBUILD_ACTING_UID; every read of that store then goes through openChecked:
 *
 *  - every directory from `/` down is opened by one name relative to the one opened before, with
 *    O_NOFOLLOW|O_DIRECTORY, and checked with fstat (a directory, owned by the acting uid or root). Node has
 *    no openat(2): `/proc/self/fd/<dirfd>/<name>` is the same thing (the kernel jumps to the open directory
 *    through the fd's magic link, then looks up that one name), so no path is ever resolved twice;
 *  - the file itself is opened with O_NOFOLLOW|O_NONBLOCK|O_NOCTTY (a FIFO cannot hang the open) and
 *    checked with fstat: a regular file, owned by the acting uid or root, one link, at most `maxBytes`;
 *  - its content is read or copied through that descriptor only.
 */
export const ACTING_UID_ENV = 'FIREBUILD_ACTING_UID';

/** The uid firebuild reads a store for, when root runs it on that user's behalf (FIREBUILD_ACTING_UID); else undefined. */
export function actingUid(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env[ACTING_UID_ENV];
  if (v === undefined) return undefined;
  // Set but wrong is never "not acting": reading the store unchecked would be the unsafe default.
  if (!/^\d{1,10}$/.test(v) || Number(v) > 0xfffffffe) {
    throw new UserError(`${ACTING_UID_ENV}='${v}' is not a numeric uid: set it to the uid of the user whose store root reads (firebuild-priv sets it), or unset it`);
  }
  return Number(v);
}

/** Whose files may be read: the acting uid's and root's. */
export interface Trust {
  uid: number;
  /** Directories must also be root's and writable by nobody else, unless sticky (root's own trees: the run cache, the jails). */
  rootOnly?: boolean;
}

/** A refusal to read a file of a store root reads for another user: one line naming the file and why. */
export class UnsafeFileError extends UserError {}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const STICKY = 0o1000;
const FILE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

/** The path that opens `name` inside the directory open as `dir`, without resolving anything above it again (openat). */
export function at(dir: fsp.FileHandle, name: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/')) throw new Error(`at(): '${name}' is not one name`);
  return `/proc/self/fd/${dir.fd}/${name}`;
}

function owners(t: Trust): string {
  return t.rootOnly || t.uid === 0 ? 'root' : `uid ${t.uid} or root`;
}

function refuse(what: string, p: string, why: string, t: Trust): UnsafeFileError {
  return new UnsafeFileError(`${what} ${p} ${why}: refusing to read it as root on behalf of uid ${t.uid}`);
}

function kind(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

/** Why an open with O_NOFOLLOW failed, for the message (the refusal itself does not depend on it). */
async function openFailure(parent: fsp.FileHandle | undefined, name: string, err: unknown): Promise<string> {
  const code = errnoCode(err);
  if (code === 'ENOENT') return 'does not exist';
  if (code === 'ELOOP' || code === 'ENOTDIR' || code === 'EMLINK') {
    const st = parent ? await fsp.lstat(at(parent, name)).catch(() => undefined) : undefined;
    if (st?.isSymbolicLink()) return 'is a symbolic link';
    if (code === 'ENOTDIR') return st ? `is ${kind(st)}, not a directory` : 'is not a directory';
  }
  return `cannot be opened (${code ?? (err as Error).message})`;
}

function dirProblem(st: Stats, t: Trust): string | undefined {
  if (!st.isDirectory()) return `is ${kind(st)}, not a directory`;
  if (t.rootOnly) {
    if (st.uid !== 0) return `is owned by uid ${st.uid}, not root`;
    if ((st.mode & 0o022) !== 0 && (st.mode & STICKY) === 0) return `is writable by others (mode ${(st.mode & 0o7777).toString(8)})`;
    return undefined;
  }
  if (st.uid !== t.uid && st.uid !== 0) return `is owned by uid ${st.uid}, not ${owners(t)}`;
  return undefined;
}

/**
 * Open the directory `dir` (absolute) walking from `/`, one name at a time, never following a symlink;
 * every directory on the way is checked (see Trust). The caller closes the handle.
 */
export async function openDirChecked(dir: string, what: string, t: Trust, named = dir): Promise<fsp.FileHandle> {
  if (!path.isAbsolute(dir)) throw new Error(`openDirChecked: ${dir} is not absolute`);
  const full = path.resolve(named);
  const names = path.resolve(dir).split('/').filter(Boolean);
  let cur = await fsp.open('/', DIR_FLAGS);
  let walked = '/';
  try {
    const st = await cur.stat();
    const p = dirProblem(st, t);
    if (p) throw refuse(what, named, `(at /) ${p}`, t);
    for (const name of names) {
      walked = path.join(walked, name);
      let next: fsp.FileHandle;
      try {
        next = await fsp.open(at(cur, name), DIR_FLAGS);
      } catch (err) {
        throw refuse(what, named, `${walked === full ? '' : `(at ${walked}) `}${await openFailure(cur, name, err)}`, t);
      }
      await cur.close();
      cur = next;
      const problem = dirProblem(await cur.stat(), t);
      if (problem) throw refuse(what, named, `${walked === full ? '' : `(at ${walked}) `}${problem}`, t);
    }
    return cur;
  } catch (err) {
    await cur.close();
    throw err;
  }
}

/** A file opened and checked by openChecked: read it only through `handle`. */
export interface CheckedFile {
  path: string;
  handle: fsp.FileHandle;
  /** Apparent size and bytes allocated, as fstat gave them at the check. */
  size: number;
  allocated: number;
  close(): Promise<void>;
}

export interface CheckedOpen {
  /** What the file is, for the message ("image metadata", "the rootfs of image a/b:1"). */
  what: string;
  trust: Trust;
  /** A larger file is refused (a huge sparse file must not be read or copied). */
  maxBytes: number;
}

/**
 * Open `file` for reading without following a symlink anywhere in its path, and check what was opened:
 * a regular file, owned by the acting uid or root, with one link, at most `maxBytes`. The link count is
 * what stops a hard link to a file of root's (/etc/shadow is root's, so the owner check alone would pass
 * it; protected_hardlinks usually forbids making one, but is a sysctl). Anything else is one
 * UnsafeFileError line naming the file.
 */
export async function openChecked(file: string, o: CheckedOpen): Promise<CheckedFile> {
  const dir = await openDirChecked(path.dirname(path.resolve(file)), o.what, o.trust, file);
  let fh: fsp.FileHandle;
  try {
    try {
      fh = await fsp.open(at(dir, path.basename(file)), FILE_FLAGS);
    } catch (err) {
      throw refuse(o.what, file, await openFailure(dir, path.basename(file), err), o.trust);
    }
  } finally {
    await dir.close();
  }
  try {
    const st = await fh.stat();
    const t = o.trust;
    const problem = !st.isFile()
      ? `is ${kind(st)}`
      : st.uid !== t.uid && st.uid !== 0
        ? `is owned by uid ${st.uid}, not ${owners(t)}`
        : st.nlink !== 1
          ? `has ${st.nlink} hard links (a stored file has one)`
          : st.size > o.maxBytes
            ? `is ${st.size} bytes, over the ${o.maxBytes} bytes root reads for another user`
            : undefined;
    if (problem) throw refuse(o.what, file, problem, t);
    return { path: file, handle: fh, size: st.size, allocated: st.blocks * 512, close: () => fh.close() };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** The whole content of a checked file, read through its descriptor. */
export async function readChecked(file: string, o: CheckedOpen): Promise<string> {
  const f = await openChecked(file, o);
  try {
    const buf = Buffer.alloc(f.size);
    let off = 0;
    while (off < f.size) {
      const { bytesRead } = await f.handle.read(buf, off, f.size - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return buf.subarray(0, off).toString('utf8');
  } finally {
    await f.close();
  }
}

/**
 * Copy a checked file to `dest` (which must not exist; root's own directory), sparse and by reflink where
 * the file system has them. cp reads the source as /proc/self/fd/3, the descriptor handed to it: the
 * kernel reopens that open file (the same inode), never a name in the user's directory. The copy is then
 * cut to the size that was checked, so a file grown since cannot make it larger.
 */
export async function copyChecked(src: CheckedFile, dest: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn('cp', ['--sparse=always', '--reflink=auto', '/proc/self/fd/3', dest], { stdio: ['ignore', 'ignore', 'pipe', src.handle.fd] });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`cp of ${src.path} to ${dest} failed (exit ${code}): ${err.trim()}`))));
  });
  await fsp.truncate(dest, src.size);
}
