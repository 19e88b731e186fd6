import type { FileHandle } from 'node:fs/promises';
import { UserError, errnoCode } from '../util/errors.js';
import { BLOCKS_PER_GROUP, BS, GDT_RESERVE, MAX_EXTENT_LEN, hasBackup } from './ext4-layout.js';
import type { Extents } from './ext4-layout.js';

/**
 * Block allocation and buffered positional writes of the userspace ext4 writer. Blocks are handed out in
 * order, skipping the superblock + GDT area at the start of every sparse_super backup group; writes of
 * consecutive blocks are coalesced into 4 MiB buffers (two, so one fills while the other is written).
 */
const RESERVED = 1 + GDT_RESERVE;

export class Allocator {
  constructor(public next = RESERVED) {}

  one(): number {
    let b = this.next;
    const g = Math.floor(b / BLOCKS_PER_GROUP);
    if (b - g * BLOCKS_PER_GROUP < RESERVED && hasBackup(g)) b = g * BLOCKS_PER_GROUP + RESERVED;
    this.next = b + 1;
    return b;
  }

  /** `n` contiguous blocks (n <= a group's free run) that cross no reserved area. */
  run(n: number): number {
    let b = this.next;
    for (;;) {
      const g = Math.floor(b / BLOCKS_PER_GROUP);
      if (b - g * BLOCKS_PER_GROUP < RESERVED && hasBackup(g)) b = g * BLOCKS_PER_GROUP + RESERVED;
      const last = Math.floor((b + n - 1) / BLOCKS_PER_GROUP);
      let moved = false;
      for (let h = g + 1; h <= last; h++) {
        if (hasBackup(h)) { b = h * BLOCKS_PER_GROUP + RESERVED; moved = true; break; }
      }
      if (!moved) break;
    }
    this.next = b + n;
    return b;
  }
}

/** Appends block `phys` as logical block `logical` to extent list `ext` (merging when contiguous). */
export function addExtent(ext: Extents, logical: number, phys: number): void {
  const n = ext.length;
  if (n >= 3 && ext[n - 1]! < MAX_EXTENT_LEN && ext[n - 3]! + ext[n - 1]! === logical && ext[n - 2]! + ext[n - 1]! === phys) ext[n - 1]!++;
  else ext.push(logical, phys, 1);
}

const BUF_BLOCKS = 1024; // 4 MiB

export class BlockWriter {
  private buf = Buffer.allocUnsafe(BUF_BLOCKS * BS);
  private spare = Buffer.allocUnsafe(BUF_BLOCKS * BS);
  private start = 0;
  private len = 0;
  private pending: Promise<void> | undefined;
  private failed: unknown;

  constructor(private readonly fh: FileHandle, private readonly image: string) {}

  /** Queues one block (`src[off, off+4096)`); returns a promise only when the caller must wait. */
  put(block: number, src: Buffer, off = 0): Promise<void> | undefined {
    if (this.len > 0 && (block !== this.start + this.len || this.len === BUF_BLOCKS)) {
      return this.rotate().then(() => this.copyIn(block, src, off));
    }
    this.copyIn(block, src, off);
    return undefined;
  }

  private copyIn(block: number, src: Buffer, off: number): void {
    if (this.len === 0) this.start = block;
    src.copy(this.buf, this.len * BS, off, off + BS);
    this.len++;
  }

  private async settle(): Promise<void> {
    await this.pending;
    this.pending = undefined;
    if (this.failed !== undefined) throw this.failed;
  }

  private async rotate(): Promise<void> {
    await this.settle();
    if (this.len === 0) return;
    const out = this.buf;
    // The error is kept (not left as a rejected promise nobody awaits yet) and thrown at the next wait.
    this.pending = this.fh.write(out, 0, this.len * BS, this.start * BS).then(() => undefined, (e: unknown) => { this.failed = this.wrap(e); });
    this.buf = this.spare;
    this.spare = out;
    this.len = 0;
  }

  async flush(): Promise<void> {
    await this.rotate();
    await this.settle();
  }

  /** A direct write at a byte position (metadata in finish()); the buffers are flushed first. */
  async writeAt(pos: number, data: Buffer): Promise<void> {
    await this.flush();
    try {
      await this.fh.write(data, 0, data.length, pos);
    } catch (e) {
      throw this.wrap(e);
    }
  }

  wrap(e: unknown): unknown {
    const code = errnoCode(e);
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return new UserError(`out of disk space writing ${this.image}: free some space or point the store (rootfs-storage-root) at a larger file system`, { cause: e });
    }
    return e;
  }
}
