import { spawn } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { InternalError, UserError } from '../util/errors.js';
import { tailLines } from '../util/exec.js';
import type { Logger } from '../util/logger.js';
import { Ext4Tools } from './ext4.js';
import { TarGuard, type TarStats } from './tar-guard.js';

export interface ConvertOptions {
  /** A scratch directory on the same file system as `image` (removed by the caller). */
  workDir: string;
  image: string;
  /** What the stream is, for error messages ("the export of image X"). */
  what: string;
  /** Exact final size; otherwise the content's minimum plus `freeBytes`. */
  sizeBytes?: number;
  freeBytes?: number;
  journal?: boolean;
  log: Logger;
}

export interface ConvertResult {
  stats: TarStats;
  /** Bytes the extracted tree occupied on disk. */
  contentAllocated: number;
  /** Apparent size of the final image and the bytes it allocates (sparse). */
  imageBytes: number;
  imageAllocated: number;
  minBytes: number;
  timings: { extractMs: number; mkfsMs: number; shrinkMs: number; checkMs: number };
}

export const DEFAULT_FREE_BYTES = 256 * 1024 * 1024;

/**
 * A root file system tar stream (a `docker export`, a flattened image) into an ext4 image, without
 * mounting anything: the stream is checked entry by entry (TarGuard) while GNU tar extracts it into a
 * scratch tree keeping owners, modes, setuid bits, hard links, device nodes and xattrs; `mkfs.ext4 -d`
 * makes the image from the tree; `resize2fs -M` shrinks it and the requested free space is added back;
 * `e2fsck -fn` checks it. The image file stays sparse.
 */
export async function convertTarStream(source: Readable, o: ConvertOptions): Promise<ConvertResult> {
  if (process.getuid?.() !== 0) {
    throw new UserError('converting a root file system keeps file owners, device nodes and capabilities, which needs root: run firebuild as root (or with sudo)');
  }
  const tree = path.join(o.workDir, 'tree');
  await fsp.mkdir(tree, { recursive: true, mode: 0o755 });
  const t0 = Date.now();
  const stats = await extractTarStream(source, tree, o.what);
  const extractMs = Date.now() - t0;
  const contentAllocated = await allocatedBytes(tree);

  const tools = new Ext4Tools(o.log);
  // Room to populate: the content, inode tables for every entry, and slack; shrunk afterwards.
  const inodes = stats.entries + 1024;
  const initial = Math.ceil(contentAllocated * 1.25) + inodes * 256 + 64 * 1024 * 1024;
  const t1 = Date.now();
  await tools.mkfs({ root: tree, image: o.image, sizeBytes: initial, inodes, journal: o.journal ?? false });
  const mkfsMs = Date.now() - t1;
  await fsp.rm(tree, { recursive: true, force: true });
  const t2 = Date.now();
  const { minBytes, finalBytes } = await tools.shrink(o.image, {
    freeBytes: o.freeBytes ?? DEFAULT_FREE_BYTES,
    ...(o.sizeBytes !== undefined ? { sizeBytes: o.sizeBytes } : {}),
  });
  const shrinkMs = Date.now() - t2;
  const t3 = Date.now();
  await tools.check(o.image);
  const checkMs = Date.now() - t3;
  const st = await fsp.stat(o.image);
  o.log.debug('converted', { entries: stats.entries, contentAllocated, minBytes, finalBytes, allocated: st.blocks * 512 });
  return { stats, contentAllocated, imageBytes: st.size, imageAllocated: st.blocks * 512, minBytes, timings: { extractMs, mkfsMs, shrinkMs, checkMs } };
}

/** Tee the stream into the guard and into GNU tar (owners, modes, hard links, devices, xattrs kept); the first problem stops both. */
export function extractTarStream(source: Readable, dir: string, what: string): Promise<TarStats> {
  const guard = new TarGuard(what);
  const tar = spawn('tar', [
    '--extract', '--file=-', `--directory=${dir}`,
    '--numeric-owner', '--same-owner', '--preserve-permissions',
    '--xattrs', '--xattrs-include=*',
    '--delay-directory-restore',
  ], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  tar.stderr.on('data', (d) => (stderr += d));
  return new Promise<TarStats>((resolve, reject) => {
    let failed: Error | undefined;
    const fail = (err: Error): void => {
      if (failed) return;
      failed = err;
      source.destroy();
      tar.kill('SIGKILL');
    };
    guard.parser.on('guard-error', (err: Error) => fail(err));
    guard.parser.on('error', (err: Error) => fail(new UserError(`${what} is not a valid tar stream (${err.message})`)));
    source.on('error', (err) => fail(err instanceof UserError ? err : new InternalError(`reading ${what} failed`, { cause: err })));
    tar.stdin.on('error', () => undefined); // EPIPE after a kill; the exit tells why
    tar.on('error', (err) => fail(new InternalError('cannot run tar', { cause: err })));
    source.on('data', (chunk: Buffer) => {
      guard.parser.write(chunk);
      if (!tar.stdin.write(chunk)) {
        source.pause();
        tar.stdin.once('drain', () => source.resume());
      }
    });
    source.on('end', () => {
      guard.parser.end();
      tar.stdin.end();
    });
    tar.on('close', (code) => {
      if (failed) return reject(failed);
      if (guard.error) return reject(guard.error);
      if (code !== 0) {
        if (/No space left on device/i.test(stderr)) {
          return reject(new UserError(`out of disk space extracting ${what} into ${dir}: free some space or point the store (rootfs-storage-root) at a larger file system`));
        }
        return reject(new InternalError(`tar could not extract ${what} (exit ${code}): ${tailLines(stderr, 3)}`));
      }
      resolve(guard.stats);
    });
  });
}

/** Bytes allocated by everything under `dir` (hard links counted once). */
async function allocatedBytes(dir: string): Promise<number> {
  let total = 0;
  const seen = new Set<string>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const st = await fsp.lstat(p, { bigint: false });
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) continue;
      seen.add(key);
      total += st.blocks * 512;
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return total;
}
