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

const MIN_LAST_GROUP = 1024;
const POPCOUNT = Uint8Array.from({ length: 256 }, (_, i) => { let c = 0; for (let v = i; v; v >>= 1) c += v & 1; return c; });

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

  // Pass 1: an upper bound of the blocks finish() allocates, so the file system is sized (and its inode
  // tables placed) before anything is written: inodes then go straight to their table, nothing piles up.
  const nameLens = (d: Node): number[] => [1, 2, ...[...(d.children as Map<string, Child>).keys()].map((k) => Buffer.byteLength(k, 'utf8'))];
  let extra = 0;
  for (const n of order) {
    if (n.kind === 'dir') {
      const nb = Math.max(dirBlockCount(nameLens(n)), n === lf ? 4 : 1);
      extra += nb + treeBlocksFor(runExtents(nb));
    } else if (n.kind === 'file') extra += treeBlocksFor(n.ext.length / 3);
    else if (n.kind === 'symlink' && (n.target as Buffer).length >= 60) extra += 1;
    const es = xattrEntries(n.meta.xattrs, `inode ${n.ino}`, () => undefined);
    if (es.length > 0 && xattrBytes(es) > INODE_XATTR_SPACE) extra += 1;
  }
  let jb = 0;
  if (o.journal) {
    jb = defaultJournalBlocks(o.sizeBytes !== undefined ? Math.floor(o.sizeBytes / BS) : alloc.next + extra + Math.ceil((o.freeBytes ?? 0) / BS));
    extra += jb + treeBlocksFor(runExtents(jb));
  }
  const sim = new Allocator(alloc.next);
  for (let i = 0; i < extra; i++) sim.one();
  const contentEnd = sim.next;
  const geo = geometry(contentEnd, lastIno, o);
  const place = placeMeta(new Allocator(contentEnd), geo.groups, geo.ipg);
  const { groups: G, ipg, blocks: B } = geo;
  const gdtBlocks = Math.ceil((G * 32) / BS);
  if (gdtBlocks > GDT_RESERVE) throw new UserError(`an image of ${B * BS} bytes is larger than the 1 TiB this writer makes: give a smaller --size`);

  const bitmap = Buffer.alloc(G * BS);
  const mark = (s: number, len: number): void => { for (let b = s; b < s + len; b++) bitmap[b >> 3]! |= 1 << (b & 7); };
  const markExt = (ext: Extents): number => {
    let blocks = 0;
    for (let j = 0; j < ext.length; j += 3) { mark(ext[j + 1] as number, ext[j + 2] as number); blocks += ext[j + 2] as number; }
    return blocks;
  };
  const dirsOf = new Array<number>(G).fill(0);
  const inodes = new InodeSink(out);
  const putInode = (ino: number, b: Buffer): Promise<void> | undefined => {
    const g = Math.floor((ino - 1) / ipg);
    return inodes.put((place.tables[g] as number) * BS + ((ino - 1) % ipg) * INODE_SIZE, b);
  };
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
    for (const b of t.treeBlocks) mark(b, 1);
    return { iblock: t.iblock, tree: t.treeBlocks.length };
  };

  // Pass 2: directories, slow symlinks, xattr blocks and extent trees after the data; inodes to their tables.
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
      links = 2 + subdirs > 65000 ? 1 : 2 + subdirs; // dir_nlink: e2fsck counts 1 past EXT2_LINK_MAX
      dirsOf[Math.floor((n.ino - 1) / ipg)]!++;
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
      blocks += markExt(n.ext) + t.tree;
    }
    let xattrBlk = 0;
    let inline: XattrEntry[] | undefined;
    const es = xattrEntries(n.meta.xattrs, `inode ${n.ino}`, () => undefined);
    if (es.length > 0) {
      if (xattrBytes(es) <= INODE_XATTR_SPACE) inline = es;
      else {
        xattrBlk = alloc.one();
        await out.put(xattrBlk, xattrBlock(es));
        mark(xattrBlk, 1);
        blocks++;
      }
    }
    const m = n.meta;
    const info: InodeInfo = {
      kind: n.kind, mode: m.mode, uid: m.uid, gid: m.gid, size, links, blocks, flags, iblock, xattrBlock: xattrBlk,
      mtime: m.mtime, atime: m.atime ?? m.mtime, ctime: m.ctime ?? m.mtime, crtime: m.ctime ?? m.mtime,
    };
    if (inline) info.inlineXattrs = inline;
    const w = putInode(n.ino, inode(info));
    if (w) await w;
  }

  // The journal: inode 8, mke2fs's default size for the expected file system size.
  let journal: { iblock: Buffer; size: number } | undefined;
  if (o.journal) {
    const ext: Extents = [];
    for (let i = 0; i < jb; i++) addExtent(ext, i, alloc.one());
    await out.put(ext[1] as number, journalSuperblock(jb, c.uuid));
    const t = await tree4(ext);
    markExt(ext);
    journal = { iblock: t.iblock, size: jb * BS };
    await putInode(8, inode({ kind: 'file', mode: 0o600, uid: 0, gid: 0, size: jb * BS, links: 1, blocks: jb + t.tree, flags: EXTENTS_FL, iblock: t.iblock, xattrBlock: 0, mtime: now, atime: now, ctime: now, crtime: now }));
  }
  await inodes.flush();
  await out.flush();
  // Removed files' data (whiteouts, replaced entries) is overwritten with zeros: free blocks keep no content.
  const zeros = Buffer.alloc(256 * BS);
  for (const ext of tree.freed) {
    for (let j = 0; j < ext.length; j += 3) {
      for (let b = ext[j + 1] as number, left = ext[j + 2] as number; left > 0;) {
        const n = Math.min(left, 256);
        await out.writeRaw(b * BS, zeros.subarray(0, n * BS));
        b += n;
        left -= n;
      }
    }
  }
  if (alloc.next > contentEnd) throw new Error(`ext4 writer: finish() allocated past its estimate (${alloc.next} > ${contentEnd})`);

  // Block bitmap: padding past the last block set, as e2fsck wants.
  for (let b = B; b < G * BLOCKS_PER_GROUP; b++) bitmap[b >> 3]! |= 1 << (b & 7);
  for (let g = 0; g < G; g++) if (hasBackup(g)) mark(g * BLOCKS_PER_GROUP, 1 + gdtBlocks);
  mark(place.blockBitmaps, G);
  mark(place.inodeBitmaps, G);
  for (const t of place.tables) mark(t, ipg / 16);

  const gdt = Buffer.alloc(gdtBlocks * BS);
  let freeBlocks = 0;
  for (let g = 0; g < G; g++) {
    const bm = bitmap.subarray(g * BS, (g + 1) * BS);
    let free = BLOCKS_PER_GROUP; // the padding past the last block counts as used
    for (let i = 0; i < BS; i++) free -= POPCOUNT[bm[i]!]!;
    freeBlocks += free;
    const usedInodes = Math.max(0, Math.min(ipg, lastIno - g * ipg));
    const ibm = Buffer.alloc(BS);
    for (let i = 0; i < usedInodes; i++) ibm[i >> 3]! |= 1 << (i & 7);
    for (let i = ipg; i < BS * 8; i++) ibm[i >> 3]! |= 1 << (i & 7);
    await out.writeAt((place.inodeBitmaps + g) * BS, ibm);
    groupDesc({ blockBitmap: place.blockBitmaps + g, inodeBitmap: place.inodeBitmaps + g, inodeTable: place.tables[g] as number, freeBlocks: free, freeInodes: ipg - usedInodes, dirs: dirsOf[g] ?? 0 }, gdt, g * 32);
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

/** Directory blocks the entries with these name lengths take ('.' and '..' included). */
function dirBlockCount(lens: number[]): number {
  let blocks = 1;
  let off = 0;
  for (const l of lens) {
    const need = (8 + l + 3) & ~3;
    if (off + need > BS) { blocks++; off = 0; }
    off += need;
  }
  return blocks;
}

/** At most this many extents for `n` blocks allocated in one run (32768-block extents, reserved areas). */
function runExtents(n: number): number {
  return n <= 4 ? n : 2 * Math.ceil(n / (BLOCKS_PER_GROUP - 1 - GDT_RESERVE)) + 1;
}

/** Extent-tree blocks `n` extents need (0 when they fit in the inode). */
function treeBlocksFor(n: number): number {
  if (n <= 4) return 0;
  let nodes = Math.ceil(n / 340);
  let total = nodes;
  while (nodes > 4) { nodes = Math.ceil(nodes / 340); total += nodes; }
  return total;
}

/** Inodes in number order, coalesced into 1 MiB positional writes into their inode tables. */
class InodeSink {
  private readonly buf = Buffer.alloc(1 << 20);
  private start = 0;
  private len = 0;
  constructor(private readonly out: BlockWriter) {}

  put(pos: number, inode: Buffer): Promise<void> | undefined {
    if (this.len > 0 && (pos !== this.start + this.len || this.len === this.buf.length)) return this.flush().then(() => this.put(pos, inode));
    if (this.len === 0) this.start = pos;
    inode.copy(this.buf, this.len);
    this.len += inode.length;
    return undefined;
  }

  async flush(): Promise<void> {
    if (this.len === 0) return;
    await this.out.writeRaw(this.start, this.buf.subarray(0, this.len));
    this.len = 0;
  }
}
