import type { PushResult, RegistryOptions } from '../oci/artifact.js';
import type { PublishOptions } from './supply.js';
import type { StorageProvider, ImageListEntry, StoredImage } from '../store/provider.js';
import { formatTag, type Tag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
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

/** The faces parse the tag (store/tag.ts); the store takes its canonical text. */
export async function imageInspect(store: StorageProvider, tag: Tag): Promise<StoredImage> {
  return store.getImage(formatTag(tag));
}

export async function imageRemove(store: StorageProvider, tag: Tag, log: Logger): Promise<void> {
  const t = formatTag(tag);
  await store.removeImage(t);
  log.info('image removed', { tag: t });
}

/**
 * `image push` (and the publish action's oci target): a stored image to an OCI registry as a firebuild
 * artifact, with the org.opencontainers.image.* annotations (commands/supply.ts), the metadata as
 * published (no build args unless asked) and, unless `sbom` is false, its SBOM attached as a referrer
 * (`sbom` may be one already made).
 */
export async function imagePush(store: StorageProvider, tag: Tag, ref: string, registry: RegistryOptions, o: PublishOptions & { sbom: boolean | Buffer }, log: Logger): Promise<PushResult> {
  // OCI (and zstd) load only for a push: `image ls` stays light (bench/cli-start.mjs).
  const { pushImage } = await import('../oci/artifact.js');
  const { makeSbom, publishAnnotations } = await import('./supply.js');
  const image = await store.getImage(formatTag(tag));
  const annotations = publishAnnotations(image, o);
  const sbom = o.sbom === true ? (await makeSbom(image, log)).bytes : o.sbom === false ? undefined : o.sbom;
  return pushImage(store, image.tag, ref, { ...registry, annotations, includeBuildArgs: o.includeBuildArgs, ...(sbom ? { sbom } : {}) }, log);
}

/** `image sbom`: the SPDX 2.3 JSON SBOM of a stored image's rootfs (read in-process from the ext4 image). */
export async function imageSbom(store: StorageProvider, tag: Tag, log: Logger): Promise<Buffer> {
  const { makeSbom } = await import('./supply.js');
  return (await makeSbom(await store.getImage(formatTag(tag)), log)).bytes;
}

/** `image pull`: a firebuild artifact into the store, under `tag` or the tag it was pushed from; every digest checked. */
export async function imagePull(store: StorageProvider, ref: string, o: RegistryOptions & { tag?: Tag; overwrite: boolean }, log: Logger): Promise<StoredImage> {
  const { pullImage } = await import('../oci/artifact.js');
  const { tag, ...rest } = o;
  return pullImage(store, ref, { ...rest, ...(tag ? { tag: formatTag(tag) } : {}) }, log);
}

/**
 * A tag glob (`pr/*`, `pr/app:*`): `*` any run of characters (`/` and `:` included), `?` one. A glob
 * without `:` names repositories, so `pr/*` matches every version of every `pr/` image.
 */
export function tagGlob(glob: string): RegExp {
  if (!/^[A-Za-z0-9_.\-/:*?]+$/.test(glob)) throw new UserError(`malformed --match '${glob}': use tag characters and * or ?, e.g. 'pr/*'`);
  const body = glob.replace(/[.]/g, '\\.').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}${glob.includes(':') ? '' : '(:.*)?'}$`);
}

/**
 * `image prune --match GLOB --keep N`: of the images whose tag matches, keep the `keep` newest (metadata
 * `created`) of each repository (org/name) and remove the rest; returns the removed tags. Per repository,
 * so a retention of per-PR images (`pr/app:<pr>-<attempt>`) does not let one app's PRs evict another's.
 * Unreadable images are left alone (`image ls` marks them; `image rm` removes one).
 */
export async function imagePrune(store: StorageProvider, o: { match: RegExp; keep: number; dryRun?: boolean }, log: Logger): Promise<string[]> {
  const byRepo = new Map<string, ImageListEntry[]>();
  for (const e of await store.listImages()) {
    if (!o.match.test(e.tag) || e.error || !e.metadata) continue;
    const repo = e.tag.slice(0, e.tag.lastIndexOf(':'));
    byRepo.set(repo, [...(byRepo.get(repo) ?? []), e]);
  }
  const removed: string[] = [];
  for (const images of byRepo.values()) {
    // Newest first; equal times by tag, so the choice is the same on every run.
    images.sort((a, b) => (b.metadata?.created ?? '').localeCompare(a.metadata?.created ?? '') || a.tag.localeCompare(b.tag));
    for (const e of images.slice(o.keep)) {
      if (!o.dryRun) await store.removeImage(e.tag);
      log.info(o.dryRun ? 'would prune image' : 'image pruned', { tag: e.tag, created: e.metadata?.created });
      removed.push(e.tag);
    }
  }
  return removed.sort();
}

/**
 * The build actions' further `tags`: the same image stored again under `to` (its rootfs copied sparsely,
 * its metadata the same but for the tag), as `docker tag` gives an image a second name.
 */
export async function imageTag(store: StorageProvider, from: Tag, to: Tag, opts: { overwrite?: boolean } = {}): Promise<StoredImage> {
  const src = await store.getImage(formatTag(from));
  const { copySparse } = await import('../util/fs.js');
  return store.writeImage(formatTag(to), async (staging) => {
    await copySparse(src.rootfsPath, staging.rootfsPath);
    const { schemaVersion: _v, tag: _t, rootfs, ...rest } = src.metadata;
    return { ...rest, ...(rootfs.contentSize !== undefined ? { contentSize: rootfs.contentSize } : {}) };
  }, { overwrite: opts.overwrite ?? false });
}
