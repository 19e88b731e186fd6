import { randomBytes, randomUUID } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { Allocator, BlockWriter, addExtent } from './ext4-alloc.js';
import { finishImage } from './ext4-finish.js';
import { BLOCK_XATTR_SPACE, BS, xattrBytes, xattrEntries } from './ext4-layout.js';
import type { Ext4Time } from './ext4-layout.js';
import { Tree, components, newNode } from './ext4-tree.js';
import type { Node, NodeMeta } from './ext4-tree.js';

export type { Ext4Time } from './ext4-layout.js';
export type { NodeMeta } from './ext4-tree.js';

export interface WriteResult { imageBytes: number; usedBytes: number; entries: number; inodes: number }

export interface FinishOptions {
  /** Free space to leave beyond the content (default 0). */
  freeBytes?: number;
  /** The exact image size (a UserError when the content needs more). */
  sizeBytes?: number;
  /** Spare inodes (default: one per 16 KiB of free space, at least 1024). */
  extraInodes?: number;
  /** An internal jbd2 journal (inode 8). */
  journal?: boolean;
}

/** Beyond this many extents a file's zero blocks are written rather than left as holes. */
const MAX_HOLE_EXTENTS = 50000;
const ZERO = Buffer.alloc(BS);

/**
 * A userspace ext4 image writer. File data streams straight into the image file as it arrives (all-zero
 * blocks become holes); the inode tree stays in memory; directories, inodes, bitmaps and superblocks are
 * laid out by finish(). No host path is ever made from an image name: the tree lives only in memory and in
 * the image file. See docs/architecture.md ("Userspace ext4 writer").
 */
export class Ext4Writer {
  private readonly tree: Tree;
  private readonly alloc = new Allocator();
  private readonly out: BlockWriter;
  private readonly carry = Buffer.alloc(BS);
  private busy = false;
  private closed = false;

  private constructor(
    private readonly image: string,
    private fh: fsp.FileHandle,
    private readonly label: string,
    private readonly log: Logger | undefined,
    now: Ext4Time,
  ) {
    this.tree = new Tree({ mode: 0o755, uid: 0, gid: 0, mtime: now });
    this.out = new BlockWriter(fh, image);
  }

  static async create(image: string, o: { label?: string; log?: Logger } = {}): Promise<Ext4Writer> {
    const fh = await fsp.open(image, 'w+', 0o644);
    return new Ext4Writer(image, fh, o.label ?? 'rootfs', o.log, { sec: Math.floor(Date.now() / 1000), nsec: 0 });
  }

  /** Starts a new generation (a registry layer): clearDir keeps what this generation added. */
  beginLayer(): void {
    this.idle();
    this.tree.gen++;
  }

  /** A directory; over an existing one its metadata is replaced and its children kept. */
  addDir(p: string, meta: NodeMeta): void {
    this.idle();
    this.checkXattrs(p, meta);
    const at = this.tree.parentOf(p, true);
    if (!at) { this.tree.root.meta = meta; return; }
    const old = at.dir.children?.get(at.name);
    if (old?.node.kind === 'dir') {
      old.node.meta = meta;
      old.gen = this.tree.gen;
      return;
    }
    this.tree.link(at.dir, at.name, newNode('dir', meta));
  }

  /** A regular file of exactly `size` bytes read from `data`, written into the image as it arrives. */
  async addFile(p: string, meta: NodeMeta, size: number, data: AsyncIterable<Buffer>): Promise<void> {
    this.idle();
    this.checkXattrs(p, meta);
    const at = this.placeOf(p);
    const node = newNode('file', meta);
    node.size = size;
    this.busy = true;
    try {
      let got = 0;
      let logical = 0;
      let carried = 0;
      for await (const chunk of data) {
        if (got + chunk.length > size) throw new UserError(`the archive entry ${JSON.stringify(p)} holds more than its ${size} bytes`);
        got += chunk.length;
        let off = 0;
        if (carried > 0) {
          const take = Math.min(BS - carried, chunk.length);
          chunk.copy(this.carry, carried, 0, take);
          carried += take;
          off = take;
          if (carried === BS) {
            await this.dataBlock(node, this.carry, 0, logical++);
            carried = 0;
          }
        }
        for (; chunk.length - off >= BS; off += BS) {
          const wait = this.dataBlock(node, chunk, off, logical++);
          if (wait) await wait;
        }
        if (off < chunk.length) {
          chunk.copy(this.carry, 0, off);
          carried = chunk.length - off;
        }
      }
      if (got !== size) throw new UserError(`the archive entry ${JSON.stringify(p)} ended after ${got} of its ${size} bytes`);
      if (carried > 0) {
        this.carry.fill(0, carried);
        await this.dataBlock(node, this.carry, 0, logical);
      }
    } finally {
      this.busy = false;
    }
    this.tree.link(at.dir, at.name, node);
  }

  private dataBlock(node: Node, src: Buffer, off: number, logical: number): Promise<void> | undefined {
    if (node.ext.length < MAX_HOLE_EXTENTS * 3 && src.compare(ZERO, 0, BS, off, off + BS) === 0) return undefined;
    const phys = this.alloc.one();
    addExtent(node.ext, logical, phys);
    return this.out.put(phys, src, off);
  }

  addSymlink(p: string, target: string, meta: NodeMeta): void {
    this.idle();
    const t = Buffer.from(target, 'utf8');
    if (t.length === 0 || t.length > 4095 || t.includes(0)) {
      throw new UserError(`the symbolic link ${JSON.stringify(p.slice(0, 200))} has an empty, over-long (4095 bytes) or NUL-holding target`);
    }
    this.checkXattrs(p, meta);
    const at = this.placeOf(p);
    const node = newNode('symlink', meta);
    node.target = t;
    node.size = t.length;
    this.tree.link(at.dir, at.name, node);
  }

  /** Another name for an existing non-directory entry. */
  addHardlink(p: string, target: string): void {
    this.idle();
    components(p);
    const node = this.tree.lookup(target);
    if (!node || node.kind === 'dir') {
      throw new UserError(`the hard link ${JSON.stringify(p.slice(0, 200))} points at ${JSON.stringify(target.slice(0, 200))}, which is ${node ? 'a directory' : 'not in the image'}`);
    }
    if (node.names >= 65000) throw new UserError(`${JSON.stringify(target.slice(0, 200))} has more than ext4's 65000 hard links`);
    const at = this.placeOf(p);
    this.tree.link(at.dir, at.name, node);
  }

  addSpecial(p: string, type: 'char' | 'block' | 'fifo' | 'socket', meta: NodeMeta, rdev?: { major: number; minor: number }): void {
    this.idle();
    this.checkXattrs(p, meta);
    const at = this.placeOf(p);
    const node = newNode(type, meta);
    if (type === 'char' || type === 'block') {
      const r = rdev ?? { major: 0, minor: 0 };
      if (r.major < 0 || r.major > 0xfff || r.minor < 0 || r.minor > 0xfffff) throw new UserError(`the device ${JSON.stringify(p.slice(0, 200))} has a number ${r.major}:${r.minor} Linux cannot encode`);
      node.rdev = r;
    }
    this.tree.link(at.dir, at.name, node);
  }

  /** A whiteout: the entry and its subtree go; no-op when absent. */
  remove(p: string): void {
    this.idle();
    this.tree.remove(p);
  }

  /** An opaque directory: its children added before the current layer go. */
  clearDir(p: string): void {
    this.idle();
    this.tree.clearDir(p);
  }

  async finish(o: FinishOptions = {}): Promise<WriteResult> {
    this.idle();
    this.closed = true;
    try {
      await this.out.flush();
      const r = await finishImage({
        tree: this.tree, alloc: this.alloc, out: this.out, fh: this.fh, label: this.label, image: this.image,
        uuid: Buffer.from(randomUUID().replace(/-/g, ''), 'hex'), hashSeed: randomBytes(16),
      }, o);
      await this.fh.close();
      this.log?.debug('ext4 image written', { image: this.image, ...r });
      return r;
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  /** Closes and removes the image file. */
  async abort(): Promise<void> {
    this.closed = true;
    await this.fh.close().catch(() => undefined);
    await fsp.rm(this.image, { force: true });
  }

  private placeOf(p: string): { dir: Node; name: string } {
    const at = this.tree.parentOf(p, true);
    if (!at) throw new UserError(`cannot write a non-directory at the image root (${JSON.stringify(p)})`);
    return at;
  }

  private checkXattrs(p: string, meta: NodeMeta): void {
    if (!meta.xattrs?.size) return;
    const es = xattrEntries(meta.xattrs, JSON.stringify(p.slice(0, 200)), (m) => this.log?.warn(m));
    if (xattrBytes(es) > BLOCK_XATTR_SPACE) throw new UserError(`the extended attributes of ${JSON.stringify(p.slice(0, 200))} take more than the ${BLOCK_XATTR_SPACE} bytes ext4 holds for them: drop some`);
  }

  private idle(): void {
    if (this.closed) throw new Error('the ext4 writer is already finished');
    if (this.busy) throw new Error('the ext4 writer is still writing a file: await addFile first');
  }
}
