import * as fsp from 'node:fs/promises';
import { UserError } from '../util/errors.js';
import { ExecError } from '../util/exec.js';
import { Ext4Tools } from './ext4.js';

/**
 * An ext4 (or ext2/3) image read in-process from the image file: superblock, group descriptors, inodes,
 * extent trees and legacy block maps, directories (htree ones read linearly), symlinks, device numbers,
 * extended attributes. Nothing is mounted, no tool runs, nothing is written on the host. The image is
 * untrusted: every offset is checked against the image, every loop is bounded, every name is checked
 * ('/' or NUL, '.' or '..' past the first two entries, duplicates, a directory reachable twice), and
 * anything wrong is a one-line UserError naming the image and the entry.
 */
export interface Ext4Time { sec: number; nsec: number }
export type ImageEntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
export interface ImageEntry {
  path: string; type: ImageEntryType; ino: number;
  mode: number; uid: number; gid: number; size: number; nlink: number; mtime: Ext4Time; atime: Ext4Time; ctime: Ext4Time;
  linkTarget?: string; rdev?: { major: number; minor: number }; xattrs: Map<string, Buffer>;
}

const INCOMPAT = { filetype: 0x2, recover: 0x4, metaBg: 0x10, extents: 0x40, bit64: 0x80, mmp: 0x100, flexBg: 0x200, csumSeed: 0x2000, largedir: 0x4000 };
const INCOMPAT_NAMES: Record<number, string> = { 0x1: 'compression', 0x4: 'needs_recovery', 0x8: 'journal_dev', 0x400: 'ea_inode', 0x1000: 'dirdata', 0x8000: 'inline_data', 0x10000: 'encrypt', 0x20000: 'casefold' };
const SUPPORTED = INCOMPAT.filetype | INCOMPAT.metaBg | INCOMPAT.extents | INCOMPAT.bit64 | INCOMPAT.mmp | INCOMPAT.flexBg | INCOMPAT.csumSeed | INCOMPAT.largedir;
const TYPES: Record<number, ImageEntryType> = { 0o040000: 'dir', 0o100000: 'file', 0o120000: 'symlink', 0o020000: 'char', 0o060000: 'block', 0o010000: 'fifo', 0o140000: 'socket' };
const EXTENTS_FL = 0x80000;
const HUGE_FILE_FL = 0x40000;
const INLINE_DATA_FL = 0x10000000;
const XATTR_PREFIX: Record<number, string> = { 1: 'user.', 2: 'system.posix_acl_access', 3: 'system.posix_acl_default', 4: 'trusted.', 6: 'security.', 7: 'system.', 8: 'system.richacl' };
const MAX_DEPTH = 5;
const MAX_LINK_HOPS = 40;
const CHUNK = 1 << 20;
/** Bytes of holes (beyond the image's own size) that content read out of one image may hold. */
export const HOLE_ALLOWANCE = 4 * 1024 ** 3;

interface Inode {
  ino: number; mode: number; uid: number; gid: number; size: number; nlink: number; flags: number; blocks: number;
  iblock: Buffer; fileAcl: number; raw: Buffer; atime: Ext4Time; mtime: Ext4Time; ctime: Ext4Time;
}
/** Logical block `lblk` .. `lblk+len` is at physical `pblk` (unwritten: reads as zeros). */
interface Run { lblk: number; pblk: number; len: number; unwritten: boolean }

function time(raw: Buffer, at: number, extraAt: number, hasExtra: boolean): Ext4Time {
  const sec = raw.readInt32LE(at);
  if (!hasExtra) return { sec, nsec: 0 };
  const extra = raw.readUInt32LE(extraAt);
  return { sec: sec + (extra & 3) * 2 ** 32, nsec: Math.min(extra >>> 2, 999999999) };
}

/** An ext4 ACL xattr value (version 1, short and long entries) in the VFS format (version 2, all long). */
export function aclToVfs(v: Buffer): Buffer {
  if (v.length < 4 || v.readUInt32LE(0) !== 1) return v;
  const out: Buffer[] = [Buffer.from([2, 0, 0, 0])];
  for (let o = 4; o + 4 <= v.length;) {
    const tag = v.readUInt16LE(o);
    const perm = v.readUInt16LE(o + 2);
    const long = tag === 2 || tag === 8; // ACL_USER, ACL_GROUP carry an id
    const e = Buffer.alloc(8);
    e.writeUInt16LE(tag, 0);
    e.writeUInt16LE(perm, 2);
    e.writeUInt32LE(long && o + 8 <= v.length ? v.readUInt32LE(o + 4) : 0xffffffff, 4);
    out.push(e);
    o += long ? 8 : 4;
  }
  return Buffer.concat(out);
}

export class Ext4Image {
  private readonly cache = new Map<number, Buffer>();
  private readonly bs: number;
  private readonly blocksCount: number;
  private readonly inodesCount: number;
  private readonly inodesPerGroup: number;
  private readonly inodeSize: number;
  private readonly descSize: number;
  private readonly incompat: number;
  private readonly firstDataBlock: number;
  private readonly blocksPerGroup: number;
  private readonly firstMetaBg: number;
  private readonly groupCount: number;
  private readonly tables = new Map<number, number>();
  /** Directories' entries by name, read once per open image (lookups by path). */
  private readonly names = new Map<number, Map<string, number>>();
  /** Inodes whose content was read out (each counts once against the image's size). */
  private readonly readOut = new Set<number>();
  private contentBytes = 0;

  private constructor(private readonly fh: fsp.FileHandle, readonly what: string, private readonly fileSize: number, sb: Buffer) {
    const fail = (why: string): never => { throw this.err(`${why}: not an ext4 image firebuild can read`); };
    if (sb.readUInt16LE(56) !== 0xef53) fail('no ext2/3/4 superblock');
    const logBs = sb.readUInt32LE(24);
    if (logBs > 6) fail(`block size 2^${10 + logBs}`);
    this.bs = 1024 << logBs;
    this.incompat = sb.readUInt32LE(96);
    const bad = this.incompat & ~SUPPORTED;
    if (bad) {
      const names = Object.entries(INCOMPAT_NAMES).filter(([bit]) => bad & Number(bit)).map(([, n]) => n);
      fail(`it uses the ext4 feature(s) ${names.join(', ') || `0x${bad.toString(16)}`}, which firebuild does not read`);
    }
    const is64 = (this.incompat & INCOMPAT.bit64) !== 0;
    this.blocksCount = sb.readUInt32LE(4) + (is64 ? sb.readUInt32LE(336) * 2 ** 32 : 0);
    this.inodesCount = sb.readUInt32LE(0);
    this.firstDataBlock = sb.readUInt32LE(20);
    this.blocksPerGroup = sb.readUInt32LE(32);
    this.inodesPerGroup = sb.readUInt32LE(40);
    this.inodeSize = sb.readUInt32LE(76) >= 1 ? sb.readUInt16LE(88) : 128;
    this.descSize = is64 ? sb.readUInt16LE(254) : 32;
    this.firstMetaBg = sb.readUInt32LE(260);
    if (this.blocksPerGroup === 0 || this.blocksPerGroup > 8 * this.bs || this.inodesPerGroup === 0 || this.inodesPerGroup > 8 * this.bs) fail('a group geometry out of range');
    if (this.inodeSize < 128 || this.inodeSize > this.bs || (this.inodeSize & (this.inodeSize - 1)) !== 0) fail(`an inode size of ${this.inodeSize}`);
    if (this.descSize < 32 || this.descSize > 1024 || (is64 && this.descSize < 64)) fail(`a group descriptor size of ${this.descSize}`);
    if (this.blocksCount * this.bs > fileSize) fail(`${this.blocksCount * this.bs} bytes of file system in a ${fileSize}-byte file (truncated?)`);
    this.groupCount = Math.ceil((this.blocksCount - this.firstDataBlock) / this.blocksPerGroup);
    if (this.inodesCount > this.groupCount * this.inodesPerGroup) fail('more inodes than its groups hold');
  }

  static async open(image: string, what = image): Promise<Ext4Image> {
    const fh = await fsp.open(image, 'r');
    try {
      const size = (await fh.stat()).size;
      const sb = Buffer.alloc(1024);
      if ((await fh.read(sb, 0, 1024, 1024)).bytesRead < 1024) throw new UserError(`${what} is too small to be an ext4 image`);
      return new Ext4Image(fh, what, size, sb);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  private err(why: string, entry?: string): UserError {
    return new UserError(`the ext4 image ${this.what}${entry ? `, at ${JSON.stringify(entry)}` : ''}: ${why}`);
  }

  private async block(n: number, entry?: string): Promise<Buffer> {
    const hit = this.cache.get(n);
    if (hit) return hit;
    if (!Number.isSafeInteger(n) || n < 0 || n >= this.blocksCount) throw this.err(`block ${n} is beyond the file system's ${this.blocksCount} blocks`, entry);
    const b = Buffer.alloc(this.bs);
    const { bytesRead } = await this.fh.read(b, 0, this.bs, n * this.bs);
    if (bytesRead < this.bs) throw this.err(`block ${n} is beyond the end of the image file`, entry);
    if (this.cache.size >= 4096) this.cache.delete(this.cache.keys().next().value as number);
    this.cache.set(n, b);
    return b;
  }

  /** The block of a group's descriptor and its offset (meta_bg places descriptor blocks inside their groups). */
  private async inodeTable(group: number): Promise<number> {
    const known = this.tables.get(group);
    if (known !== undefined) return known;
    const perBlock = this.bs / this.descSize;
    const descBlock = Math.floor(group / perBlock);
    let blk: number;
    if ((this.incompat & INCOMPAT.metaBg) && descBlock >= this.firstMetaBg) {
      const first = descBlock * perBlock;
      blk = this.firstDataBlock + first * this.blocksPerGroup + (this.hasSuper(first) ? 1 : 0);
    } else blk = this.firstDataBlock + 1 + descBlock;
    const b = await this.block(blk);
    const off = (group % perBlock) * this.descSize;
    const table = b.readUInt32LE(off + 8) + (this.descSize >= 64 ? b.readUInt32LE(off + 0x28) * 2 ** 32 : 0);
    this.tables.set(group, table);
    return table;
  }

  private hasSuper(group: number): boolean {
    if (group <= 1) return true;
    for (const p of [3, 5, 7]) {
      let g = group;
      while (g % p === 0) g /= p;
      if (g === 1) return true;
    }
    return false;
  }

  private async inode(ino: number, entry: string): Promise<Inode> {
    if (!Number.isInteger(ino) || ino < 1 || ino > this.inodesCount) throw this.err(`inode ${ino} is out of range (1..${this.inodesCount})`, entry);
    const group = Math.floor((ino - 1) / this.inodesPerGroup);
    const byteOff = ((ino - 1) % this.inodesPerGroup) * this.inodeSize;
    const b = await this.block((await this.inodeTable(group)) + Math.floor(byteOff / this.bs), entry);
    const raw = b.subarray(byteOff % this.bs, byteOff % this.bs + this.inodeSize);
    const extraIsize = this.inodeSize > 128 ? raw.readUInt16LE(0x80) : 0;
    if (extraIsize > this.inodeSize - 128 || extraIsize % 4) throw this.err(`inode ${ino} has an extra size of ${extraIsize}`, entry);
    const has = (end: number): boolean => 128 + extraIsize >= end;
    const flags = raw.readUInt32LE(0x20);
    const blocksLo = raw.readUInt32LE(0x1c) + raw.readUInt16LE(0x74) * 2 ** 32;
    return {
      ino, raw, flags,
      mode: raw.readUInt16LE(0),
      uid: raw.readUInt16LE(2) + raw.readUInt16LE(0x78) * 65536,
      gid: raw.readUInt16LE(0x18) + raw.readUInt16LE(0x7a) * 65536,
      size: raw.readUInt32LE(4) + raw.readUInt32LE(0x6c) * 2 ** 32,
      nlink: raw.readUInt16LE(0x1a),
      blocks: flags & HUGE_FILE_FL ? blocksLo * (this.bs / 512) : blocksLo,
      iblock: raw.subarray(0x28, 0x28 + 60),
      fileAcl: raw.readUInt32LE(0x68) + raw.readUInt16LE(0x76) * 2 ** 32,
      ctime: time(raw, 0x0c, 0x84, has(0x88)),
      mtime: time(raw, 0x10, 0x88, has(0x8c)),
      atime: time(raw, 0x08, 0x8c, has(0x90)),
    };
  }

  /** Where an inode's data lives: its extent tree (any depth, bounded) or its block map, as sorted runs. */
  private async runs(n: Inode, entry: string): Promise<Run[]> {
    if (n.flags & INLINE_DATA_FL) throw this.err('inline data, which firebuild does not read', entry);
    if (n.size > 2 ** 32 * this.bs) throw this.err(`a size of ${n.size} bytes, more than ext4 can address`, entry);
    const nblocks = Math.ceil(n.size / this.bs);
    const out: Run[] = [];
    let mapped = 0;
    let visited = 0;
    const add = (r: Run): void => {
      if (r.lblk >= nblocks || r.len === 0) return;
      r.len = Math.min(r.len, nblocks - r.lblk);
      if (r.pblk < this.firstDataBlock || r.pblk + r.len > this.blocksCount) throw this.err(`data at blocks ${r.pblk}..${r.pblk + r.len}, beyond the file system`, entry);
      mapped += r.len;
      if (mapped > this.blocksCount) throw this.err('more data blocks than the file system has', entry);
      const last = out[out.length - 1];
      if (last && !last.unwritten && !r.unwritten && last.lblk + last.len === r.lblk && last.pblk + last.len === r.pblk) last.len += r.len;
      else out.push(r);
    };
    if (n.flags & EXTENTS_FL) {
      const node = async (buf: Buffer, depth: number | undefined, level: number): Promise<void> => {
        if (++visited > this.blocksCount + 1) throw this.err('an extent tree larger than the file system', entry);
        if (buf.readUInt16LE(0) !== 0xf30a) throw this.err('a broken extent tree (bad magic)', entry);
        const entries = buf.readUInt16LE(2);
        const d = buf.readUInt16LE(6);
        if (entries * 12 + 12 > buf.length || d > MAX_DEPTH || (depth !== undefined && d !== depth) || level > MAX_DEPTH) throw this.err('a broken extent tree (bad header)', entry);
        for (let i = 0; i < entries; i++) {
          const o = 12 + i * 12;
          const lblk = buf.readUInt32LE(o);
          if (d === 0) {
            const raw = buf.readUInt16LE(o + 4);
            add({ lblk, len: raw > 32768 ? raw - 32768 : raw, unwritten: raw > 32768, pblk: buf.readUInt16LE(o + 6) * 2 ** 32 + buf.readUInt32LE(o + 8) });
          } else {
            const child = buf.readUInt32LE(o + 4) + buf.readUInt16LE(o + 8) * 2 ** 32;
            await node(await this.block(child, entry), d - 1, level + 1);
          }
        }
      };
      await node(n.iblock, undefined, 0);
    } else {
      const per = this.bs / 4;
      const ind = async (blk: number, level: number, base: number): Promise<void> => {
        if (blk === 0 || base >= nblocks) return;
        if (++visited > this.blocksCount) throw this.err('a block map larger than the file system', entry);
        const b = await this.block(blk, entry);
        const span = per ** (level - 1);
        for (let i = 0; i < per && base + i * span < nblocks; i++) {
          const p = b.readUInt32LE(i * 4);
          if (level === 1) { if (p) add({ lblk: base + i, pblk: p, len: 1, unwritten: false }); } else await ind(p, level - 1, base + i * span);
        }
      };
      for (let i = 0; i < 12; i++) {
        const p = n.iblock.readUInt32LE(i * 4);
        if (p) add({ lblk: i, pblk: p, len: 1, unwritten: false });
      }
      await ind(n.iblock.readUInt32LE(48), 1, 12);
      await ind(n.iblock.readUInt32LE(52), 2, 12 + per);
      await ind(n.iblock.readUInt32LE(56), 3, 12 + per + per * per);
    }
    out.sort((a, b) => a.lblk - b.lblk);
    for (let i = 1; i < out.length; i++) if (out[i]!.lblk < out[i - 1]!.lblk + out[i - 1]!.len) throw this.err('overlapping extents', entry);
    return out;
  }

  /** An inode's content, `size` bytes, holes and unwritten extents as zeros, in chunks of at most 1 MiB. */
  private async *content(n: Inode, entry: string): AsyncGenerator<Buffer> {
    // Holes read as zeros: a sparse file (a stage's `truncate -s 16T`, a crafted i_size) would stream
    // terabytes into scratch files or `docker import`. The contents read out of one image, each inode
    // once, may not exceed the image's own size (as without holes they cannot) plus HOLE_ALLOWANCE.
    if (!this.readOut.has(n.ino)) {
      const cap = this.blocksCount * this.bs + HOLE_ALLOWANCE;
      if (this.contentBytes + n.size > cap) {
        throw this.err(`its files hold more than ${cap} bytes, its own size plus ${HOLE_ALLOWANCE / 1024 ** 3} GiB of holes (this one: ${n.size} bytes): refusing to read them out; make such sparse files smaller`, entry);
      }
      this.readOut.add(n.ino);
      this.contentBytes += n.size;
    }
    const runs = await this.runs(n, entry);
    let pos = 0;
    const zeros = async function* (upto: number): AsyncGenerator<Buffer> {
      while (pos < upto) {
        const len = Math.min(CHUNK, upto - pos);
        pos += len;
        yield Buffer.alloc(len);
      }
    };
    for (const r of runs) {
      yield* zeros(Math.min(r.lblk * this.bs, n.size));
      const end = Math.min((r.lblk + r.len) * this.bs, n.size);
      if (r.unwritten) { yield* zeros(end); continue; }
      while (pos < end) {
        const len = Math.min(CHUNK, end - pos);
        const b = Buffer.alloc(len);
        const at = r.pblk * this.bs + (pos - r.lblk * this.bs);
        const { bytesRead } = await this.fh.read(b, 0, len, at);
        if (bytesRead < len) throw this.err('data beyond the end of the image file', entry);
        pos += len;
        yield b;
      }
    }
    yield* zeros(n.size);
  }

  /** A directory's entries in on-disk order, '.' and '..' (as the first two) left out; names checked. */
  private async dirEntries(n: Inode, entry: string): Promise<[string, number][]> {
    if (n.size > 1 << 30) throw this.err(`a directory of ${n.size} bytes`, entry);
    const out: [string, number][] = [];
    const seen = new Set<string>();
    let index = 0;
    const hasType = (this.incompat & INCOMPAT.filetype) !== 0;
    for (const r of await this.runs(n, entry)) {
      if (r.unwritten) continue;
      for (let k = 0; k < r.len; k++) {
        const b = await this.block(r.pblk + k, entry);
        for (let o = 0; o < this.bs;) {
          if (o + 8 > this.bs) throw this.err('a broken directory block', entry);
          const ino = b.readUInt32LE(o);
          let rec = b.readUInt16LE(o + 4);
          if (this.bs >= 65536 && (rec === 65535 || rec === 0)) rec = this.bs;
          const nameLen = hasType ? b[o + 6]! : b.readUInt16LE(o + 6);
          if (rec < 8 || rec % 4 || o + rec > this.bs || 8 + nameLen > rec) throw this.err('a broken directory entry', entry);
          if (ino !== 0) {
            const raw = b.subarray(o + 8, o + 8 + nameLen);
            const name = raw.toString('utf8');
            const full = entry === '/' ? `/${name}` : `${entry}/${name}`;
            const dots = index === 0 ? '.' : index === 1 ? '..' : undefined;
            if (name === dots) { index++; o += rec; continue; }
            index = 2;
            if (nameLen === 0 || raw.includes(0) || raw.includes(0x2f)) throw this.err(`an entry named ${JSON.stringify(raw.toString('latin1'))} (a name with '/' or NUL, or empty): refusing the image`, full);
            if (name === '.' || name === '..') throw this.err(`a second '${name}' entry: refusing the image`, entry);
            if (seen.has(name)) throw this.err('two entries of this name in one directory: refusing the image', full);
            seen.add(name);
            out.push([name, ino]);
          }
          o += rec;
        }
      }
    }
    return out;
  }

  private async toEntry(p: string, n: Inode): Promise<ImageEntry> {
    const type = TYPES[n.mode & 0o170000];
    if (!type) throw this.err(`an inode of unknown type (mode 0${n.mode.toString(8)})`, p);
    const e: ImageEntry = {
      path: p, type, ino: n.ino, mode: n.mode & 0o7777, uid: n.uid, gid: n.gid, size: type === 'file' || type === 'symlink' || type === 'dir' ? n.size : 0,
      nlink: n.nlink, mtime: n.mtime, atime: n.atime, ctime: n.ctime, xattrs: await this.xattrs(n, p),
    };
    if (type === 'symlink') e.linkTarget = await this.linkTarget(n, p);
    if (type === 'char' || type === 'block') {
      const old = n.iblock.readUInt32LE(0);
      const dev = old || n.iblock.readUInt32LE(4);
      e.rdev = old ? { major: (old >> 8) & 0xff, minor: old & 0xff } : { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
    }
    return e;
  }

  private async linkTarget(n: Inode, p: string): Promise<string> {
    if (n.size === 0 || n.size > this.bs) throw this.err(`a symlink target of ${n.size} bytes`, p);
    const eaBlocks = n.fileAcl ? this.bs / 512 : 0;
    let t: Buffer;
    if (!(n.flags & EXTENTS_FL) && n.blocks - eaBlocks === 0) {
      if (n.size >= 60) throw this.err('a broken fast symlink', p);
      t = n.iblock.subarray(0, n.size);
    } else {
      const parts: Buffer[] = [];
      for await (const c of this.content(n, p)) parts.push(c);
      t = Buffer.concat(parts);
    }
    if (t.includes(0)) throw this.err('a symlink target with a NUL byte', p);
    return t.toString('utf8');
  }

  private async xattrs(n: Inode, p: string): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    const parse = (buf: Buffer, first: number, valueBase: number): void => {
      for (let o = first, count = 0; o + 4 <= buf.length && buf.readUInt32LE(o) !== 0; count++) {
        if (o + 16 > buf.length || count > 1024) throw this.err('a broken extended attribute table', p);
        const nameLen = buf[o]!;
        const prefix = XATTR_PREFIX[buf[o + 1]!];
        const vOff = buf.readUInt16LE(o + 2);
        const vInum = buf.readUInt32LE(o + 4);
        const vSize = buf.readUInt32LE(o + 8);
        if (o + 16 + nameLen > buf.length) throw this.err('a broken extended attribute name', p);
        if (vInum !== 0) throw this.err('an extended attribute in an inode of its own (ea_inode), which firebuild does not read', p);
        if (valueBase + vOff + vSize > buf.length) throw this.err('an extended attribute value beyond its block', p);
        const suffix = buf.subarray(o + 16, o + 16 + nameLen).toString('latin1');
        if (prefix === undefined) throw this.err(`an extended attribute of unknown name index ${buf[o + 1]}`, p);
        const name = prefix + suffix;
        if (name === 'system.data') throw this.err('inline data, which firebuild does not read', p);
        const v = Buffer.from(buf.subarray(valueBase + vOff, valueBase + vOff + vSize));
        out.set(name, name.startsWith('system.posix_acl_') ? aclToVfs(v) : v);
        o += (16 + nameLen + 3) & ~3;
      }
    };
    const extra = this.inodeSize > 128 ? n.raw.readUInt16LE(0x80) : 0;
    const at = 128 + extra;
    if (at + 4 <= this.inodeSize && n.raw.readUInt32LE(at) === 0xea020000) {
      const region = n.raw.subarray(at + 4);
      parse(region, 0, 0);
    }
    if (n.fileAcl) {
      const b = await this.block(n.fileAcl, p);
      if (b.readUInt32LE(0) !== 0xea020000 || b.readUInt32LE(8) !== 1) throw this.err('a broken extended attribute block', p);
      parse(b, 32, 0);
    }
    return out;
  }

  /** Resolve a path (symlinks in parent components followed inside the image; the last one when `follow`). */
  private async resolve(p: string, follow: boolean): Promise<{ path: string; inode: Inode } | undefined> {
    let hops = 0;
    const walkFrom = async (parts: string[]): Promise<{ path: string; inode: Inode } | undefined> => {
      const stack: { path: string; inode: Inode }[] = [{ path: '/', inode: await this.inode(2, '/') }];
      const todo = [...parts];
      while (todo.length) {
        const name = todo.shift()!;
        if (name === '' || name === '.') continue;
        if (name === '..') { if (stack.length > 1) stack.pop(); continue; }
        const cur = stack[stack.length - 1]!;
        if ((cur.inode.mode & 0o170000) !== 0o040000) return undefined;
        const hit = (await this.dirEntries(cur.inode, cur.path)).find(([nm]) => nm === name);
        if (!hit) return undefined;
        const childPath = cur.path === '/' ? `/${name}` : `${cur.path}/${name}`;
        const child = await this.inode(hit[1], childPath);
        if ((child.mode & 0o170000) === 0o120000 && (todo.length > 0 || follow)) {
          if (++hops > MAX_LINK_HOPS) throw this.err('too many levels of symlinks', p);
          const target = await this.linkTarget(child, childPath);
          if (target.startsWith('/')) stack.splice(1);
          todo.unshift(...target.split('/'));
          continue;
        }
        stack.push({ path: childPath, inode: child });
      }
      return stack[stack.length - 1];
    };
    return walkFrom(p.split('/'));
  }

  /** A directory's child by name (each directory's entries read once per open image). */
  private async child(dir: Inode, dirPath: string, name: string): Promise<number | undefined> {
    let names = this.names.get(dir.ino);
    if (!names) {
      names = new Map(await this.dirEntries(dir, dirPath));
      if (this.names.size >= 4096) this.names.delete(this.names.keys().next().value as number);
      this.names.set(dir.ino, names);
    }
    return names.get(name);
  }

  /**
   * Where `p` leads inside the image, resolved as in a chroot of it (what continuity's RootPath does for
   * BuildKit's COPY, ADD and WORKDIR): every symlink on the way is followed, the last component's too
   * unless `follow` is false; an absolute target starts again at the image's root and `..` stops at /,
   * so the result never leaves the image; at most MAX_LINK_HOPS links are followed (a loop is a
   * UserError). From the first missing component on, the rest is kept as written (`..` lexically).
   * Returns the resolved path (no symlink left in it), the entry there when it exists, and `exists`:
   * the longest prefix of `path` that exists. `notDir`: an existing non-directory the path goes through
   * (the rest cannot be made); `path` is then that entry's path followed by the rest as written.
   */
  async locate(p: string, o: { follow?: boolean } = {}): Promise<{ path: string; exists: string; entry?: ImageEntry; notDir?: ImageEntry }> {
    const follow = o.follow ?? true;
    const root = await this.inode(2, '/');
    const stack: { name: string; inode?: Inode }[] = [];
    const pathOf = (): string => `/${stack.map((s) => s.name).join('/')}`;
    const todo = p.split('/');
    let hops = 0;
    while (todo.length) {
      const name = todo.shift()!;
      if (name === '' || name === '.') continue;
      if (name === '..') {
        stack.pop();
        continue;
      }
      const top = stack[stack.length - 1];
      const cur = top ? top.inode : root;
      if (cur === undefined) {
        stack.push({ name });
        continue;
      }
      if ((cur.mode & 0o170000) !== 0o040000) {
        const at = pathOf();
        const notDir = await this.toEntry(at, cur);
        const rest = [name, ...todo].filter((x) => x !== '' && x !== '.');
        return { path: `${at}/${rest.join('/')}`, exists: at, notDir };
      }
      const dirPath = pathOf();
      const childPath = dirPath === '/' ? `/${name}` : `${dirPath}/${name}`;
      const ino = await this.child(cur, dirPath, name);
      if (ino === undefined) {
        stack.push({ name });
        continue;
      }
      const child = await this.inode(ino, childPath);
      if ((child.mode & 0o170000) === 0o120000 && (follow || todo.some((x) => x !== '' && x !== '.'))) {
        if (++hops > MAX_LINK_HOPS) throw this.err(`more than ${MAX_LINK_HOPS} symlinks on the way (a symlink loop?)`, p);
        const target = await this.linkTarget(child, childPath);
        if (target.startsWith('/')) stack.length = 0;
        todo.unshift(...target.split('/'));
        continue;
      }
      stack.push({ name, inode: child });
    }
    let k = stack.length;
    while (k > 0 && stack[k - 1]!.inode === undefined) k--;
    const exists = `/${stack.slice(0, k).map((s) => s.name).join('/')}`;
    const last = stack[stack.length - 1];
    const at = pathOf();
    if (!last) return { path: '/', exists: '/', entry: await this.toEntry('/', root) };
    return last.inode ? { path: at, exists, entry: await this.toEntry(at, last.inode) } : { path: at, exists };
  }

  /** The entry at exactly `p`, no symlink followed anywhere: undefined when missing or when a component on the way is not a directory. */
  async entryAt(p: string): Promise<ImageEntry | undefined> {
    let cur = await this.inode(2, '/');
    let at = '/';
    for (const name of p.split('/')) {
      if (name === '' || name === '.') continue;
      if (name === '..') throw this.err('a path with ".." where an exact path is needed', p);
      if ((cur.mode & 0o170000) !== 0o040000) return undefined;
      const ino = await this.child(cur, at, name);
      if (ino === undefined) return undefined;
      at = at === '/' ? `/${name}` : `${at}/${name}`;
      cur = await this.inode(ino, at);
    }
    return this.toEntry(at, cur);
  }

  async stat(p: string, o: { follow?: boolean } = {}): Promise<ImageEntry | undefined> {
    const r = await this.resolve(p, o.follow ?? false);
    return r ? this.toEntry(r.path, r.inode) : undefined;
  }

  /** A regular file's content, by path (symlinks followed) or inode number (`as`: its path, for messages). */
  async *readFile(p: string | number, as?: string): AsyncGenerator<Buffer> {
    const name = as ?? (typeof p === 'number' ? `inode ${p}` : p);
    const n = typeof p === 'number' ? await this.inode(p, name) : (await this.resolve(p, true))?.inode;
    if (!n) throw this.err('no such file', name);
    if ((n.mode & 0o170000) !== 0o100000) throw this.err('not a regular file', name);
    yield* this.content(n, name);
  }

  /** A whole regular file as one Buffer (configs: passwd, group), refused past `max` bytes. */
  async readSmall(p: string, max = 16 << 20): Promise<Buffer | undefined> {
    const e = await this.stat(p, { follow: true });
    if (!e || e.type !== 'file') return undefined;
    if (e.size > max) throw this.err(`${e.size} bytes, more than the ${max} firebuild reads from a config file`, p);
    const parts: Buffer[] = [];
    for await (const c of this.readFile(e.ino)) parts.push(c);
    return Buffer.concat(parts);
  }

  /**
   * Every entry under `under` (not itself), depth-first, parents before children, names in byte order.
   * A directory reachable by two names is refused (no loops); so are bad and duplicate names.
   */
  async *walk(under = '/'): AsyncGenerator<ImageEntry> {
    const top = await this.resolve(under, true);
    if (!top) throw this.err('no such directory', under);
    if ((top.inode.mode & 0o170000) !== 0o040000) throw this.err('not a directory', under);
    const seenDirs = new Set<number>([top.inode.ino]);
    // Paths below `under` as it was given (even when it is reached through a symlink).
    const prefix = `/${under.split('/').filter((x) => x && x !== '.').join('/')}`;
    const stack: { path: string; inode: Inode }[] = [{ path: prefix, inode: top.inode }];
    while (stack.length) {
      const d = stack.pop()!;
      const kids = (await this.dirEntries(d.inode, d.path)).sort(([a], [b]) => (Buffer.compare(Buffer.from(a), Buffer.from(b))));
      const dirs: { path: string; inode: Inode }[] = [];
      for (const [name, ino] of kids) {
        const p = d.path === '/' ? `/${name}` : `${d.path}/${name}`;
        const n = await this.inode(ino, p);
        const e = await this.toEntry(p, n);
        if (e.type === 'dir') {
          if (seenDirs.has(ino) || ino === 2) throw this.err('a directory reachable by two names: refusing the image', p);
          seenDirs.add(ino);
        }
        yield e;
        if (e.type === 'dir') dirs.push({ path: p, inode: n });
      }
      // Depth-first: children of the first directory before its next sibling's... pushed in reverse.
      for (const x of dirs.reverse()) stack.push(x);
    }
  }

  /** Every data block of every file, directory and symlink is within the file system (no content read). */
  async checkBlocks(e: ImageEntry): Promise<void> {
    if (e.type === 'file' || e.type === 'dir') await this.runs(await this.inode(e.ino, e.path), e.path);
  }
}

/**
 * An ext4 image from outside (a pull, a cache restore): `e2fsck -fn` must find it clean, and the whole
 * tree must read (names, duplicates, loops, sizes, features): else a one-line UserError naming `what`.
 */
export async function checkExt4Image(image: string, what: string): Promise<void> {
  try {
    await new Ext4Tools().check(image);
  } catch (err) {
    if (!(err instanceof ExecError)) throw err;
    const out = err.result.stdout + '\n' + err.result.stderr;
    const line = out.split('\n').map((l) => l.trim()).filter((l) => l && !/^(Pass \d|e2fsck \d)/.test(l)).slice(0, 1)[0] ?? 'not clean';
    throw new UserError(`the ext4 image ${what} fails e2fsck -fn (${line}): refusing it; rebuild or re-push it`);
  }
  const img = await Ext4Image.open(image, what);
  try {
    for await (const e of img.walk('/')) await img.checkBlocks(e);
  } finally {
    await img.close();
  }
}
