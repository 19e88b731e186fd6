import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { checkExt4Image } from '../rootfs/ext4-read.js';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';
import { sha256File } from '../util/fs.js';
import { ImageMetadataSchema, KernelMetadataSchema, describeZodError, type ImageMetadata } from './metadata.js';
import type { StorageProvider, StoredImage, StoredKernel } from './provider.js';
import { SBOM_FILE } from './sbom.js';
import { parseTag } from './tag.js';

/**
 * A stored image as release files: `rootfs.ext4.zst` (zstd), `metadata.json` and `SHA256SUMS` (the
 * `sha256sum -c` format, over the files and the uncompressed rootfs.ext4), in `outDir`; with `sbom`, also
 * `sbom.spdx.json`. `published`: the metadata as published (`publishedMetadata`); without it (caches of
 * this host's own images) the metadata is kept whole.
 */
export interface PackagedImage {
  dir: string;
  files: string[];
  sums: Record<string, string>;
}

export interface PackageOptions {
  published?: { includeBuildArgs: boolean };
  sbom?: Buffer;
}

/**
 * The metadata that leaves the host (a registry, a release, an Actions artifact): build args are values
 * a build was given (tokens, internal URLs), so they are left out unless asked, and with them the digests
 * computed over them (`planDigest`, `cacheKey`: a digest of a low-entropy value can be guessed back).
 */
export function publishedMetadata(m: ImageMetadata, o: { includeBuildArgs: boolean }): ImageMetadata {
  if (o.includeBuildArgs || !m.build) return m;
  const { buildArgs: _a, planDigest: _p, cacheKey: _k, ...build } = m.build;
  return { ...m, build };
}

export async function packageImage(storage: StorageProvider, tag: string, outDir: string, o: PackageOptions = {}): Promise<PackagedImage> {
  const image = await storage.getImage(tag);
  await fsp.mkdir(outDir, { recursive: true });
  const zst = path.join(outDir, 'rootfs.ext4.zst');
  await exec('zstd', ['-q', '-T0', '-3', '-f', '-o', zst, image.rootfsPath]);
  const meta = path.join(outDir, 'metadata.json');
  const metadata = o.published ? publishedMetadata(image.metadata, o.published) : image.metadata;
  const metaBytes = Buffer.from(JSON.stringify(metadata, null, 2) + '\n');
  await fsp.writeFile(meta, metaBytes);
  const sums: Record<string, string> = {
    'rootfs.ext4.zst': await sha256File(zst),
    'metadata.json': createHash('sha256').update(metaBytes).digest('hex'),
    'rootfs.ext4': image.metadata.rootfs.sha256,
  };
  const files = [zst, meta];
  if (o.sbom) {
    const sbom = path.join(outDir, SBOM_FILE);
    await fsp.writeFile(sbom, o.sbom);
    sums[SBOM_FILE] = createHash('sha256').update(o.sbom).digest('hex');
    files.push(sbom);
  }
  const sumsFile = path.join(outDir, 'SHA256SUMS');
  await fsp.writeFile(sumsFile, Object.entries(sums).map(([n, d]) => `${d}  ${n}\n`).join(''));
  return { dir: outDir, files: [...files, sumsFile], sums };
}

/**
 * Store an image from its compressed rootfs and parsed metadata (a pull, a cache restore): the rootfs
 * is decompressed into the store's staging area, must hash to the metadata's sha256 and pass
 * checkExt4Image (e2fsck -fn, names, sizes), else nothing lands under the tag.
 */
export async function storeCompressedImage(storage: StorageProvider, tag: string, zst: string, meta: ImageMetadata, source: ImageMetadata['source'], overwrite: boolean): Promise<StoredImage> {
  return storage.writeImage(tag, async (staging) => {
    await exec('zstd', ['-q', '-d', '-f', '-o', staging.rootfsPath, zst]);
    const got = await sha256File(staging.rootfsPath);
    if (got !== meta.rootfs.sha256) throw new UserError(`the rootfs of ${source.ref} has sha256 ${got}, its metadata says ${meta.rootfs.sha256}: refusing it`);
    // From outside: e2fsck -fn and the whole tree read (names, duplicates, loops, sizes) before it is stored.
    await checkExt4Image(staging.rootfsPath, source.ref);
    return {
      type: meta.type,
      source,
      parents: meta.parents,
      config: meta.config,
      // The build's cache key is a claim only this store's own builds may make: an image from outside
      // that carried one could stand in for a local build of the same tag ("unchanged rebuild").
      ...(meta.build ? { build: withoutCacheKey(meta.build) } : {}),
      created: meta.created,
      ...(meta.rootfs.contentSize !== undefined ? { contentSize: meta.rootfs.contentSize } : {}),
    };
  }, { overwrite });
}

function withoutCacheKey(build: NonNullable<ImageMetadata['build']>): NonNullable<ImageMetadata['build']> {
  const { cacheKey: _dropped, ...rest } = build;
  return rest;
}

/** The `sha256sum -c` lines of a SHA256SUMS file, as name → digest. */
function readSums(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line.trim());
    if (m) out[m[2] as string] = m[1] as string;
  }
  return out;
}

/** The reverse of packageImage: check SHA256SUMS over every file, then store the image under `tag` (default: its own). */
export async function importPackagedImage(storage: StorageProvider, dir: string, o: { tag?: string; overwrite?: boolean; sourceRef: string }): Promise<StoredImage> {
  const sumsText = await fsp.readFile(path.join(dir, 'SHA256SUMS'), 'utf8').catch(() => undefined);
  if (sumsText === undefined) throw new UserError(`${dir} holds no SHA256SUMS: not a packaged firebuild image`);
  const sums = readSums(sumsText);
  for (const f of ['metadata.json', 'rootfs.ext4.zst']) {
    const file = path.join(dir, f);
    const got = await sha256File(file).catch(() => undefined);
    if (!got || got !== sums[f]) throw new UserError(`${file} ${got ? `has sha256 ${got}, SHA256SUMS says ${sums[f] ?? 'nothing'}` : 'is missing'}: the package is corrupt`);
  }
  const parsed = ImageMetadataSchema.safeParse(JSON.parse(await fsp.readFile(path.join(dir, 'metadata.json'), 'utf8')));
  if (!parsed.success) throw new UserError(`${dir}/metadata.json is invalid: ${describeZodError(parsed.error)}`);
  const meta = parsed.data;
  if (sums['rootfs.ext4'] && sums['rootfs.ext4'] !== meta.rootfs.sha256) throw new UserError(`${dir}: SHA256SUMS and metadata.json disagree on rootfs.ext4: the package is corrupt`);
  const tag = o.tag ?? meta.tag;
  parseTag(tag);
  return storeCompressedImage(storage, tag, path.join(dir, 'rootfs.ext4.zst'), meta, { ...meta.source, ref: o.sourceRef }, o.overwrite ?? false);
}

/** A stored kernel as files (vmlinux, initrd, metadata.json), for caches. */
export async function packageKernel(storage: StorageProvider, id: string, outDir: string): Promise<void> {
  const k = await storage.getKernel(id);
  await fsp.mkdir(outDir, { recursive: true });
  await fsp.copyFile(k.vmlinuxPath, path.join(outDir, 'vmlinux'));
  if (k.initrdPath) await fsp.copyFile(k.initrdPath, path.join(outDir, 'initrd'));
  await fsp.writeFile(path.join(outDir, 'metadata.json'), JSON.stringify(k.metadata, null, 2) + '\n');
}

/** The reverse of packageKernel: every file must match the digests in its metadata. */
export async function importPackagedKernel(storage: StorageProvider, dir: string, id: string, overwrite: boolean): Promise<StoredKernel> {
  const text = await fsp.readFile(path.join(dir, 'metadata.json'), 'utf8').catch(() => undefined);
  const parsed = text === undefined ? undefined : KernelMetadataSchema.safeParse(JSON.parse(text));
  if (!parsed?.success) throw new UserError(`${dir} holds no valid kernel metadata.json: not a packaged kernel`);
  const meta = parsed.data;
  const files: [string, { sha256: string } | undefined][] = [['vmlinux', meta.vmlinux], ['initrd', meta.initrd]];
  for (const [f, want] of files) {
    if (!want) continue;
    const got = await sha256File(path.join(dir, f)).catch(() => undefined);
    if (got !== want.sha256) throw new UserError(`${path.join(dir, f)} ${got ? `has sha256 ${got}, its metadata says ${want.sha256}` : 'is missing'}: the package is corrupt`);
  }
  return storage.importKernel(id, path.join(dir, 'vmlinux'), {
    overwrite, source: meta.source, ...(meta.initrd ? { initrd: path.join(dir, 'initrd') } : {}), ...(meta.cmdline ? { cmdline: meta.cmdline } : {}),
  });
}
