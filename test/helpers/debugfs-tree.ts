import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from '@jest/globals';
import { xattrText } from '../../src/rootfs/debugfs.js';
import { aclToVfs, Ext4Image } from '../../src/rootfs/ext4-read.js';

/**
 * The debugfs-based listing the product used before its in-process reader (ls -p, stat, ea_list, and
 * rdump into a scratch directory for link targets and digests): the reference the reader's test compares
 * against. Test-only, and only on the tests' own clean images (rdump writes the image's names).
 */
export interface RefEntry { path: string; type: string; mode: number; uid: number; gid: number; size: number; ino: number; linkTarget?: string; rdev?: string; xattrs?: Record<string, string>; sha256?: string }

const TYPES: Record<number, string> = { 0o040000: 'dir', 0o100000: 'file', 0o120000: 'symlink', 0o020000: 'char', 0o060000: 'block', 0o010000: 'fifo', 0o140000: 'socket' };

function batch(image: string, commands: string[]): string[] {
  const outputs: string[] = [];
  for (let i = 0; i < commands.length; i += 2000) {
    const out = execFileSync('debugfs', ['-f', '-', image], { input: commands.slice(i, i + 2000).join('\n') + '\n', encoding: 'utf8', stdio: ['pipe', 'pipe', 'ignore'], maxBuffer: 1 << 30 });
    for (const s of out.split(/^debugfs: /m).slice(1)) outputs.push(s.slice(s.indexOf('\n') + 1));
  }
  return outputs;
}

const q = (p: string): string => `"${p.replace(/"/g, '""')}"`;

export function debugfsTree(image: string): RefEntry[] {
  const out: RefEntry[] = [];
  let dirs = ['/'];
  while (dirs.length > 0) {
    const outputs = batch(image, dirs.map((d) => `ls -p ${q(d)}`));
    const next: string[] = [];
    dirs.forEach((dir, i) => {
      for (const line of (outputs[i] ?? '').split('\n')) {
        const m = /^\/(\d+)\/(\d+)\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(line);
        if (!m) continue;
        const name = m[5]!;
        if (name === '.' || name === '..' || (dir === '/' && name === 'lost+found')) continue;
        const full = parseInt(m[2]!, 8);
        const type = TYPES[full & 0o170000] ?? 'file';
        const p = dir === '/' ? `/${name}` : `${dir}/${name}`;
        out.push({ path: p, type, mode: full & 0o7777, uid: Number(m[3]), gid: Number(m[4]), size: Number(m[6] || 0), ino: Number(m[1]) });
        if (type === 'dir') next.push(p);
      }
    });
    dirs = next;
  }
  const devs = out.filter((e) => e.type === 'char' || e.type === 'block');
  batch(image, devs.map((e) => `stat ${q(e.path)}`)).forEach((s, i) => {
    const m = /Device major\/minor number: (\d+):(\d+)/.exec(s);
    if (m) devs[i]!.rdev = `${Number(m[1])}:${Number(m[2])}`;
  });
  const withX = out.filter((e) => e.type !== 'symlink');
  batch(image, withX.map((e) => `ea_list ${q(e.path)}`)).forEach((s, i) => {
    const attrs: Record<string, string> = {};
    for (const m of s.matchAll(/^\s+(\S+) \(\d+\) = (.*)$/gm)) attrs[m[1]!] = m[2]!.trim().replace(/ /g, '');
    if (Object.keys(attrs).length) withX[i]!.xattrs = attrs;
  });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ref-rdump-'));
  try {
    execFileSync('debugfs', ['-R', `rdump / ${tmp}`, image], { stdio: 'ignore' });
    for (const e of out) {
      if (e.type === 'symlink') e.linkTarget = fs.readlinkSync(path.join(tmp, e.path));
      if (e.type === 'file') e.sha256 = createHash('sha256').update(fs.readFileSync(path.join(tmp, e.path))).digest('hex');
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The reader's walk in the reference listing's shape (xattrs as debugfs prints them). */
export async function readerTree(image: string): Promise<RefEntry[]> {
  const img = await Ext4Image.open(image);
  const out: RefEntry[] = [];
  try {
    for await (const e of img.walk('/')) {
      if (e.path === '/lost+found' || e.path.startsWith('/lost+found/')) continue;
      // (debugfs's `ls -p` gives no size for a directory)
      const r: RefEntry = { path: e.path, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, size: e.type === 'dir' ? 0 : e.size, ino: e.ino };
      if (e.linkTarget !== undefined) r.linkTarget = e.linkTarget;
      if (e.rdev) r.rdev = `${e.rdev.major}:${e.rdev.minor}`;
      if (e.xattrs.size) r.xattrs = Object.fromEntries([...e.xattrs].map(([k, v]) => [k, xattrText(v)]));
      if (e.type === 'file') {
        const h = createHash('sha256');
        for await (const c of img.readFile(e.ino)) h.update(c);
        r.sha256 = h.digest('hex');
      }
      out.push(r);
    }
  } finally {
    await img.close();
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** debugfs prints ACLs raw (ext4's format) and long values not at all: the reference's xattrs made comparable. */
export function comparable(ref: RefEntry[], mine: RefEntry[]): void {
  const byPath = new Map(mine.map((e) => [e.path, e]));
  for (const e of ref) {
    const m = byPath.get(e.path);
    for (const [k, v] of Object.entries(e.xattrs ?? {})) if (k.startsWith('system.posix_acl_')) e.xattrs![k] = aclToVfs(Buffer.from(v, 'hex')).toString('hex');
    for (const k of Object.keys(m?.xattrs ?? {})) if (!(k in (e.xattrs ?? {}))) {
      e.xattrs = { ...(e.xattrs ?? {}), [k]: m!.xattrs![k]! };
      expect(k).toBe('user.big'); // the only value too long for debugfs to print
    }
  }
}

