import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { UserError } from '../util/errors.js';
import type { Ext4Writer, NodeMeta } from './ext4-writer.js';
import { readTar, type TarEntry } from './tar-read.js';

/**
 * A tar stream (a root file system, or one image layer) applied entry by entry to an ext4 image being
 * written in userspace: nothing of it ever becomes a host file, so names, modes, links and owners from
 * the archive are only ever data. Names are normalized (a leading `/` or `./` dropped); a `..` component
 * (in a name, or in a hard link's target) is refused, naming the entry. Paths through symlinks the
 * archive made resolve inside the image (the writer's chroot semantics, as Docker unpacks a layer).
 *
 * A layer's whiteouts (`.wh.<name>` removes what a lower layer made, `.wh..wh..opq` empties its
 * directory of lower layers' entries) are applied, never written; in a flattened root file system (a
 * `docker export`) a whiteout means a layer is being passed off as one, and is refused.
 */
export interface TarStats {
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  devices: number;
  /** Sum of regular file sizes. */
  bytes: number;
}

export const emptyStats = (): TarStats => ({ entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, devices: 0, bytes: 0 });

export interface ApplyOptions {
  /** What the stream is, for error messages ("the export of image X", "layer 2 (sha256:…) of ref"). */
  what: string;
  /** An image layer: whiteouts allowed (and applied). */
  layer: boolean;
  stats?: TarStats;
}

export async function applyTar(w: Ext4Writer, source: Readable, o: ApplyOptions): Promise<TarStats> {
  const stats = o.stats ?? emptyStats();
  const fail = (why: string): UserError => new UserError(`unsafe entry in ${o.what}: ${why}; refusing to convert it`);
  for await (const e of readTar(source, o.what)) {
    const p = cleanTarPath(e.path, 'entry', fail);
    const parts = p === '' ? [] : p.split('/');
    // Docker's own bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`) and what is under it: never content.
    if (parts.slice(0, -1).some((x) => x.startsWith('.wh..wh.'))) continue;
    const base = parts[parts.length - 1] ?? '';
    if (base.startsWith('.wh.')) {
      if (!o.layer) throw fail(`whiteout ${JSON.stringify(p)} in what should be a flattened root file system`);
      const dir = path.posix.dirname(p) === '.' ? '/' : path.posix.dirname(p);
      if (base === '.wh..wh..opq') w.clearDir(dir);
      else if (!base.startsWith('.wh..wh.')) w.remove(path.posix.join(dir, base.slice(4)));
      continue;
    }
    stats.entries++;
    await add(w, e, p === '' ? '/' : p, fail, stats);
  }
  return stats;
}

async function add(w: Ext4Writer, e: TarEntry, p: string, fail: (why: string) => UserError, stats: TarStats): Promise<void> {
  const meta: NodeMeta = { mode: e.mode & 0o7777, uid: e.uid, gid: e.gid, mtime: e.mtime };
  if (e.atime) meta.atime = e.atime;
  if (e.ctime) meta.ctime = e.ctime;
  if (e.xattrs.size) meta.xattrs = e.xattrs;
  switch (e.type) {
    case 'dir':
      stats.dirs++;
      w.addDir(p, meta);
      return;
    case 'file':
      stats.files++;
      stats.bytes += e.size;
      await w.addFile(p, meta, e.size, e.body);
      return;
    case 'symlink':
      stats.symlinks++;
      // Kept exactly (an absolute target stays absolute: it resolves inside the image, in the guest).
      w.addSymlink(p, e.linkTarget ?? '', meta);
      return;
    case 'hardlink': {
      stats.hardlinks++;
      const target = cleanTarPath(e.linkTarget ?? '', `hard link ${JSON.stringify(e.path)} target`, fail);
      if (target === '') throw fail(`hard link ${JSON.stringify(e.path)} points at the root directory`);
      w.addHardlink(p, target);
      return;
    }
    case 'char':
    case 'block':
    case 'fifo':
      stats.devices++;
      w.addSpecial(p, e.type, meta, e.rdev);
      return;
  }
}

/** A name relative to the image's root ('' for the root itself), or a UserError naming it. */
export function cleanTarPath(p: string, role: string, fail: (why: string) => UserError): string {
  const parts = p.split('/').filter((x) => x !== '' && x !== '.');
  if (parts.includes('..')) throw fail(`${role} ${JSON.stringify(p)} climbs out of the root with ..`);
  return parts.join('/');
}
