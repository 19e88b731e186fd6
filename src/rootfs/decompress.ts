import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { spawnStream, type StreamChild } from '../util/exec.js';
import { InvalidArchive } from './tar-read.js';

/**
 * A possibly compressed archive (gzip, bzip2, xz, zstd: told by its first bytes, never by a name or a
 * media type) as one tar stream handed to `consume`. gzip is zlib in-process; the others go through
 * `bzip2|xz|zstd -dc FILE` as a stream filter only (the process reads the file and writes to firebuild).
 * A corrupt or truncated archive is one UserError, even when what came out parsed as tar.
 */
export type Compression = 'gzip' | 'bzip2' | 'xz' | 'zstd';

const XZ = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

export async function sniffCompression(file: string): Promise<Compression | undefined> {
  const head = Buffer.alloc(6);
  const fh = await fsp.open(file, 'r');
  try {
    await fh.read(head, 0, 6, 0);
  } finally {
    await fh.close();
  }
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.toString('latin1', 0, 3) === 'BZh') return 'bzip2';
  if (head.equals(XZ)) return 'xz';
  if (head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return undefined;
}

export async function withDecompressed<T>(file: string, what: string, consume: (tar: Readable) => Promise<T>): Promise<T> {
  const filter = await sniffCompression(file);
  if (filter === undefined || filter === 'gzip') {
    const input = fs.createReadStream(file);
    let source: Readable = input;
    let zerr: Error | undefined;
    if (filter === 'gzip') {
      const gunzip = zlib.createGunzip();
      input.on('error', (err) => gunzip.destroy(err));
      gunzip.on('error', (err) => (zerr ??= err));
      source = input.pipe(gunzip);
    }
    try {
      return await consume(source);
    } catch (err) {
      if (zerr) throw new InvalidArchive(`${what} is not a valid gzip archive: ${zerr.message}`);
      throw err;
    } finally {
      input.destroy();
      source.destroy();
    }
  }
  const child = spawnStream(filter, ['-dc', '--', file], { notFound: `it is needed to decompress ${what}: install it (scripts/install-deps.sh)` });
  const exited = exitOf(child, filter, what);
  let eof = false;
  child.stdout.on('end', () => (eof = true));
  let failed: { err: unknown } | undefined;
  let result: T | undefined;
  try {
    result = await consume(child.stdout);
  } catch (err) {
    failed = { err };
    // Stopped before the end (an unsafe entry, a bad header): the rest is not wanted.
    if (!eof) await child.kill();
  }
  const failure = await exited;
  // A truncated or corrupt archive shows as a bad tar stream too: when the filter's output ended, the
  // filter says why.
  if (failed) throw eof && failure ? failure : failed.err;
  if (failure) throw failure;
  return result as T;
}

/** How the filter process ended: undefined when it succeeded (or was stopped by us), else why. */
async function exitOf(child: StreamChild, filter: string, what: string): Promise<Error | undefined> {
  try {
    const r = await child.exit;
    return r.code === 0 || r.killed ? undefined : new InvalidArchive(`${what} is not a valid ${filter} archive: ${r.stderr.trim().split('\n').pop() || `exit ${r.signal ?? r.code}`}`);
  } catch (err) {
    return err as Error;
  }
}
