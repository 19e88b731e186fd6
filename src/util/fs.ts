import * as fs from 'node:fs';
import { constants } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError, errnoCode } from './errors.js';
import { exec } from './exec.js';

/** A file's mtime from a bigint stat, seconds (floored) and nanoseconds. */
export function mtimeOf(st: fs.BigIntStats): { sec: number; nsec: number } {
  const ns = st.mtimeNs;
  const sec = ns / 1_000_000_000n - (ns < 0n && ns % 1_000_000_000n !== 0n ? 1n : 0n);
  return { sec: Number(sec), nsec: Number(ns - sec * 1_000_000_000n) };
}

/**
 * Random hex for temp names. node:crypto (sixteen internal modules) loads with the first call, not with
 * every command that imports this module: listing a store needs none (bench/cli-start.mjs).
 */
export async function randomHex(bytes: number): Promise<string> {
  const { randomBytes } = await import('node:crypto');
  return randomBytes(bytes).toString('hex');
}

/** Write a file atomically: a temp file in the same directory, fsynced, renamed into place, directory fsynced. */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${await randomHex(4)}.tmp`);
  const fh = await fsp.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // umask must not widen or narrow what we asked for
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function fsyncFile(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return false;
    throw err;
  }
}

export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

/** A directory that must exist and be writable, else a UserError naming `what`. */
export async function requireWritableDir(dir: string, what: string): Promise<void> {
  let st;
  try {
    st = await fsp.stat(dir);
  } catch {
    throw new UserError(`${what} ${dir} does not exist: create it (mkdir -p ${dir}) or point ${what} elsewhere`);
  }
  if (!st.isDirectory()) throw new UserError(`${what} ${dir} is not a directory: point ${what} at a directory`);
  try {
    await fsp.access(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new UserError(`${what} ${dir} is not writable (${errnoCode(err) ?? 'denied'}): fix its permissions or point ${what} elsewhere`);
  }
}

/** Copy a file sparsely, by reflink where the file system supports it. */
export async function copyFileFast(src: string, dst: string): Promise<void> {
  await fsp.copyFile(src, dst, constants.COPYFILE_FICLONE);
}

/** A sparse copy of an image file with cp (holes stay holes; a reflink where the file system has them). */
export async function copySparse(src: string, dest: string): Promise<void> {
  await exec('cp', ['--sparse=always', '--reflink=auto', src, dest]);
}

/** Bytes allocated on disk for a file (st_blocks * 512) and its apparent size. */
export async function diskUsage(file: string): Promise<{ apparent: number; allocated: number }> {
  const st = await fsp.stat(file);
  return { apparent: st.size, allocated: st.blocks * 512 };
}

/** sha256 and size of a file, streamed. */
export async function fileDigest(file: string): Promise<{ sha256: string; size: number }> {
  const { createHash } = await import('node:crypto');
  const { createReadStream } = await import('node:fs');
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: h.digest('hex'), size };
}

export async function sha256File(file: string): Promise<string> {
  return (await fileDigest(file)).sha256;
}

/** The path itself or its nearest ancestor that exists (where a mkdir -p would start). */
export async function nearestExisting(p: string): Promise<string> {
  let probe = p;
  while (!(await fsp.stat(probe).then(() => true, () => false)) && path.dirname(probe) !== probe) probe = path.dirname(probe);
  return probe;
}

/** True when a process with this pid exists on this host and has not exited. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
  // Exited but never reaped (a zombie, kept for good where PID 1 reaps no orphans) runs nothing.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

/**
 * A digest of a sparse file's content that reads only its data: sha256 over (block number, block) for
 * every 4 KiB block that is not all zeros, found through the file's extents (`filefrag -e`). Holes and
 * zero blocks count alike, so two copies with the same content agree however their holes lie. Falls back
 * to reading every block where the file system reports no extents.
 */
export async function sparseDigest(file: string): Promise<string> {
  const { exec } = await import('./exec.js');
  const { createHash } = await import('node:crypto');
  const BLOCK = 4096;
  const size = (await fsp.stat(file)).size;
  const r = await exec('filefrag', ['-e', file], { allowFailure: true });
  const unit = Number(/blocks of (\d+) bytes/.exec(r.stdout)?.[1] ?? 0);
  let ranges: [number, number][] = [];
  if (r.code === 0 && unit > 0) {
    for (const m of r.stdout.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)) ranges.push([Number(m[1]) * unit, (Number(m[2]) + 1) * unit]);
  } else {
    ranges = [[0, size]];
  }
  const h = createHash('sha256');
  const zero = Buffer.alloc(BLOCK);
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    for (const [start, end0] of ranges) {
      const end = Math.min(end0, size);
      for (let off = start; off < end; off += buf.length) {
        const n = (await fh.read(buf, 0, Math.min(buf.length, end - off), off)).bytesRead;
        for (let i = 0; i < n; i += BLOCK) {
          const block = buf.subarray(i, Math.min(i + BLOCK, n));
          if (block.equals(zero.subarray(0, block.length))) continue;
          const idx = Buffer.alloc(8);
          idx.writeBigUInt64BE(BigInt((off + i) / BLOCK));
          h.update(idx).update(block);
        }
        if (n === 0) break;
      }
    }
  } finally {
    await fh.close();
  }
  h.update(`size:${size}`);
  return h.digest('hex');
}
