import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';

/**
 * Reads an ext4 image without mounting it, through `debugfs`: the tree with types, modes (setuid bits
 * included), owners, sizes, inode numbers (hard links share one), device numbers, symlink targets,
 * xattrs, and file contents.
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

const TYPES: Record<number, EntryType> = { 0o040000: 'dir', 0o100000: 'file', 0o120000: 'symlink', 0o020000: 'char', 0o060000: 'block', 0o010000: 'fifo', 0o140000: 'socket' };

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

export class Ext4Reader {
  constructor(readonly image: string) {}

  /** Every entry under `under` (default `/`; not `under` itself, nor the root's `lost+found`), sorted by path; `recursive: false` for one level. */
  async list(under = '/', o: { recursive?: boolean } = {}): Promise<TreeEntry[]> {
    const out: TreeEntry[] = [];
    let dirs = [under === '/' ? '/' : under.replace(/\/+$/, '')];
    while (dirs.length > 0) {
      const outputs = await batch(this.image, dirs.map((d) => `ls -p ${quote(d)}`));
      const next: string[] = [];
      dirs.forEach((dir, i) => {
        for (const line of (outputs[i] ?? '').split('\n')) {
          const m = /^\/(\d+)\/(\d+)\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(line);
          if (!m) continue;
          const name = m[5] as string;
          if (name === '.' || name === '..' || (dir === '/' && name === 'lost+found')) continue;
          const modeFull = parseInt(m[2] as string, 8);
          const type = TYPES[modeFull & 0o170000] ?? 'file';
          const p = dir === '/' ? `/${name}` : `${dir}/${name}`;
          out.push({ path: p, type, mode: modeFull & 0o7777, uid: Number(m[3]), gid: Number(m[4]), size: Number(m[6] || 0), ino: Number(m[1]) });
          if (type === 'dir' && o.recursive !== false) next.push(p);
        }
      });
      dirs = next;
    }
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /** The tree with symlink targets, device numbers, xattrs and (optionally) content digests. */
  async tree(opts: { hashes?: boolean; xattrs?: boolean } = {}): Promise<TreeEntry[]> {
    const entries = await this.list();
    const devs = entries.filter((e) => e.type === 'char' || e.type === 'block');
    const devOut = await batch(this.image, devs.map((e) => `stat ${quote(e.path)}`));
    devs.forEach((e, i) => {
      const m = /Device major\/minor number: (\d+):(\d+)/.exec(devOut[i] ?? '');
      if (m) e.rdev = `${Number(m[1])}:${Number(m[2])}`;
    });
    if (opts.xattrs !== false) {
      const withXattr = entries.filter((e) => e.type !== 'symlink');
      const ea = await batch(this.image, withXattr.map((e) => `ea_list ${quote(e.path)}`));
      withXattr.forEach((e, i) => {
        const attrs: Record<string, string> = {};
        for (const m of (ea[i] ?? '').matchAll(/^\s+(\S+) \(\d+\) = (.*)$/gm)) attrs[m[1] as string] = (m[2] as string).trim().replace(/ /g, '');
        if (Object.keys(attrs).length) e.xattrs = attrs;
      });
    }
    // Contents and link targets: dump the tree once into a scratch directory.
    const links = entries.filter((e) => e.type === 'symlink');
    if (links.length > 0 || opts.hashes) {
      const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'firebuild-rdump-'));
      try {
        await exec('debugfs', ['-R', `rdump / ${tmp}`, this.image]);
        for (const e of links) e.linkTarget = await fsp.readlink(path.join(tmp, e.path)).catch(() => undefined);
        if (opts.hashes) {
          for (const e of entries.filter((x) => x.type === 'file')) {
            e.sha256 = createHash('sha256').update(await fsp.readFile(path.join(tmp, e.path))).digest('hex');
          }
        }
      } finally {
        await fsp.rm(tmp, { recursive: true, force: true });
      }
    }
    return entries;
  }

  /** One file's content (for small files: configs, passwd). */
  async readFile(p: string): Promise<Buffer> {
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'firebuild-dump-'));
    try {
      const dest = path.join(tmp, 'f');
      await exec('debugfs', ['-R', `dump ${quote(p)} ${dest}`, this.image]);
      return await fsp.readFile(dest);
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }
}
