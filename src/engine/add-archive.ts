import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { withDecompressed } from '../rootfs/decompress.js';
import { cleanTarPath } from '../rootfs/tar-apply.js';
import type { Ext4Time } from '../rootfs/ext4-read.js';
import { InvalidArchive, readTar, type TarEntry } from '../rootfs/tar-read.js';
import { UserError } from '../util/errors.js';
import type { Placement } from './vm-fs.js';

/**
 * `ADD <local archive>` of the vm engine, read in-process: the archive (tar, optionally gzip, bzip2, xz
 * or zstd compressed) is parsed by readTar and its entries become placements the step writes into the
 * image with debugfs. Nothing of the archive becomes a host file: no name, mode, owner, link or device
 * node from it ever reaches the host file system. Only file CONTENT is staged, in private files whose
 * names firebuild chooses (`<prefix><n>`, mode 0600, inside the step's own scratch directory).
 *
 * Docker's rules for the tree (moby's Unpack, which both builders use): names are relative to the
 * destination (a leading `/` or `./` dropped); a `..` component, in a name or in a hard link's target,
 * is refused naming the entry; a later entry replaces an earlier one with the same path (a directory
 * over a directory only takes its metadata; anything else over a directory drops its subtree); missing
 * parents are 0755 root:root directories; the archive's root entry is skipped. An entry under a
 * symlink the archive made is refused (as the guard before it refused it): Docker would resolve it
 * inside a chroot of the destination, which firebuild does not emulate. Entries keep their mtimes.
 *
 * Whether the file is an archive at all is BuildKit's test (solver/llbsolver/file/unpack.go): it is
 * when, decompressed, its first tar header reads; anything else (a .gz of a single file, a text file, a
 * tar with no entry) is not, and placeArchive returns undefined: the caller copies the file as it is.
 */
type Node =
  | { type: 'dir'; meta: Meta; implicit?: boolean }
  | { type: 'file'; inode: Inode }
  | { type: 'symlink'; target: string; meta: Meta }
  | { type: 'char' | 'block' | 'fifo'; meta: Meta; rdev?: [number, number] };

interface Meta { mode: number; uid: number; gid: number; xattrs: Map<string, Buffer>; mtime?: Ext4Time }
interface Inode { host: string; meta: Meta }

/**
 * The archive's entries as placements under `dest` (parents first, in the order a sorted walk of the
 * extracted tree gives); undefined when the file is not a tar archive (no first entry reads).
 * `prefix` names the private content files (a path inside the step's scratch).
 */
export async function placeArchive(file: string, dest: string, prefix: string, what: string, forcedMode: number | undefined): Promise<Placement[] | undefined> {
  const tree = new Map<string, Node>();
  const staged = { n: 0 };
  const read = { entries: 0 };
  try {
    await withDecompressed(file, what, (tar) => readInto(tree, tar, prefix, staged, what, read));
  } catch (err) {
    // Not decompressible, or no tar header at its start: not an archive. A failure after the first entry is the archive's.
    if (read.entries === 0 && err instanceof InvalidArchive) return undefined;
    throw err;
  }
  if (read.entries === 0) return undefined;
  return toPlacements(tree, dest, prefix, forcedMode);
}

/** Every entry of the tar stream applied to the in-memory tree (relative, clean paths). */
async function readInto(tree: Map<string, Node>, source: Readable, prefix: string, staged: { n: number }, what: string, read: { entries: number }): Promise<void> {
  const fail = (why: string): UserError => new UserError(`unsafe entry in ${what}: ${why}; refusing to add it`);
  for await (const e of readTar(source, what)) {
    read.entries++;
    const p = cleanTarPath(e.path, 'entry', fail);
    if (p === '') continue; // the archive's root: the destination keeps its own metadata, as Docker's
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefixPath = parts.slice(0, i).join('/');
      const parent = tree.get(prefixPath);
      if (parent === undefined) tree.set(prefixPath, { type: 'dir', meta: { mode: 0o755, uid: 0, gid: 0, xattrs: new Map() }, implicit: true });
      else if (parent.type === 'symlink') throw fail(`entry ${JSON.stringify(e.path)} goes through the symlink ${JSON.stringify(prefixPath)}`);
      else if (parent.type !== 'dir') throw fail(`entry ${JSON.stringify(e.path)} is under ${JSON.stringify(prefixPath)}, which the archive made a ${parent.type}`);
    }
    const node = await nodeOf(e, tree, prefix, staged, fail);
    const old = tree.get(p);
    if (old?.type === 'dir' && node.type !== 'dir') for (const k of [...tree.keys()]) if (k.startsWith(p + '/')) tree.delete(k);
    tree.set(p, node);
  }
}

async function nodeOf(e: TarEntry, tree: Map<string, Node>, prefix: string, staged: { n: number }, fail: (why: string) => UserError): Promise<Node> {
  const meta: Meta = { mode: e.mode & 0o7777, uid: e.uid, gid: e.gid, xattrs: e.xattrs, mtime: e.mtime };
  switch (e.type) {
    case 'dir':
      return { type: 'dir', meta };
    case 'file': {
      const host = `${prefix}${staged.n++}`;
      try {
        await pipeline(e.body, fs.createWriteStream(host, { flags: 'wx', mode: 0o600 }) as Writable);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new UserError(`out of disk space staging the content of ${JSON.stringify(e.path)} in ${path.dirname(host)}: free some space on the host`);
        throw err;
      }
      return { type: 'file', inode: { host, meta } };
    }
    case 'symlink':
      // Kept exactly: an absolute target resolves inside the image, in the guest.
      return { type: 'symlink', target: e.linkTarget ?? '', meta };
    case 'hardlink': {
      const target = cleanTarPath(e.linkTarget ?? '', `hard link ${JSON.stringify(e.path)} target`, fail);
      const t = tree.get(target);
      if (target === '' || t?.type === 'dir') throw fail(`hard link ${JSON.stringify(e.path)} points at the directory ${JSON.stringify(e.linkTarget)}`);
      if (!t) throw fail(`hard link ${JSON.stringify(e.path)} points at ${JSON.stringify(e.linkTarget)}, which is not an earlier entry of the archive`);
      // The same inode for a file; a link to a symlink, a device or a FIFO is another such node.
      return t;
    }
    default:
      return { type: e.type, meta, ...(e.type === 'fifo' ? {} : { rdev: [e.rdev?.major ?? 0, e.rdev?.minor ?? 0] as [number, number] }) };
  }
}

/** Component-wise order: the order a walk of the tree, each directory's names sorted, gives. */
function walkOrder(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return (x[i] as string) < (y[i] as string) ? -1 : 1;
  return x.length - y.length;
}

/** An entry's own mtime (an implicit parent has none: made at the time of the write, as Docker's). */
const times = (m: Meta): { mtime?: Ext4Time } => (m.mtime ? { mtime: m.mtime } : {});

async function toPlacements(tree: Map<string, Node>, dest: string, prefix: string, forcedMode: number | undefined): Promise<Placement[]> {
  const out: Placement[] = [];
  const firstName = new Map<Inode, string>();
  let nx = 0;
  const xattrs = async (m: Meta): Promise<{ xattrs?: [string, string][] }> => {
    if (!m.xattrs.size) return {};
    const list: [string, string][] = [];
    for (const [name, value] of m.xattrs) {
      const f = `${prefix}xattr-${nx++}`;
      await fsp.writeFile(f, value, { flag: 'wx', mode: 0o600 });
      list.push([name, f]);
    }
    return { xattrs: list };
  };
  for (const rel of [...tree.keys()].sort(walkOrder)) {
    const n = tree.get(rel)!;
    const d = path.posix.join(dest, rel);
    if (n.type === 'file') {
      const first = firstName.get(n.inode);
      const m = n.inode.meta;
      if (first) out.push({ dest: d, type: 'hardlink', mode: forcedMode ?? m.mode, linkTo: first });
      else {
        firstName.set(n.inode, d);
        out.push({ dest: d, type: 'file', host: n.inode.host, mode: forcedMode ?? m.mode, owner: { uid: m.uid, gid: m.gid }, ...times(m), ...(await xattrs(m)) });
      }
      continue;
    }
    const owner = { uid: n.meta.uid, gid: n.meta.gid };
    if (n.type === 'symlink') out.push({ dest: d, type: 'symlink', mode: 0o777, linkTarget: n.target, owner, ...times(n.meta) });
    else if (n.type === 'dir') out.push({ dest: d, type: 'dir', mode: forcedMode ?? n.meta.mode, owner, ...times(n.meta), ...(await xattrs(n.meta)) });
    else out.push({ dest: d, type: n.type, mode: forcedMode ?? n.meta.mode, ...(n.rdev ? { rdev: n.rdev } : {}), owner, ...times(n.meta), ...(await xattrs(n.meta)) });
  }
  return out;
}
