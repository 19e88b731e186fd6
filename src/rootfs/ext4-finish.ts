import type { FileHandle } from 'node:fs/promises';
import { UserError } from '../util/errors.js';
import { Allocator, addExtent } from './ext4-alloc.js';
import type { BlockWriter } from './ext4-alloc.js';
import {
  BLOCKS_PER_GROUP, BS, DIRENT_TYPE, FIRST_INO, GDT_RESERVE, INODE_SIZE, INODE_XATTR_SPACE, MAX_IPG,
  buildExtentTree, defaultJournalBlocks, dirBlocks, emptyDirBlock, hasBackup, journalSuperblock, xattrBlock, xattrBytes, xattrEntries,
} from './ext4-layout.js';
import type { Dirent, Extents, XattrEntry } from './ext4-layout.js';
import { EXTENTS_FL, groupDesc, inode, superblock } from './ext4-super.js';
import type { InodeInfo } from './ext4-super.js';
import { newNode } from './ext4-tree.js';
import type { Child, Node, Tree } from './ext4-tree.js';
import type { FinishOptions, WriteResult } from './ext4-writer.js';

/**
 * finish() of the userspace ext4 writer: numbers the inodes, writes directories, slow symlinks, xattr
 * blocks and extent-tree blocks after the file data, then sizes the file system (groups, inodes per
 * group), places bitmaps and inode tables after everything (flex_bg allows it) and writes inode tables,
 * bitmaps, group descriptors and the superblock with its sparse_super backups. Free counts are exact.
 */
export interface FinishCtx {
  tree: Tree;
  alloc: Allocator;
  out: BlockWriter;
  fh: FileHandle;
  label: string;
  image: string;
  uuid: Buffer;
  hashSeed: Buffer;
}

const INODES_PER_CHUNK = 4096;
const MIN_LAST_GROUP = 1024;

export async function finishImage(c: FinishCtx, o: FinishOptions): Promise<WriteResult> {
  const { tree, alloc, out } = c;
  const now = { sec: Math.floor(Date.now() / 1000), nsec: 0 };

  // lost+found, as mke2fs makes it: inode 11, 0700, 16 KiB of empty directory blocks.
  const existing = tree.root.children?.get('lost+found');
  const lf = existing?.node.kind === 'dir' ? existing.node : newNode('dir', { mode: 0o700, uid: 0, gid: 0, mtime: now });
  if (lf !== existing?.node) tree.link(tree.root, 'lost+found', lf);

  // Inode numbers: root 2, lost+found 11, the rest breadth-first from 12.
  const order: Node[] = [tree.root, lf];
  const parent = new Map<Node, Node>([[tree.root, tree.root]]);
  tree.root.ino = 2;
  lf.ino = FIRST_INO;
  let next = FIRST_INO + 1;
  let entries = 0;
  for (let i = 0; i < order.length; i++) {
    const d = order[i] as Node;
    if (d.kind !== 'dir') continue;
    for (const ch of (d.children as Map<string, Child>).values()) {
      entries++;
      const n = ch.node;
      if (n.kind === 'dir') parent.set(n, d);
      if (n.ino === 0) { n.ino = next++; order.push(n); }
    }
  }
  const lastIno = next - 1;

  // Inodes are encoded as they are laid out, into 1 MiB chunks (inode number order).
  const chunks: Buffer[] = [];
  const putInode = (ino: number, b: Buffer): void => {
    const ci = Math.floor((ino - 1) / INODES_PER_CHUNK);
    while (chunks.length <= ci) chunks.push(Buffer.alloc(INODES_PER_CHUNK * INODE_SIZE));
    b.copy(chunks[ci] as Buffer, ((ino - 1) % INODES_PER_CHUNK) * INODE_SIZE);
  };
  const used: number[] = []; // block ranges: start, length
  const dirsOf = new Map<number, number>(); // group -> directories (filled once the group size is known)
  const dirInos: number[] = [];
  let pendingWrites: [number, Buffer][] = [];
  const emit = async (ext: Extents, logical: number, data: Buffer): Promise<void> => {
    const b = alloc.one();
    addExtent(ext, logical, b);
    const w = out.put(b, data);
    if (w) await w;
  };
  const tree4 = async (ext: Extents): Promise<{ iblock: Buffer; tree: number }> => {
    const t = buildExtentTree(ext, () => alloc.one(), (b, d) => pendingWrites.push([b, d]));
    for (const [b, d] of pendingWrites) await out.put(b, d);
    pendingWrites = [];
    for (const b of t.treeBlocks) used.push(b, 1);
    return { iblock: t.iblock, tree: t.treeBlocks.length };
  };

  for (const n of order) {
    let flags = 0;
    let iblock: Buffer = Buffer.alloc(60);
    let blocks = 0;
    let links = n.names;
    let size = n.size;
    if (n.kind === 'dir') {
      const kids = n.children as Map<string, Child>;
      let subdirs = 0;
      const list = function* (): Generator<Dirent> {
        yield { ino: n.ino, name: Buffer.from('.'), type: DIRENT_TYPE.dir };
        yield { ino: (parent.get(n) as Node).ino, name: Buffer.from('..'), type: DIRENT_TYPE.dir };
        for (const [name, ch] of kids) {
          if (ch.node.kind === 'dir') subdirs++;
          yield { ino: ch.node.ino, name: Buffer.from(name, 'utf8'), type: DIRENT_TYPE[ch.node.kind] };
        }
      };
      n.ext = [];
      let i = 0;
      for (const blk of dirBlocks(list())) await emit(n.ext, i++, blk);
      if (n === lf) while (i < 4) await emit(n.ext, i++, emptyDirBlock());
      size = i * BS;
      links = 2 + subdirs >= 65000 ? 1 : 2 + subdirs;
      dirInos.push(n.ino);
    } else if (n.kind === 'symlink') {
      const t = n.target as Buffer;
      if (t.length < 60) t.copy(iblock);
      else {
        const blk = Buffer.alloc(BS);
        t.copy(blk);
        n.ext = [];
        await emit(n.ext, 0, blk);
      }
    } else if (n.kind === 'char' || n.kind === 'block') {
      const { major, minor } = n.rdev as { major: number; minor: number };
      if (major < 256 && minor < 256) iblock.writeUInt32LE((major << 8) | minor, 0);
      else iblock.writeUInt32LE(((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0, 4);
    }
    if (n.kind === 'file' || n.kind === 'dir' || (n.kind === 'symlink' && n.ext.length > 0)) {
      const t = await tree4(n.ext);
      iblock = t.iblock;
      flags |= EXTENTS_FL;
      for (let j = 0; j < n.ext.length; j += 3) { used.push(n.ext[j + 1] as number, n.ext[j + 2] as number); blocks += n.ext[j + 2] as number; }
      blocks += t.tree;
    }
    let xattrBlk = 0;
    let inline: XattrEntry[] | undefined;
    const es = xattrEntries(n.meta.xattrs, `inode ${n.ino}`, () => undefined);
    if (es.length > 0) {
      if (xattrBytes(es) <= INODE_XATTR_SPACE) inline = es;
      else {
        xattrBlk = alloc.one();
        await out.put(xattrBlk, xattrBlock(es));
        used.push(xattrBlk, 1);
        blocks++;
      }
    }
    const m = n.meta;
    const info: InodeInfo = {
      kind: n.kind, mode: m.mode, uid: m.uid, gid: m.gid, size, links, blocks, flags, iblock, xattrBlock: xattrBlk,
      mtime: m.mtime, atime: m.atime ?? m.mtime, ctime: m.ctime ?? m.mtime, crtime: m.ctime ?? m.mtime,
    };
    if (inline) info.inlineXattrs = inline;
    putInode(n.ino, inode(info));
  }

  // The journal: inode 8, mke2fs's default size for the expected file system size.
  let journal: { iblock: Buffer; size: number } | undefined;
  if (o.journal) {
    const expect = o.sizeBytes !== undefined ? Math.floor(o.sizeBytes / BS) : alloc.next + Math.ceil((o.freeBytes ?? 0) / BS);
    const jb = defaultJournalBlocks(expect);
    const ext: Extents = [];
    for (let i = 0; i < jb; i++) addExtent(ext, i, alloc.one());
    await out.put(ext[1] as number, journalSuperblock(jb, c.uuid));
    const t = await tree4(ext);
    for (let j = 0; j < ext.length; j += 3) used.push(ext[j + 1] as number, ext[j + 2] as number);
    journal = { iblock: t.iblock, size: jb * BS };
    putInode(8, inode({ kind: 'file', mode: 0o600, uid: 0, gid: 0, size: jb * BS, links: 1, blocks: jb + t.tree, flags: EXTENTS_FL, iblock: t.iblock, xattrBlock: 0, mtime: now, atime: now, ctime: now, crtime: now }));
  }
  await out.flush();

  const geo = geometry(alloc.next, lastIno, o);
  const place = placeMeta(new Allocator(alloc.next), geo.groups, geo.ipg);
  const { groups: G, ipg, blocks: B } = geo;
  const gdtBlocks = Math.ceil((G * 32) / BS);
  if (gdtBlocks > GDT_RESERVE) throw new UserError(`an image of ${B * BS} bytes is larger than the 1 TiB this writer makes: give a smaller --size`);

  // Block bitmap over the whole file system; padding past the last block set, as e2fsck wants.
  const bitmap = Buffer.alloc(G * BS);
  const mark = (s: number, n: number): void => { for (let b = s; b < s + n; b++) bitmap[b >> 3]! |= 1 << (b & 7); };
  for (let b = B; b < G * BLOCKS_PER_GROUP; b++) bitmap[b >> 3]! |= 1 << (b & 7);
  for (let g = 0; g < G; g++) if (hasBackup(g)) mark(g * BLOCKS_PER_GROUP, 1 + gdtBlocks);
  for (let i = 0; i < used.length; i += 2) mark(used[i] as number, used[i + 1] as number);
  mark(place.blockBitmaps, G);
  mark(place.inodeBitmaps, G);
  for (const t of place.tables) mark(t, ipg / 16);

  for (const ino of dirInos) { const g = Math.floor((ino - 1) / ipg); dirsOf.set(g, (dirsOf.get(g) ?? 0) + 1); }
  const gdt = Buffer.alloc(gdtBlocks * BS);
  let freeBlocks = 0;
  for (let g = 0; g < G; g++) {
    const bm = bitmap.subarray(g * BS, (g + 1) * BS);
    let free = 0;
    const inFs = Math.min(BLOCKS_PER_GROUP, B - g * BLOCKS_PER_GROUP);
    for (let i = 0; i < inFs; i++) if (!(bm[i >> 3]! & (1 << (i & 7)))) free++; // TODO popcount
    freeBlocks += free;
    const usedInodes = Math.max(0, Math.min(ipg, lastIno - g * ipg));
    const ibm = Buffer.alloc(BS);
    for (let i = 0; i < usedInodes; i++) ibm[i >> 3]! |= 1 << (i & 7);
    for (let i = ipg; i < BS * 8; i++) ibm[i >> 3]! |= 1 << (i & 7);
    await out.writeAt((place.inodeBitmaps + g) * BS, ibm);
    groupDesc({ blockBitmap: place.blockBitmaps + g, inodeBitmap: place.inodeBitmaps + g, inodeTable: place.tables[g] as number, freeBlocks: free, freeInodes: ipg - usedInodes, dirs: dirsOf.get(g) ?? 0 }, gdt, g * 32);
    // This group's inode table: only the blocks that hold used inodes are written (the rest stays a hole).
    if (usedInodes > 0) {
      const tbl = Buffer.alloc(Math.ceil((usedInodes * INODE_SIZE) / BS) * BS);
      for (let i = 0; i < usedInodes; i++) {
        const ino = g * ipg + i + 1;
        const ch = chunks[Math.floor((ino - 1) / INODES_PER_CHUNK)];
        if (ch) ch.copy(tbl, i * INODE_SIZE, ((ino - 1) % INODES_PER_CHUNK) * INODE_SIZE, ((ino - 1) % INODES_PER_CHUNK + 1) * INODE_SIZE);
      }
      await out.writeAt((place.tables[g] as number) * BS, tbl);
    }
  }
  await out.writeAt(place.blockBitmaps * BS, bitmap);

  const sbInfo = { inodes: G * ipg, blocks: B, freeBlocks, freeInodes: G * ipg - lastIno, ipg, uuid: c.uuid, hashSeed: c.hashSeed, label: c.label, now: now.sec, ...(journal ? { journal } : {}) };
  for (let g = 0; g < G; g++) {
    if (!hasBackup(g)) continue;
    const base = g * BLOCKS_PER_GROUP * BS;
    await out.writeAt(g === 0 ? 1024 : base, superblock(sbInfo, g));
    await out.writeAt(base + BS, gdt);
  }
  await c.fh.truncate(B * BS);
  return { imageBytes: B * BS, usedBytes: (B - freeBlocks) * BS, entries, inodes: lastIno };
}

interface Geometry { groups: number; ipg: number; blocks: number }

/** Groups, inodes per group and blocks: iterated until the metadata placed after the content fits. */
function geometry(contentEnd: number, lastIno: number, o: FinishOptions): Geometry {
  let G = 1;
  let ipg = 16;
  for (let iter = 0; iter < 64; iter++) {
    const used = placeMeta(new Allocator(contentEnd), G, ipg).end;
    let B = o.sizeBytes !== undefined ? Math.floor(o.sizeBytes / BS) : used + Math.ceil((o.freeBytes ?? 0) / BS);
    if (B < used) {
      throw new UserError(`--size ${o.sizeBytes} bytes is smaller than the ${used * BS} bytes the content needs: give a larger --size or leave it out`);
    }
    const extra = o.extraInodes ?? Math.max(1024, Math.floor(((B - used) * BS) / 16384));
    const want = lastIno + extra;
    let G2 = Math.max(1, Math.ceil(B / BLOCKS_PER_GROUP));
    if (Math.ceil(want / G2) > MAX_IPG) {
      G2 = Math.ceil(want / MAX_IPG);
      const need = (G2 - 1) * BLOCKS_PER_GROUP + MIN_LAST_GROUP;
      if (o.sizeBytes !== undefined && B < need) {
        throw new UserError(`--size ${o.sizeBytes} bytes is smaller than the ${need * BS} bytes the content needs: give a larger --size or leave it out`);
      }
      B = Math.max(B, need);
    }
    if (o.sizeBytes === undefined && G2 > 1 && B - (G2 - 1) * BLOCKS_PER_GROUP < MIN_LAST_GROUP) B = (G2 - 1) * BLOCKS_PER_GROUP + MIN_LAST_GROUP;
    const ipg2 = Math.min(MAX_IPG, Math.ceil(Math.ceil(want / G2) / 16) * 16);
    if (G2 <= G && ipg2 <= ipg && placeMeta(new Allocator(contentEnd), G, ipg).end <= B && Math.ceil(B / BLOCKS_PER_GROUP) === G) {
      return { groups: G, ipg, blocks: B };
    }
    G = Math.max(G, G2, Math.ceil(B / BLOCKS_PER_GROUP));
    ipg = Math.max(ipg, ipg2);
  }
  throw new Error('ext4 writer: the file system geometry does not converge');
}

/** Block bitmaps, inode bitmaps and inode tables of `G` groups placed from the allocator's position on. */
function placeMeta(a: Allocator, G: number, ipg: number): { blockBitmaps: number; inodeBitmaps: number; tables: number[]; end: number } {
  const blockBitmaps = a.run(G);
  const inodeBitmaps = a.run(G);
  const tables: number[] = [];
  for (let g = 0; g < G; g++) tables.push(a.run((ipg * INODE_SIZE) / BS));
  return { blockBitmaps, inodeBitmaps, tables, end: a.next };
}
