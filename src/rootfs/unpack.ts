import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { exec } from '../util/exec.js';
import { Ext4Reader } from './debugfs.js';

/**
 * An ext4 image's tree into a directory, without mounting: `debugfs rdump` for contents and links, then
 * owners, modes (setuid bits included), hard links and device nodes restored from the inode table.
 * Needs root for owners and device nodes. Extended attributes are not restored.
 */
export async function unpackExt4(image: string, dir: string): Promise<number> {
  const reader = new Ext4Reader(image);
  const entries = await reader.tree({ xattrs: false });
  await exec('debugfs', ['-R', `rdump / ${dir}`, image]);
  const byInode = new Map<number, string>();
  for (const e of entries) {
    const p = path.join(dir, e.path);
    if (e.type === 'file') {
      const first = byInode.get(e.ino);
      if (first) {
        await fsp.rm(p, { force: true });
        await fsp.link(first, p);
        continue;
      }
      byInode.set(e.ino, p);
    }
    if (e.type === 'char' || e.type === 'block') {
      const [maj, min] = (e.rdev ?? '0:0').split(':');
      await fsp.rm(p, { force: true });
      await exec('mknod', [p, e.type === 'char' ? 'c' : 'b', maj as string, min as string]);
    } else if (e.type === 'fifo') {
      await fsp.rm(p, { force: true });
      await exec('mkfifo', [p]);
    }
    await fsp.lchown(p, e.uid, e.gid);
    if (e.type !== 'symlink') await fsp.chmod(p, e.mode);
  }
  return entries.length;
}
