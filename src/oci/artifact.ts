import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { ImageMetadataSchema, describeZodError, type ImageMetadata } from '../store/metadata.js';
import type { StorageProvider, StoredImage } from '../store/provider.js';
import { parseTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import { ownedTempDir } from '../util/private-dir.js';
import { packageImage, storeCompressedImage } from '../store/package.js';
import { SBOM_FILE, SPDX_MEDIA_TYPE } from '../store/sbom.js';
import type { Logger } from '../util/logger.js';
import { EMPTY, MANIFEST_MEDIA_TYPE, pushReferrer, referrersTag, type Descriptor, type Referrer } from './referrers.js';
import { RegistryClient, dockerConfigCredentials, parseRef, type Credentials } from './registry.js';

/**
 * firebuild images as OCI artifacts: an OCI image manifest with firebuild's artifactType, the empty
 * config, and two layers: the rootfs compressed with zstd and the image's metadata.json (as published:
 * without build args unless asked, store/package.ts). Annotations carry the tag, the uncompressed rootfs
 * digest and the org.opencontainers.image.* ones the caller gives (commands/publish.ts); the image's SBOM
 * is attached as an OCI referrer (oci/referrers.ts). `image push` and `image pull` (and the publish
 * action) use them; a pull verifies every digest before anything lands in the store.
 */
export const ARTIFACT_TYPE = 'application/vnd.firebuild.rootfs.v1';
export const ROOTFS_MEDIA_TYPE = 'application/vnd.firebuild.rootfs.ext4.v1+zstd';
export const METADATA_MEDIA_TYPE = 'application/vnd.firebuild.metadata.v1+json';
export { MANIFEST_MEDIA_TYPE };
export const ANNOTATION_TAG = 'dev.firebuild.tag';
export const ANNOTATION_ROOTFS_SHA256 = 'dev.firebuild.rootfs.sha256';

export interface RegistryOptions { credentials?: Credentials; insecure?: boolean }

async function client(registry: string, o: RegistryOptions): Promise<RegistryClient> {
  return new RegistryClient(registry, o.credentials ?? (await dockerConfigCredentials(registry)), o.insecure ?? false);
}

/** What a push publishes beyond the image itself. */
export interface PublishContent {
  /** Manifest annotations beside dev.firebuild.tag (org.opencontainers.image.*: commands/publish.ts). */
  annotations?: Record<string, string>;
  /** Keep the build args in the published metadata.json (store/package.ts `publishedMetadata`). */
  includeBuildArgs?: boolean;
  /** The image's SPDX SBOM, attached to the manifest as a referrer. */
  sbom?: Buffer;
}

export interface PushResult {
  ref: string;
  digest: string;
  rootfsSha256: string;
  compressedSize: number;
  /** The pushed manifest, as a referrer's subject names it. */
  manifest: Descriptor;
  /** The SBOM referrer's manifest. */
  sbom?: Descriptor;
}

export async function pushImage(storage: StorageProvider, tag: string, refText: string, o: RegistryOptions & PublishContent, log: Logger): Promise<PushResult> {
  const ref = parseRef(refText);
  const image = await storage.getImage(tag);
  const reg = await client(ref.registry, o);
  const tmpDir = await ownedTempDir('firebuild-push-');
  const tmp = tmpDir.path;
  try {
    log.info('compressing the rootfs', { tag, size: image.metadata.rootfs.apparentSize });
    // The same files a release gets (store/package.ts): rootfs.ext4.zst and metadata.json, with their digests.
    const pkg = await packageImage(storage, tag, tmp, { published: { includeBuildArgs: o.includeBuildArgs ?? false } });
    const zst = path.join(tmp, 'rootfs.ext4.zst');
    const metaFile = path.join(tmp, 'metadata.json');
    const rootfs = { digest: `sha256:${pkg.sums['rootfs.ext4.zst']}`, size: (await fsp.stat(zst)).size };
    const metaBytes = await fsp.readFile(metaFile);
    const meta = { digest: `sha256:${pkg.sums['metadata.json']}`, size: metaBytes.length };
    const manifest = {
      schemaVersion: 2,
      mediaType: MANIFEST_MEDIA_TYPE,
      artifactType: ARTIFACT_TYPE,
      config: EMPTY,
      layers: [
        { mediaType: ROOTFS_MEDIA_TYPE, ...rootfs, annotations: { 'org.opencontainers.image.title': 'rootfs.ext4.zst', [ANNOTATION_ROOTFS_SHA256]: image.metadata.rootfs.sha256 } },
        { mediaType: METADATA_MEDIA_TYPE, ...meta, annotations: { 'org.opencontainers.image.title': 'metadata.json' } },
      ],
      annotations: { ...o.annotations, [ANNOTATION_TAG]: image.tag },
    };
    log.info('pushing', { ref: refText, rootfs: rootfs.digest, size: rootfs.size });
    await reg.pushBlob(ref.repository, { data: Buffer.from('{}') }, EMPTY.digest, EMPTY.size);
    await reg.pushBlob(ref.repository, { file: zst }, rootfs.digest, rootfs.size);
    await reg.pushBlob(ref.repository, { data: metaBytes }, meta.digest, meta.size);
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    const subject: Descriptor = { mediaType: MANIFEST_MEDIA_TYPE, digest: `sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`, size: manifestBytes.length };
    // By digest first, then its referrers, then the tag: a referrer the registry refuses leaves the tag where it was.
    let digest = await reg.putManifest(ref.repository, subject.digest, manifestBytes, MANIFEST_MEDIA_TYPE);
    let sbom: Descriptor | undefined;
    if (o.sbom) {
      const created = o.annotations?.['org.opencontainers.image.created'];
      const r = await pushReferrer(reg, ref.repository, subject, {
        artifactType: SPDX_MEDIA_TYPE, data: o.sbom,
        annotations: { 'org.opencontainers.image.title': SBOM_FILE, ...(created ? { 'org.opencontainers.image.created': created } : {}) },
      });
      sbom = r.descriptor;
      log.info('attached the SBOM', { digest: sbom.digest, via: r.fallback ? `referrers tag ${referrersTag(subject.digest)}` : 'referrers API' });
    }
    if (ref.reference !== subject.digest) digest = await reg.putManifest(ref.repository, ref.reference, manifestBytes, MANIFEST_MEDIA_TYPE);
    log.info('pushed', { ref: refText, digest });
    return { ref: refText, digest, rootfsSha256: image.metadata.rootfs.sha256, compressedSize: rootfs.size, manifest: subject, ...(sbom ? { sbom } : {}) };
  } finally {
    await tmpDir.remove();
  }
}

/** Attach an artifact (a provenance bundle) to a pushed manifest as a referrer, in the repository of `refText`. */
export async function attachReferrer(refText: string, subject: Descriptor, a: Referrer, o: RegistryOptions, log: Logger): Promise<Descriptor> {
  const ref = parseRef(refText);
  const reg = await client(ref.registry, o);
  const r = await pushReferrer(reg, ref.repository, subject, a);
  log.info('attached a referrer', { artifactType: a.artifactType, digest: r.descriptor.digest, subject: subject.digest, via: r.fallback ? 'referrers tag' : 'referrers API' });
  return r.descriptor;
}

/** Pull a firebuild artifact into the store under its tag (or `tag`); every digest is checked first. */
export async function pullImage(storage: StorageProvider, refText: string, o: RegistryOptions & { tag?: string; overwrite?: boolean }, log: Logger): Promise<StoredImage> {
  const ref = parseRef(refText);
  const reg = await client(ref.registry, o);
  const m = await reg.getManifest(ref.repository, ref.reference, [MANIFEST_MEDIA_TYPE]);
  let manifest: { artifactType?: string; layers?: Descriptor[]; annotations?: Record<string, string> };
  try {
    manifest = JSON.parse(m.body.toString('utf8'));
  } catch {
    throw new UserError(`${refText} has a manifest that is not JSON`);
  }
  if (manifest.artifactType !== ARTIFACT_TYPE) throw new UserError(`${refText} is not a firebuild image (artifactType ${manifest.artifactType ?? 'none'}, expected ${ARTIFACT_TYPE})`);
  const rootfsLayer = manifest.layers?.find((l) => l.mediaType === ROOTFS_MEDIA_TYPE);
  const metaLayer = manifest.layers?.find((l) => l.mediaType === METADATA_MEDIA_TYPE);
  if (!rootfsLayer || !metaLayer) throw new UserError(`${refText} lacks its rootfs or metadata layer`);
  const tag = o.tag ?? manifest.annotations?.[ANNOTATION_TAG];
  if (!tag) throw new UserError(`${refText} names no firebuild tag: give one with --tag org/name:version`);
  parseTag(tag);
  if (!o.overwrite && (await storage.hasImage(tag))) throw new UserError(`image ${tag} already exists: pass --overwrite or choose another --tag`);
  const tmpDir = await ownedTempDir('firebuild-pull-');
  const tmp = tmpDir.path;
  try {
    const metaFile = path.join(tmp, 'metadata.json');
    await reg.getBlob(ref.repository, metaLayer.digest, metaLayer.size, metaFile);
    const parsed = ImageMetadataSchema.safeParse(JSON.parse(await fsp.readFile(metaFile, 'utf8')));
    if (!parsed.success) throw new UserError(`${refText} carries invalid metadata: ${describeZodError(parsed.error)}`);
    const meta: ImageMetadata = parsed.data;
    const zst = path.join(tmp, 'rootfs.ext4.zst');
    log.info('pulling', { ref: refText, rootfs: rootfsLayer.digest, size: rootfsLayer.size });
    await reg.getBlob(ref.repository, rootfsLayer.digest, rootfsLayer.size, zst);
    const stored = await storeCompressedImage(storage, tag, zst, meta, { kind: 'registry', ref: `${refText}@${m.digest}` }, o.overwrite ?? false);
    log.info('pulled', { ref: refText, tag, sha256: stored.metadata.rootfs.sha256 });
    return stored;
  } finally {
    await tmpDir.remove();
  }
}
