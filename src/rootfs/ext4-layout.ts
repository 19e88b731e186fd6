import { UserError } from '../util/errors.js';

/**
 * ext4 on-disk structures for the userspace writer (ext4-writer.ts): superblock, group descriptors,
 * inodes, extent trees, directory blocks, extended attributes (in-inode and block), POSIX ACLs and the
 * jbd2 superblock. Pure encoders: no I/O. Field offsets follow the kernel's fs/ext4/ext4.h and
 * e2fsprogs' lib/ext2fs/ext2_fs.h.
 */
export const BS = 4096;
export const BLOCKS_PER_GROUP = 32768;
export const INODE_SIZE = 256;
export const EXTRA_ISIZE = 32;
export const MAX_IPG = 32768;
export const FIRST_INO = 11;
/** Blocks kept free after the superblock at every backup group: the GDT of up to 8192 groups (1 TiB). */
export const GDT_RESERVE = 64;
export const MAX_EXTENT_LEN = 32768;
const EXT_PER_BLOCK = (BS - 12) / 12; // 340

export interface Ext4Time { sec: number; nsec: number }

export type Kind = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
export const MODE_TYPE: Record<Kind, number> = { file: 0o100000, dir: 0o040000, symlink: 0o120000, char: 0o020000, block: 0o060000, fifo: 0o010000, socket: 0o140000 };
export const DIRENT_TYPE: Record<Kind, number> = { file: 1, dir: 2, char: 3, block: 4, fifo: 5, socket: 6, symlink: 7 };

/** Groups that carry a superblock backup with sparse_super: 0, 1 and the powers of 3, 5 and 7. */
export function hasBackup(g: number): boolean {
  if (g <= 1) return true;
  for (const p of [3, 5, 7]) {
    let n = p;
    while (n < g) n *= p;
    if (n === g) return true;
  }
  return false;
}

/** Seconds and the 32-bit extra field (2 epoch bits, 30 nanosecond bits) as ext4 stores a time. */
export function encodeTime(t: Ext4Time): { lo: number; extra: number } {
  const sec = Math.min(Math.max(Math.trunc(t.sec), -(2 ** 31)), 2 ** 34 - 2 ** 31 - 1);
  const lo = sec | 0;
  const epoch = ((sec - lo) / 2 ** 32) & 3;
  const nsec = Math.min(Math.max(Math.trunc(t.nsec), 0), 999999999);
  return { lo, extra: (epoch | (nsec << 2)) >>> 0 };
}

// ---- extents ----------------------------------------------------------------------------------------

/** Extents as flat triples: logical block, physical block, length. */
export type Extents = number[];

function extentHeader(b: Buffer, off: number, entries: number, max: number, depth: number): void {
  b.writeUInt16LE(0xf30a, off);
  b.writeUInt16LE(entries, off + 2);
  b.writeUInt16LE(max, off + 4);
  b.writeUInt16LE(depth, off + 6);
  b.writeUInt32LE(0, off + 8);
}

/**
 * The 60-byte i_block of an extent-mapped inode, plus the tree blocks when more than 4 extents: `alloc`
 * hands out one block number, `write` stores a tree block there.
 */
export function buildExtentTree(ext: Extents, alloc: () => number, write: (block: number, data: Buffer) => void): { iblock: Buffer; treeBlocks: number[] } {
  const iblock = Buffer.alloc(60);
  const n = ext.length / 3;
  const treeBlocks: number[] = [];
  if (n <= 4) {
    extentHeader(iblock, 0, n, 4, 0);
    for (let i = 0; i < n; i++) writeLeaf(iblock, 12 + i * 12, ext[i * 3]!, ext[i * 3 + 1]!, ext[i * 3 + 2]!);
    return { iblock, treeBlocks };
  }
  // Level 0: leaves of 340 extents; then index levels until at most 4 nodes remain for the inode.
  let nodes: { first: number; block: number }[] = [];
  for (let i = 0; i < n; i += EXT_PER_BLOCK) {
    const cnt = Math.min(EXT_PER_BLOCK, n - i);
    const b = Buffer.alloc(BS);
    extentHeader(b, 0, cnt, EXT_PER_BLOCK, 0);
    for (let j = 0; j < cnt; j++) writeLeaf(b, 12 + j * 12, ext[(i + j) * 3]!, ext[(i + j) * 3 + 1]!, ext[(i + j) * 3 + 2]!);
    const blk = alloc();
    write(blk, b);
    treeBlocks.push(blk);
    nodes.push({ first: ext[i * 3]!, block: blk });
  }
  let depth = 1;
  while (nodes.length > 4) {
    const up: { first: number; block: number }[] = [];
    for (let i = 0; i < nodes.length; i += EXT_PER_BLOCK) {
      const cnt = Math.min(EXT_PER_BLOCK, nodes.length - i);
      const b = Buffer.alloc(BS);
      extentHeader(b, 0, cnt, EXT_PER_BLOCK, depth);
      for (let j = 0; j < cnt; j++) writeIndex(b, 12 + j * 12, nodes[i + j]!.first, nodes[i + j]!.block);
      const blk = alloc();
      write(blk, b);
      treeBlocks.push(blk);
      up.push({ first: nodes[i]!.first, block: blk });
    }
    nodes = up;
    depth++;
  }
  extentHeader(iblock, 0, nodes.length, 4, depth);
  nodes.forEach((nd, i) => writeIndex(iblock, 12 + i * 12, nd.first, nd.block));
  return { iblock, treeBlocks };
}

function writeLeaf(b: Buffer, off: number, logical: number, phys: number, len: number): void {
  b.writeUInt32LE(logical, off);
  b.writeUInt16LE(len, off + 4);
  b.writeUInt16LE(Math.floor(phys / 2 ** 32), off + 6);
  b.writeUInt32LE(phys % 2 ** 32, off + 8);
}

function writeIndex(b: Buffer, off: number, logical: number, phys: number): void {
  b.writeUInt32LE(logical, off);
  b.writeUInt32LE(phys % 2 ** 32, off + 4);
  b.writeUInt16LE(Math.floor(phys / 2 ** 32), off + 8);
  b.writeUInt16LE(0, off + 10);
}

// ---- directories ------------------------------------------------------------------------------------

export interface Dirent { ino: number; name: Buffer; type: number }

/** Directory blocks for the given entries ('.' and '..' included by the caller), each exactly 4 KiB. */
export function* dirBlocks(entries: Iterable<Dirent>): Generator<Buffer> {
  let b = Buffer.alloc(BS);
  let off = 0;
  let last = -1;
  for (const e of entries) {
    const need = (8 + e.name.length + 3) & ~3;
    if (off + need > BS) {
      b.writeUInt16LE(BS - last, last + 4);
      yield b;
      b = Buffer.alloc(BS);
      off = 0;
    }
    b.writeUInt32LE(e.ino, off);
    b.writeUInt16LE(need, off + 4);
    b[off + 6] = e.name.length;
    b[off + 7] = e.type;
    e.name.copy(b, off + 8);
    last = off;
    off += need;
  }
  if (last >= 0) b.writeUInt16LE(BS - last, last + 4);
  yield b;
}

/** An empty directory block (lost+found's spare blocks). */
export function emptyDirBlock(): Buffer {
  const b = Buffer.alloc(BS);
  b.writeUInt16LE(BS, 4);
  return b;
}

// ---- extended attributes ----------------------------------------------------------------------------

export interface XattrEntry { index: number; name: Buffer; value: Buffer }

const PREFIXES: [string, number][] = [['user.', 1], ['trusted.', 4], ['security.', 6], ['system.', 7]];

const ACL_SHORT = new Set([0x01, 0x04, 0x10, 0x20]);
const ACL_LONG = new Set([0x02, 0x08]);

/** POSIX ACL from the VFS xattr format (version 2, 8-byte entries) to ext4's (version 1, short entries). */
export function aclToDisk(v: Buffer, what: string): Buffer {
  if (v.length < 4 || (v.length - 4) % 8 !== 0 || v.readUInt32LE(0) !== 2) throw new UserError(`the POSIX ACL of ${what} is malformed: expected the version 2 xattr format`);
  const parts: Buffer[] = [Buffer.from([1, 0, 0, 0])];
  for (let o = 4; o < v.length; o += 8) {
    const tag = v.readUInt16LE(o);
    const perm = v.readUInt16LE(o + 2);
    if (ACL_SHORT.has(tag)) {
      const e = Buffer.alloc(4);
      e.writeUInt16LE(tag, 0);
      e.writeUInt16LE(perm, 2);
      parts.push(e);
    } else if (ACL_LONG.has(tag)) {
      const e = Buffer.alloc(8);
      e.writeUInt16LE(tag, 0);
      e.writeUInt16LE(perm, 2);
      e.writeUInt32LE(v.readUInt32LE(o + 4), 4);
      parts.push(e);
    } else {
      throw new UserError(`the POSIX ACL of ${what} has an unknown entry tag ${tag}`);
    }
  }
  return Buffer.concat(parts);
}

/** Full xattr names to ext4 entries (name index + suffix), sorted as the kernel searches a block. */
export function xattrEntries(xattrs: Map<string, Buffer> | undefined, what: string, warn: (m: string) => void): XattrEntry[] {
  const out: XattrEntry[] = [];
  for (const [full, value] of xattrs ?? []) {
    let e: XattrEntry | undefined;
    if (full === 'system.posix_acl_access') e = { index: 2, name: Buffer.alloc(0), value: aclToDisk(value, what) };
    else if (full === 'system.posix_acl_default') e = { index: 3, name: Buffer.alloc(0), value: aclToDisk(value, what) };
    else {
      for (const [p, idx] of PREFIXES) {
        if (full.startsWith(p) && full.length > p.length) { e = { index: idx, name: Buffer.from(full.slice(p.length), 'utf8'), value }; break; }
      }
    }
    if (!e) { warn(`skipping the extended attribute ${JSON.stringify(full)} of ${what}: ext4 has no namespace for it`); continue; }
    if (e.name.length > 255) throw new UserError(`the extended attribute name ${JSON.stringify(full.slice(0, 80))} of ${what} is longer than 255 bytes`);
    out.push(e);
  }
  return out.sort((a, b) => a.index - b.index || a.name.length - b.name.length || Buffer.compare(a.name, b.name));
}

const pad4 = (n: number): number => (n + 3) & ~3;
const entrySize = (e: XattrEntry): number => pad4(16 + e.name.length);
/** Bytes the entries take in a region: headers, the 4-byte end marker, padded values. */
export function xattrBytes(es: XattrEntry[]): number {
  return es.reduce((s, e) => s + entrySize(e) + pad4(e.value.length), 4);
}
export const INODE_XATTR_SPACE = INODE_SIZE - 128 - EXTRA_ISIZE - 4; // after the in-inode magic
export const BLOCK_XATTR_SPACE = BS - 32;

function entryHash(e: XattrEntry, valuePadded: Buffer): number {
  let h = 0;
  for (const c of e.name) h = ((h << 5) ^ (h >>> 27) ^ c) >>> 0;
  for (let o = 0; o < valuePadded.length; o += 4) h = ((h << 16) ^ (h >>> 16) ^ valuePadded.readUInt32LE(o)) >>> 0;
  return h;
}

/** Lays entries into `region` (entries from the start, values from the end); value offsets relative to `base`. */
function layXattrs(es: XattrEntry[], region: Buffer, withHash: boolean, valueBase: number): number[] {
  let eo = 0;
  let vo = region.length;
  const hashes: number[] = [];
  for (const e of es) {
    const vp = Buffer.alloc(pad4(e.value.length));
    e.value.copy(vp);
    vo -= vp.length;
    vp.copy(region, vo);
    region[eo] = e.name.length;
    region[eo + 1] = e.index;
    region.writeUInt16LE(e.value.length ? vo + valueBase : 0, eo + 2);
    region.writeUInt32LE(0, eo + 4);
    region.writeUInt32LE(e.value.length, eo + 8);
    const h = withHash ? entryHash(e, vp) : 0;
    region.writeUInt32LE(h, eo + 12);
    hashes.push(h);
    e.name.copy(region, eo + 16);
    eo += entrySize(e);
  }
  return hashes;
}

/** In-inode xattrs: writes the magic and entries after i_extra_isize. */
export function writeInodeXattrs(inode: Buffer, es: XattrEntry[]): void {
  const start = 128 + EXTRA_ISIZE;
  inode.writeUInt32LE(0xea020000, start);
  layXattrs(es, inode.subarray(start + 4, INODE_SIZE), false, 0);
}

/** One external xattr block (refcount 1) with entry hashes and the block hash as e2fsprogs computes them. */
export function xattrBlock(es: XattrEntry[]): Buffer {
  const b = Buffer.alloc(BS);
  b.writeUInt32LE(0xea020000, 0);
  b.writeUInt32LE(1, 4); // h_refcount
  b.writeUInt32LE(1, 8); // h_blocks
  const hashes = layXattrs(es, b.subarray(32), true, 32);
  let h = 0;
  for (const eh of hashes) {
    if (eh === 0) { h = 0; break; }
    h = ((h << 16) ^ (h >>> 16) ^ eh) >>> 0;
  }
  b.writeUInt32LE(h, 12);
  return b;
}

// ---- jbd2 -------------------------------------------------------------------------------------------

/** The jbd2 (v2) superblock of an internal journal of `blocks` blocks; big-endian like all of jbd2. */
export function journalSuperblock(blocks: number, uuid: Buffer): Buffer {
  const b = Buffer.alloc(BS);
  b.writeUInt32BE(0xc03b3998, 0);
  b.writeUInt32BE(4, 4); // JBD2_SUPERBLOCK_V2
  b.writeUInt32BE(BS, 0x0c);
  b.writeUInt32BE(blocks, 0x10);
  b.writeUInt32BE(1, 0x14); // s_first
  b.writeUInt32BE(1, 0x18); // s_sequence
  uuid.copy(b, 0x30);
  b.writeUInt32BE(1, 0x40); // s_nr_users
  return b;
}

/** mke2fs's default journal size (blocks) for a file system of `blocks` 4 KiB blocks. */
export function defaultJournalBlocks(blocks: number): number {
  const table: [number, number][] = [[32768, 1024], [256 * 1024, 4096], [512 * 1024, 8192], [4096 * 1024, 16384], [8192 * 1024, 32768], [16384 * 1024, 65536], [32768 * 1024, 131072]];
  for (const [lim, j] of table) if (blocks < lim) return j;
  return 262144;
}
