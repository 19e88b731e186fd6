import { BLOCKS_PER_GROUP, BS, EXTRA_ISIZE, FIRST_INO, INODE_SIZE, MODE_TYPE, encodeTime, writeInodeXattrs } from './ext4-layout.js';
import type { Ext4Time, Kind, XattrEntry } from './ext4-layout.js';

/** Superblock, group descriptor and inode encoders of the userspace ext4 writer. */

// Features: no resize_inode (so no reserved GDT blocks), no metadata_csum, no 64bit.
const COMPAT_EXT_ATTR = 0x8;
const COMPAT_DIR_INDEX = 0x20;
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_EXTENTS = 0x40;
const INCOMPAT_FLEX_BG = 0x200;
const RO_SPARSE_SUPER = 0x1;
const RO_LARGE_FILE = 0x2;
const RO_HUGE_FILE = 0x8;
const RO_DIR_NLINK = 0x20;
const RO_EXTRA_ISIZE = 0x40;

export const EXTENTS_FL = 0x80000;
export const BG_INODE_ZEROED = 0x4;

export interface SuperInfo {
  inodes: number;
  blocks: number;
  freeBlocks: number;
  freeInodes: number;
  ipg: number;
  uuid: Buffer;
  hashSeed: Buffer;
  label: string;
  now: number;
  journal?: { iblock: Buffer; size: number };
}

export function superblock(s: SuperInfo, group: number): Buffer {
  const b = Buffer.alloc(1024);
  b.writeUInt32LE(s.inodes, 0x00);
  b.writeUInt32LE(s.blocks, 0x04);
  b.writeUInt32LE(s.freeBlocks, 0x0c);
  b.writeUInt32LE(s.freeInodes, 0x10);
  b.writeUInt32LE(0, 0x14); // first data block
  b.writeUInt32LE(2, 0x18); // log block size: 4 KiB
  b.writeUInt32LE(2, 0x1c);
  b.writeUInt32LE(BLOCKS_PER_GROUP, 0x20);
  b.writeUInt32LE(BLOCKS_PER_GROUP, 0x24);
  b.writeUInt32LE(s.ipg, 0x28);
  b.writeUInt32LE(s.now >>> 0, 0x30); // wtime
  b.writeInt16LE(-1, 0x36); // max mount count
  b.writeUInt16LE(0xef53, 0x38);
  b.writeUInt16LE(1, 0x3a); // clean
  b.writeUInt16LE(1, 0x3c); // errors: continue
  b.writeUInt32LE(s.now >>> 0, 0x40); // lastcheck
  b.writeUInt32LE(0, 0x48); // creator os: linux
  b.writeUInt32LE(1, 0x4c); // dynamic rev
  b.writeUInt32LE(FIRST_INO, 0x54);
  b.writeUInt16LE(INODE_SIZE, 0x58);
  b.writeUInt16LE(group, 0x5a);
  b.writeUInt32LE(COMPAT_EXT_ATTR | COMPAT_DIR_INDEX | (s.journal ? COMPAT_HAS_JOURNAL : 0), 0x5c);
  b.writeUInt32LE(INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG, 0x60);
  b.writeUInt32LE(RO_SPARSE_SUPER | RO_LARGE_FILE | RO_HUGE_FILE | RO_DIR_NLINK | RO_EXTRA_ISIZE, 0x64);
  s.uuid.copy(b, 0x68);
  Buffer.from(s.label, 'utf8').subarray(0, 16).copy(b, 0x78);
  if (s.journal) b.writeUInt32LE(8, 0xe0);
  s.hashSeed.copy(b, 0xec);
  b[0xfc] = 1; // half_md4
  b.writeUInt32LE(0x000c, 0x100); // default mount options: user_xattr, acl
  b.writeUInt32LE(s.now >>> 0, 0x108); // mkfs time
  if (s.journal) {
    b[0xfd] = 1; // s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
    s.journal.iblock.copy(b, 0x10c);
    b.writeUInt32LE(Math.floor(s.journal.size / 2 ** 32), 0x10c + 60);
    b.writeUInt32LE(s.journal.size % 2 ** 32, 0x10c + 64);
  }
  b.writeUInt16LE(EXTRA_ISIZE, 0x15c);
  b.writeUInt16LE(EXTRA_ISIZE, 0x15e);
  b.writeUInt32LE(0x1, 0x160); // signed directory hash
  b[0x174] = 4; // 16 groups per flex group
  return b;
}

export interface GroupDesc { blockBitmap: number; inodeBitmap: number; inodeTable: number; freeBlocks: number; freeInodes: number; dirs: number }

export function groupDesc(d: GroupDesc, out: Buffer, off: number): void {
  out.writeUInt32LE(d.blockBitmap, off);
  out.writeUInt32LE(d.inodeBitmap, off + 4);
  out.writeUInt32LE(d.inodeTable, off + 8);
  out.writeUInt16LE(d.freeBlocks, off + 0x0c);
  out.writeUInt16LE(d.freeInodes, off + 0x0e);
  out.writeUInt16LE(d.dirs, off + 0x10);
  out.writeUInt16LE(BG_INODE_ZEROED, off + 0x12);
}

export interface InodeInfo {
  kind: Kind;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  atime: Ext4Time;
  ctime: Ext4Time;
  mtime: Ext4Time;
  crtime: Ext4Time;
  /** 4 KiB blocks (data, tree and xattr block). */
  blocks: number;
  flags: number;
  iblock: Buffer;
  xattrBlock: number;
  inlineXattrs?: XattrEntry[];
}

export function inode(n: InodeInfo): Buffer {
  const b = Buffer.alloc(INODE_SIZE);
  b.writeUInt16LE(MODE_TYPE[n.kind] | (n.mode & 0o7777), 0x00);
  b.writeUInt16LE(n.uid & 0xffff, 0x02);
  b.writeUInt32LE(n.size % 2 ** 32, 0x04);
  const a = encodeTime(n.atime);
  const c = encodeTime(n.ctime);
  const m = encodeTime(n.mtime);
  const cr = encodeTime(n.crtime);
  b.writeInt32LE(a.lo, 0x08);
  b.writeInt32LE(c.lo, 0x0c);
  b.writeInt32LE(m.lo, 0x10);
  b.writeUInt16LE(n.gid & 0xffff, 0x18);
  b.writeUInt16LE(n.links, 0x1a);
  const sectors = n.blocks * (BS / 512);
  b.writeUInt32LE(sectors % 2 ** 32, 0x1c);
  b.writeUInt32LE(n.flags, 0x20);
  n.iblock.copy(b, 0x28);
  b.writeUInt32LE(n.xattrBlock, 0x68);
  b.writeUInt32LE(Math.floor(n.size / 2 ** 32), 0x6c);
  b.writeUInt16LE(Math.floor(sectors / 2 ** 32), 0x74);
  b.writeUInt16LE(n.uid >>> 16, 0x78);
  b.writeUInt16LE(n.gid >>> 16, 0x7a);
  b.writeUInt16LE(EXTRA_ISIZE, 0x80);
  b.writeUInt32LE(c.extra, 0x84);
  b.writeUInt32LE(m.extra, 0x88);
  b.writeUInt32LE(a.extra, 0x8c);
  b.writeInt32LE(cr.lo, 0x90);
  b.writeUInt32LE(cr.extra, 0x94);
  if (n.inlineXattrs?.length) writeInodeXattrs(b, n.inlineXattrs);
  return b;
}
