import { UserError } from '../util/errors.js';
import { exec, ExecError } from '../util/exec.js';
import type { Logger } from '../util/logger.js';

/** e2fsprogs behind one small class: argv built by pure methods, run through the exec wrapper. */
export interface MkfsOptions {
  /** Directory whose contents populate the file system (`mkfs.ext4 -d`). */
  root: string;
  image: string;
  sizeBytes: number;
  inodes?: number;
  label?: string;
  journal?: boolean;
}

export const BLOCK_SIZE = 4096;

export function mkfsArgv(o: MkfsOptions): string[] {
  const blocks = Math.ceil(o.sizeBytes / BLOCK_SIZE);
  return [
    '-q', '-F',
    '-t', 'ext4',
    '-b', String(BLOCK_SIZE),
    '-I', '256',
    '-m', '0', // no reserved blocks: a VM root file system has no other user to keep space for
    '-O', o.journal ? 'has_journal' : '^has_journal',
    '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard',
    ...(o.inodes ? ['-N', String(o.inodes)] : []),
    '-L', o.label ?? 'rootfs',
    '-d', o.root,
    o.image,
    String(blocks),
  ];
}

export function resizeArgv(image: string, blocks?: number): string[] {
  return blocks === undefined ? ['-M', image] : [image, String(blocks)];
}

export function fsckArgv(image: string): string[] {
  return ['-fn', image];
}

export class Ext4Tools {
  constructor(private readonly log?: Logger) {}

  async mkfs(o: MkfsOptions): Promise<void> {
    await this.run('mkfs.ext4', mkfsArgv(o), o.image);
  }

  /** Shrink to the minimum (`resize2fs -M`), then grow to hold `freeBytes` more, or to exactly `sizeBytes`. */
  async shrink(image: string, opts: { freeBytes?: number; sizeBytes?: number }): Promise<{ minBytes: number; finalBytes: number }> {
    await this.run('e2fsck', ['-fy', image], image, [0, 1]); // resize2fs wants a freshly checked file system
    await this.run('resize2fs', resizeArgv(image), image);
    const minBlocks = await this.blockCount(image);
    let finalBlocks = minBlocks + Math.ceil((opts.freeBytes ?? 0) / BLOCK_SIZE);
    if (opts.sizeBytes !== undefined) {
      const want = Math.floor(opts.sizeBytes / BLOCK_SIZE);
      if (want < minBlocks) {
        throw new UserError(`--size ${opts.sizeBytes} bytes is smaller than the ${minBlocks * BLOCK_SIZE} bytes the content needs: give a larger --size or leave it out`);
      }
      finalBlocks = want;
    }
    if (finalBlocks !== minBlocks) await this.run('resize2fs', resizeArgv(image, finalBlocks), image);
    return { minBytes: minBlocks * BLOCK_SIZE, finalBytes: finalBlocks * BLOCK_SIZE };
  }

  /** `e2fsck -fn`: a read-only full check; throws when the file system is not clean. */
  async check(image: string): Promise<void> {
    const r = await exec('e2fsck', fsckArgv(image), { allowFailure: true, ...(this.log ? { logger: this.log } : {}) });
    if (r.code !== 0) throw new ExecError('e2fsck', fsckArgv(image), r);
  }

  async blockCount(image: string): Promise<number> {
    const r = await exec('dumpe2fs', ['-h', image], { ...(this.log ? { logger: this.log } : {}) });
    const m = /^Block count:\s+(\d+)/m.exec(r.stdout);
    if (!m) throw new Error(`cannot read the block count of ${image}`);
    return Number(m[1]);
  }

  private async run(cmd: string, args: string[], image: string, okCodes = [0]): Promise<void> {
    const r = await exec(cmd, args, { allowFailure: true, ...(this.log ? { logger: this.log } : {}) });
    if (okCodes.includes(r.code)) return;
    if (/No space left on device|ENOSPC|Could not allocate block/i.test(r.stderr + r.stdout)) {
      throw new UserError(`out of disk space writing ${image}: free some space or point the store (rootfs-storage-root) at a larger file system`);
    }
    throw new ExecError(cmd, args, r);
  }
}
