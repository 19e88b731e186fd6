import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { ImageMetadataSchema, describeZodError, type ImageMetadata } from '../store/metadata.js';
import type { StorageProvider, StoredImage } from '../store/provider.js';
import { parseTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import { ownedTempDir } from '../util/private-dir.js';
import { packageImage, storeCompressedImage } from '../store/package.js';
import type { Logger } from '../util/logger.js';
import { RegistryClient, dockerConfigCredentials, parseRef, type Credentials } from './registry.js';

/**
 * firebuild images as OCI artifacts: an OCI image manifest with firebuild's artifactType, the empty
 * config, and two layers: the rootfs compressed with zstd and the image's metadata.json. Annotations
 * carry the tag, the source and the uncompressed rootfs digest. `image push` and `image pull` (and the
 * publish action) use them; a pull verifies every digest before anything lands in the store.
 */
export const ARTIFACT_TYPE = 'application/vnd.firebuild.rootfs.v1';
export const ROOTFS_MEDIA_TYPE = 'application/vnd.firebuild.rootfs.ext4.v1+zstd';
export const METADATA_MEDIA_TYPE = 'application/vnd.firebuild.metadata.v1+json';
export const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
const EMPTY = { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2, data: 'e30=' };
export const ANNOTATION_TAG = 'dev.firebuild.tag';
export const ANNOTATION_ROOTFS_SHA256 = 'dev.firebuild.rootfs.sha256';

export interface RegistryOptions { credentials?: Credentials; insecure?: boolean }

async function client(registry: string, o: RegistryOptions): Promise<RegistryClient> {
  return new RegistryClient(registry, o.credentials ?? (await dockerConfigCredentials(registry)), o.insecure ?? false);
}

export interface PushResult { ref: string; digest: string; rootfsSha256: string; compressedSize: number }

export async function pushImage(storage: StorageProvider, tag: string, refText: string, o: RegistryOptions, log: Logger): Promise<PushResult> {
  const ref = parseRef(refText);
  const image = await storage.getImage(tag);
  const reg = await client(ref.registry, o);
  const tmpDir = await ownedTempDir('firebuild-push-');
  const tmp = tmpDir.path;
  try {
    log.info('compressing the rootfs', { tag, size: image.metadata.rootfs.apparentSize });
    // The same files a release gets (store/package.ts): rootfs.ext4.zst and metadata.json, with their digests.
    const pkg = await packageImage(storage, tag, tmp);
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
      annotations: {
        [ANNOTATION_TAG]: image.tag,
        'org.opencontainers.image.source': image.metadata.source.ref,
        'org.opencontainers.image.created': image.metadata.created,
      },
    };
    log.info('pushing', { ref: refText, rootfs: rootfs.digest, size: rootfs.size });
    await reg.pushBlob(ref.repository, { data: Buffer.from('{}') }, EMPTY.digest, EMPTY.size);
    await reg.pushBlob(ref.repository, { file: zst }, rootfs.digest, rootfs.size);
    await reg.pushBlob(ref.repository, { data: metaBytes }, meta.digest, meta.size);
    const digest = await reg.putManifest(ref.repository, ref.reference, Buffer.from(JSON.stringify(manifest)), MANIFEST_MEDIA_TYPE);
    log.info('pushed', { ref: refText, digest });
    return { ref: refText, digest, rootfsSha256: image.metadata.rootfs.sha256, compressedSize: rootfs.size };
  } finally {
    await tmpDir.remove();
  }
}

interface Descriptor { mediaType: string; digest: string; size: number; annotations?: Record<string, string> }

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
