import * as fsp from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Logger } from '../util/logger.js';
import { Ext4Writer } from './ext4-writer.js';
import { applyTar, type TarStats } from './tar-apply.js';

export interface ConvertOptions {
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
  /** Apparent size of the final image and the bytes it allocates (sparse). */
  imageBytes: number;
  imageAllocated: number;
  /** Bytes the content needs (the image without the requested free space). */
  minBytes: number;
  timings: { writeMs: number; finishMs: number };
}

export const DEFAULT_FREE_BYTES = 256 * 1024 * 1024;

/**
 * A root file system tar stream (a `docker export`, a flattened image) into an ext4 image, entirely in
 * userspace: each entry is read from the stream (readTar) and written into the image (Ext4Writer) with
 * its owner, mode (setuid bits included), times, xattrs, hard links and device numbers. Nothing is
 * extracted on the host and nothing needs root. The image file stays sparse; on any failure it is
 * removed.
 */
export async function convertTarStream(source: Readable, o: ConvertOptions): Promise<ConvertResult> {
  const w = await Ext4Writer.create(o.image, { log: o.log });
  try {
    const t0 = Date.now();
    const stats = await applyTar(w, source, { what: o.what, layer: false });
    const t1 = Date.now();
    const freeBytes = o.sizeBytes === undefined ? (o.freeBytes ?? DEFAULT_FREE_BYTES) : 0;
    const r = await w.finish({ freeBytes, ...(o.sizeBytes !== undefined ? { sizeBytes: o.sizeBytes } : {}), journal: o.journal ?? false });
    const finishMs = Date.now() - t1;
    const st = await fsp.stat(o.image);
    o.log.debug('converted', { entries: stats.entries, used: r.usedBytes, imageBytes: r.imageBytes, allocated: st.blocks * 512 });
    return { stats, imageBytes: st.size, imageAllocated: st.blocks * 512, minBytes: r.usedBytes, timings: { writeMs: t1 - t0, finishMs } };
  } catch (err) {
    source.destroy();
    await w.abort().catch(() => undefined);
    throw err;
  }
}
