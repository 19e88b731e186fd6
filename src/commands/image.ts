import type { StorageProvider, ImageListEntry, StoredImage } from '../store/provider.js';
import { parseTag } from '../store/tag.js';
import type { Logger } from '../util/logger.js';

export interface ImageRow {
  tag: string;
  type: string;
  sizeOnDisk: number;
  apparentSize: number;
  created: string;
  parent: string;
  error?: string;
}

export function imageRow(e: ImageListEntry): ImageRow {
  const row: ImageRow = {
    tag: e.tag,
    type: e.metadata?.type ?? '?',
    sizeOnDisk: e.allocatedSize,
    apparentSize: e.apparentSize,
    created: e.metadata?.created ?? '',
    parent: e.metadata?.parents[0] ?? '',
  };
  if (e.error) row.error = e.error;
  return row;
}

/** `image ls`: every image, with the broken ones marked rather than failing the listing. */
export async function imageList(store: StorageProvider, log: Logger): Promise<ImageRow[]> {
  const rows = (await store.listImages()).map(imageRow);
  for (const r of rows) if (r.error) log.warn(`image ${r.tag} is unreadable`, { reason: r.error });
  return rows;
}

export async function imageInspect(store: StorageProvider, tag: string): Promise<StoredImage> {
  parseTag(tag);
  return store.getImage(tag);
}

export async function imageRemove(store: StorageProvider, tag: string, log: Logger): Promise<void> {
  parseTag(tag);
  await store.removeImage(tag);
  log.info('image removed', { tag });
}
