import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type { Readable } from 'node:stream';
import { Header, Parser, type ReadEntry } from 'tar';
import { Ext4Reader } from '../../src/rootfs/debugfs.js';
import { Ext4Image } from '../../src/rootfs/ext4-read.js';

export const DOCKER = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

/** One entry of a file tree, comparable between a tar stream and an ext4 image. */
export interface Node {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  link?: string;
  rdev?: string;
  /** Paths sharing this entry's inode (hard links), sorted; only when more than one. */
  links?: string[];
  /** Extended attributes (name to value as debugfs prints it); only from ext4Tree with `xattrs`. */
  xattrs?: Record<string, string>;
}
export type Tree = Record<string, Node>;

const TAR_TYPES: Record<string, string> = { File: 'file', OldFile: 'file', ContiguousFile: 'file', Directory: 'dir', SymbolicLink: 'symlink', Link: 'file', CharacterDevice: 'char', BlockDevice: 'block', FIFO: 'fifo' };

/** A tree from a tar stream (e.g. `docker export`). */
export async function tarTree(stream: Readable): Promise<Tree> {
  const tree: Tree = {};
  const hardlinks: [string, string][] = [];
  const parser = new Parser();
  parser.on('entry', (e: ReadEntry) => {
    const p = '/' + e.path.replace(/^\.?\/+/, '').replace(/\/+$/, '');
    if (p === '/') return e.resume();
    const n: Node = { type: TAR_TYPES[e.type] ?? e.type, mode: ((e.mode ?? 0) & 0o7777).toString(8), uid: e.uid ?? 0, gid: e.gid ?? 0 };
    if (e.type === 'SymbolicLink') n.link = e.linkpath ?? '';
    if (e.type === 'CharacterDevice' || e.type === 'BlockDevice') n.rdev = `${e.header.devmaj ?? 0}:${e.header.devmin ?? 0}`;
    if (e.type === 'Link') hardlinks.push([p, '/' + (e.linkpath ?? '').replace(/^\.?\/+/, '')]);
    tree[p] = n;
    if (e.type === 'File' || e.type === 'OldFile' || e.type === 'ContiguousFile') {
      const h = createHash('sha256');
      n.size = e.size;
      e.on('data', (d: Buffer) => h.update(d));
      e.on('end', () => (n.sha256 = h.digest('hex')));
    } else e.resume();
  });
  await new Promise<void>((resolve, reject) => {
    stream.pipe(parser as unknown as NodeJS.WritableStream);
    parser.on('end', () => resolve());
    parser.on('error', reject);
    stream.on('error', reject);
  });
  const groups = new Map<string, string[]>();
  for (const [p, target] of hardlinks) {
    const t = tree[target];
    if (t) Object.assign(tree[p] as Node, { size: t.size, sha256: t.sha256, mode: t.mode, uid: t.uid, gid: t.gid });
    groups.set(target, [...(groups.get(target) ?? [target]), p]);
  }
  for (const g of groups.values()) for (const p of g) (tree[p] as Node).links = [...g].sort();
  return tree;
}

/** A tree from an ext4 image, read with debugfs (no mount). */
export async function ext4Tree(image: string, o: { xattrs?: boolean } = {}): Promise<Tree> {
  const entries = await new Ext4Reader(image).tree({ hashes: true, xattrs: o.xattrs ?? false });
  const tree: Tree = {};
  const byIno = new Map<number, string[]>();
  for (const e of entries) {
    const n: Node = { type: e.type, mode: e.mode.toString(8), uid: e.uid, gid: e.gid };
    if (e.type === 'file') {
      n.size = e.size;
      if (e.sha256) n.sha256 = e.sha256;
      byIno.set(e.ino, [...(byIno.get(e.ino) ?? []), e.path]);
    }
    if (e.type === 'symlink') n.link = e.linkTarget ?? '';
    if (e.rdev) n.rdev = e.rdev;
    if (e.xattrs) n.xattrs = e.xattrs;
    tree[e.path] = n;
  }
  for (const paths of byIno.values()) if (paths.length > 1) for (const p of paths) (tree[p] as Node).links = [...paths].sort();
  return tree;
}

/** `docker export` of an image as a tree. */
export async function dockerExportTree(image: string): Promise<Tree> {
  const cid = execFileSync(DOCKER, ['create', image, '/x'], { encoding: 'utf8' }).trim();
  try {
    const { spawn } = await import('node:child_process');
    const p = spawn(DOCKER, ['export', cid], { stdio: ['ignore', 'pipe', 'inherit'] });
    return await tarTree(p.stdout);
  } finally {
    execFileSync(DOCKER, ['rm', '-f', cid], { stdio: 'ignore' });
  }
}

/** A raw tar made of hand-written headers: for archives no honest tool would make. */
export function rawTar(entries: { path: string; type?: string; linkpath?: string; data?: string; mode?: number; uid?: number; gid?: number; devmaj?: number; devmin?: number }[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? '');
    const h = new Header({ path: e.path, type: (e.type ?? 'File') as never, linkpath: e.linkpath ?? '', size: data.length, mode: e.mode ?? 0o644, uid: e.uid ?? 0, gid: e.gid ?? 0, mtime: new Date(0), devmaj: e.devmaj ?? 0, devmin: e.devmin ?? 0 });
    const block = Buffer.alloc(512);
    h.encode(block, 0);
    blocks.push(block);
    if (data.length) blocks.push(Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** A small file of an ext4 image as text (read in-process), `<missing>` when absent. */
export async function ext4Cat(rootfs: string, p: string): Promise<string> {
  const img = await Ext4Image.open(rootfs);
  try {
    return (await img.readSmall(p))?.toString() ?? '<missing>';
  } finally {
    await img.close();
  }
}

/**
 * The entries that differ between two trees, sorted. Directory sizes never count (they follow a
 * directory's history); `dirMtimes: false` leaves directory times out too.
 */
export function changedPaths(after: Tree, before: Tree, o: { dirMtimes?: boolean } = {}): string[] {
  const norm = (n: Node | undefined): string => JSON.stringify(n?.type === 'dir' ? { ...n, size: undefined, ...(o.dirMtimes === false ? { mtime: undefined } : {}) } : n);
  return [...new Set([...Object.keys(after), ...Object.keys(before)])].filter((p) => norm(after[p]) !== norm(before[p])).sort();
}
