import { createHash } from 'node:crypto';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';
import { Ext4Image } from './ext4-read.js';

/**
 * debugfs batches (the vm engine's writes into its own build images), and Ext4Reader: an ext4 image's
 * tree with types, modes (setuid bits included), owners, sizes, inode numbers (hard links share one),
 * device numbers, symlink targets, xattrs and contents, read in-process (ext4-read.ts), never dumped.
 */
export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface TreeEntry {
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  ino: number;
  linkTarget?: string;
  rdev?: string;
  xattrs?: Record<string, string>;
  sha256?: string;
}

/** Run debugfs with a batch of commands; returns the output of each command in order. */
export async function batch(image: string, commands: string[]): Promise<string[]> {
  const outputs: string[] = [];
  for (let i = 0; i < commands.length; i += 2000) {
    const chunk = commands.slice(i, i + 2000);
    const r = await exec('debugfs', ['-f', '-', image], { input: chunk.join('\n') + '\n' });
    const sections = r.stdout.split(/^debugfs: /m).slice(1);
    for (const s of sections) outputs.push(s.slice(s.indexOf('\n') + 1));
  }
  return outputs;
}

/**
 * One argument of a debugfs command line. debugfs (libss) reads a script line by line and splits it at
 * blanks outside double quotes, where a quote inside quotes is written twice and a backslash is an
 * ordinary character. A name with a line break or NUL, or a line longer than debugfs's buffer, could end
 * the command and start another (a path or link target from an untrusted Dockerfile, context or archive):
 * refused.
 */
export function quote(p: string): string {
  if (/[\n\r\0]/.test(p)) throw new UserError(`the path or link target ${JSON.stringify(p.slice(0, 80))} holds a line break or NUL, which firebuild does not write into images: rename it`);
  const q = `"${p.replace(/"/g, '""')}"`;
  // debugfs reads a script line into an 8 KiB buffer: a longer line would run on as a second command.
  if (q.length > 4000) throw new UserError(`the path or link target ${JSON.stringify(p.slice(0, 80))}... is longer than firebuild writes into images (4000 characters)`);
  return q;
}

/** An xattr value as debugfs's ea_list printed it (blanks dropped): a quoted string when printable, else hex. */
export function xattrText(v: Buffer): string {
  const printable = v.length > 0 && v.every((b) => b >= 0x20 && b <= 0x7e);
  return printable ? `"${v.toString('latin1').replace(/ /g, '')}"` : v.toString('hex');
}

/**
 * The tree and files of an ext4 image, read in-process (Ext4Image): nothing of the image is written on
 * the host, whatever its names say.
 */
export class Ext4Reader {
  constructor(readonly image: string) {}

  private async with<T>(f: (img: Ext4Image) => Promise<T>): Promise<T> {
    const img = await Ext4Image.open(this.image);
    try {
      return await f(img);
    } finally {
      await img.close();
    }
  }

  /** Every entry under `under` (default `/`; not `under` itself, nor the root's `lost+found`), sorted by path; `recursive: false` for one level. */
  async list(under = '/', o: { recursive?: boolean } = {}): Promise<TreeEntry[]> {
    return (await this.entries(under, o)).map(({ entry }) => entry);
  }

  private async entries(under: string, o: { recursive?: boolean }): Promise<{ entry: TreeEntry; xattrs: Map<string, Buffer> }[]> {
    return this.with(async (img) => {
      const out: { entry: TreeEntry; xattrs: Map<string, Buffer> }[] = [];
      const top = under === '/' ? '/' : under.replace(/\/+$/, '');
      for await (const e of img.walk(top)) {
        if (e.path === '/lost+found' || e.path.startsWith('/lost+found/')) continue;
        const rel = top === '/' ? e.path : e.path.slice(top.length);
        if (o.recursive === false && rel.lastIndexOf('/') > 0) continue;
        const p = top === '/' ? e.path : `${top}${rel}`;
        const t: TreeEntry = { path: p, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, size: e.type === 'dir' || e.type === 'file' || e.type === 'symlink' ? e.size : 0, ino: e.ino };
        if (e.linkTarget !== undefined) t.linkTarget = e.linkTarget;
        if (e.rdev) t.rdev = `${e.rdev.major}:${e.rdev.minor}`;
        out.push({ entry: t, xattrs: e.xattrs });
      }
      return out.sort((a, b) => (a.entry.path < b.entry.path ? -1 : a.entry.path > b.entry.path ? 1 : 0));
    });
  }

  /** The tree with symlink targets, device numbers, xattrs and (optionally) content digests. */
  async tree(opts: { hashes?: boolean; xattrs?: boolean } = {}): Promise<TreeEntry[]> {
    const entries = await this.entries('/', {});
    return this.with(async (img) => {
      for (const { entry: e, xattrs } of entries) {
        if (opts.xattrs !== false && xattrs.size) e.xattrs = Object.fromEntries([...xattrs].map(([k, v]) => [k, xattrText(v)]));
        if (opts.hashes && e.type === 'file') {
          const h = createHash('sha256');
          for await (const c of img.readFile(e.ino)) h.update(c);
          e.sha256 = h.digest('hex');
        }
      }
      return entries.map(({ entry }) => entry);
    });
  }

  /** One file's content (for small files: configs, passwd); symlinks followed inside the image. */
  async readFile(p: string): Promise<Buffer> {
    return this.with(async (img) => {
      const parts: Buffer[] = [];
      for await (const c of img.readFile(p)) parts.push(c);
      return Buffer.concat(parts);
    });
  }
}
