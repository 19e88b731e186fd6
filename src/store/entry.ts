import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { fsyncDir, randomHex } from '../util/fs.js';
import { UnsafeFileError, at, openDirChecked, type Trust } from '../util/safe-open.js';

/**
 * The layout of one stored entry (an image version, a kernel), switched atomically:
 *
 *   <entry>/.c-<random>/{rootfs.ext4,metadata.json}   immutable content
 *   <entry>/.current -> .c-<random>                    the one switch
 *   <entry>/rootfs.ext4 -> .current/rootfs.ext4        stable names (and what older firebuilds read)
 *
 * `--overwrite` moves the new content in beside the old, then renames a new `.current` symlink over the
 * old one: one rename(2), so a reader (or a kill at any point) sees the old or the new content whole,
 * never a missing or mixed one. An entry written by an older firebuild (plain files, no `.current`) is
 * first given this layout with hard links, each name replaced by one rename, never missing.
 */
export const CURRENT = '.current';

const rnd = (): Promise<string> => randomHex(6);

/** Tests only: FIREBUILD_TEST_STORE_HOOK=<point> makes the store print `AT <point>` there and hang (to be killed). */
export async function testPoint(name: string): Promise<void> {
  if (process.env.FIREBUILD_TEST_STORE_HOOK !== name) return;
  process.stdout.write(`AT ${name}\n`);
  await new Promise(() => setInterval(() => undefined, 1 << 30));
}

/** The path of `file` of an entry: through `.current` when the entry has one, else the legacy plain file. */
export async function entryFile(entry: string, file: string): Promise<string> {
  const st = await fsp.lstat(path.join(entry, CURRENT)).catch(() => undefined);
  return st?.isSymbolicLink() ? path.join(entry, CURRENT, file) : path.join(entry, file);
}

/** The content directories this layout makes (`.c-<random hex>`). */
const CONTENT_DIR_RE = /^\.c-[0-9a-f]{1,64}$/;

/**
 * entryFile for a reader that follows no symlink (root reading another user's store, util/safe-open.ts):
 * `.current` is read, never followed, and must name one of the entry's own content directories; the
 * result is a path without symlinks, for openChecked (which walks it again, fd by fd, and checks it).
 */
export async function entryFileNoFollow(entry: string, file: string, trust: Trust): Promise<string> {
  const dir = await openDirChecked(entry, 'the stored entry', trust);
  try {
    const cur = at(dir, CURRENT);
    const st = await fsp.lstat(cur).catch(() => undefined);
    if (!st?.isSymbolicLink()) return path.join(entry, file);
    const target = await fsp.readlink(cur);
    if (!CONTENT_DIR_RE.test(target)) {
      throw new UnsafeFileError(`${path.join(entry, CURRENT)} points to '${target}', not a content directory of the entry: refusing to read it as root on behalf of uid ${trust.uid}`);
    }
    return path.join(entry, target, file);
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UnsafeFileError(`the stored entry ${entry} cannot be read (${(err as Error).message}): refusing to read it as root on behalf of uid ${trust.uid}`);
  } finally {
    await dir.close();
  }
}

/** Build a new entry at `entry` (which must not exist) around `content` (moved in); the caller renames it into place. */
export async function newEntry(entry: string, content: string): Promise<void> {
  await fsp.mkdir(entry, { mode: 0o755 });
  const c = `.c-${await rnd()}`;
  await fsp.rename(content, path.join(entry, c));
  await fsp.symlink(c, path.join(entry, CURRENT));
  for (const f of await fsp.readdir(path.join(entry, c))) await fsp.symlink(`${CURRENT}/${f}`, path.join(entry, f));
  await fsyncDir(entry);
}

/** Replace the content of the existing entry `dest` by `content` (moved in), atomically. Call under the entry's lock. */
export async function switchEntry(dest: string, content: string): Promise<void> {
  const old = await prepare(dest);
  const c = `.c-${await rnd()}`;
  await fsp.rename(content, path.join(dest, c));
  await fsyncDir(dest);
  await testPoint('content-in');
  const next = path.join(dest, `.next-${await rnd()}`);
  await fsp.symlink(c, next);
  await fsp.rename(next, path.join(dest, CURRENT));
  await fsyncDir(dest);
  await testPoint('switched');
  const files = await fsp.readdir(path.join(dest, c));
  for (const f of files) await ensureLink(dest, f);
  // Names only the old content had (an initrd no longer given) go.
  for (const n of await fsp.readdir(dest)) {
    if (n.startsWith('.') || files.includes(n)) continue;
    const p = path.join(dest, n);
    if ((await fsp.lstat(p)).isSymbolicLink() && (await fsp.readlink(p)) === `${CURRENT}/${n}`) await fsp.unlink(p);
  }
  await fsp.rm(path.join(dest, old), { recursive: true, force: true });
}

/** `<dest>/<f>` as a symlink to `.current/<f>`, replacing a plain file or another link with one rename. */
async function ensureLink(dest: string, f: string): Promise<void> {
  const p = path.join(dest, f);
  const want = `${CURRENT}/${f}`;
  const st = await fsp.lstat(p).catch(() => undefined);
  if (st?.isDirectory() || (st?.isSymbolicLink() && (await fsp.readlink(p)) === want)) return;
  const tmp = path.join(dest, `.l-${await rnd()}`);
  await fsp.symlink(want, tmp);
  await fsp.rename(tmp, p);
}

/**
 * Make `dest` switchable and return its current content directory's name: remove what killed writers
 * left (content never switched to, temporary links), finish a conversion that was killed midway, and
 * convert a legacy entry (hard links into a content dir, `.current`, then each plain file replaced by its
 * link). At every step each name resolves to the same old, complete content.
 */
async function prepare(dest: string): Promise<string> {
  const cur = await fsp.readlink(path.join(dest, CURRENT)).catch(() => undefined);
  for (const n of await fsp.readdir(dest)) {
    if ((n.startsWith('.c-') && n !== cur) || n.startsWith('.next-') || n.startsWith('.l-')) await fsp.rm(path.join(dest, n), { recursive: true, force: true });
  }
  if (cur) {
    for (const f of await fsp.readdir(path.join(dest, cur))) await ensureLink(dest, f);
    return cur;
  }
  const c = `.c-${await rnd()}`;
  await fsp.mkdir(path.join(dest, c), { mode: 0o755 });
  const files: string[] = [];
  for (const e of await fsp.readdir(dest, { withFileTypes: true })) {
    if (e.name.startsWith('.') || !e.isFile()) continue;
    await fsp.link(path.join(dest, e.name), path.join(dest, c, e.name));
    files.push(e.name);
  }
  await fsyncDir(path.join(dest, c));
  await testPoint('legacy-linked');
  const next = path.join(dest, `.next-${await rnd()}`);
  await fsp.symlink(c, next);
  await fsp.rename(next, path.join(dest, CURRENT));
  await fsyncDir(dest);
  await testPoint('legacy-current');
  for (const [i, f] of files.entries()) {
    await ensureLink(dest, f);
    if (i === 0) await testPoint('legacy-file');
  }
  await fsyncDir(dest);
  return c;
}
