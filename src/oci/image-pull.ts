import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fromDockerConfig } from './image-config.js';
import { withDecompressed } from '../rootfs/decompress.js';
import { Ext4Writer } from '../rootfs/ext4-writer.js';
import { applyTar, emptyStats, type TarStats } from '../rootfs/tar-apply.js';
import type { ImageConfig } from '../store/metadata.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { ownedTempDir } from '../util/private-dir.js';
import { dockerConfigCredentials, parseRef, RegistryClient, type OciRef } from './registry.js';

/**
 * A container image from an OCI registry as an ext4 file, for the vm engine's FROM: the manifest (from
 * an index or a Docker manifest list, linux/amd64), its config, and the layers applied in order into one
 * ext4 image written in userspace — whiteouts (`.wh.<name>`) delete what lower layers made, an opaque
 * marker (`.wh..wh..opq`) empties its directory of lower layers' entries. Every blob is checked against
 * its digest while it downloads; no layer is ever extracted on the host (an entry named
 * `../../tmp/x` is refused, naming the layer and the entry; a symlink is only ever data in the image).
 */
const INDEX_TYPES = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'];
const MANIFEST_TYPES = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];

interface Descriptor { mediaType: string; digest: string; size: number; platform?: { os?: string; architecture?: string } }

export interface RegistryImage { ref: string; digest: string; config: ImageConfig; layers: Descriptor[]; repository: string; client: RegistryClient }

/**
 * Resolve the reference to its linux/amd64 manifest (no layer downloaded yet). `at` asks another
 * registry for it (a mirror of docker.io, or docker.io's API host): that client's host also serves the layers.
 */
export async function resolveRegistryImage(refText: string, at?: { ref: OciRef; client: RegistryClient }): Promise<RegistryImage> {
  const ref = at?.ref ?? parseRef(refText);
  const client = at?.client ?? new RegistryClient(ref.registry, await dockerConfigCredentials(ref.registry));
  let m = await client.getManifest(ref.repository, ref.reference, [...INDEX_TYPES, ...MANIFEST_TYPES]);
  let doc = JSON.parse(m.body.toString('utf8')) as { mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
  if (INDEX_TYPES.includes(doc.mediaType ?? m.mediaType) || doc.manifests) {
    const pick = doc.manifests?.find((d) => d.platform?.os === 'linux' && d.platform?.architecture === 'amd64');
    if (!pick) throw new UserError(`${refText} has no linux/amd64 image`);
    m = await client.getManifest(ref.repository, pick.digest, MANIFEST_TYPES);
    doc = JSON.parse(m.body.toString('utf8'));
  }
  if (!doc.config || !doc.layers) throw new UserError(`${refText} is not a container image (no config or layers)`);
  const cfgDir = await ownedTempDir('firebuild-cfg-');
  const cfgFile = cfgDir.path;
  try {
    await client.getBlob(ref.repository, doc.config.digest, doc.config.size, path.join(cfgFile, 'c'));
    const cfg = JSON.parse(await fsp.readFile(path.join(cfgFile, 'c'), 'utf8')) as { config?: Record<string, unknown> };
    return { ref: refText, digest: m.digest, config: fromDockerConfig((cfg.config ?? {}) as never), layers: doc.layers, repository: ref.repository, client };
  } finally {
    await cfgDir.remove();
  }
}

/**
 * Download the layers and apply them, in order, straight into one ext4 image written in userspace:
 * each blob is checked against its digest as it downloads, decompressed in-process (gzip by zlib; zstd
 * through a `zstd -dc` filter process) and applied entry by entry (tar-apply.ts), whiteouts and opaque
 * directories as deletions inside the image. Nothing of a layer ever becomes a host file; each layer's
 * blob is removed once applied. `work` holds the blob being applied.
 */
export async function registryImageToExt4(img: RegistryImage, work: string, image: string, log: Logger): Promise<void> {
  const w = await Ext4Writer.create(image, { log });
  try {
    const stats = emptyStats();
    for (const [i, layer] of img.layers.entries()) {
      if (!/tar(\+gzip|\.gzip|\+zstd)?$|rootfs\.diff\.tar(\.gzip)?$/.test(layer.mediaType)) throw new UserError(`${img.ref}: layer ${i} has media type ${layer.mediaType}, which the vm engine does not unpack`);
      const file = path.join(work, `layer-${i}`);
      log.info('pulling layer', { ref: img.ref, layer: i, digest: layer.digest, size: layer.size });
      await img.client.getBlob(img.repository, layer.digest, layer.size, file);
      try {
        w.beginLayer();
        await applyLayer(w, file, `layer ${i} (${layer.digest}) of ${img.ref}`, stats);
      } finally {
        await fsp.rm(file, { force: true });
      }
    }
    const r = await w.finish({ freeBytes: 0 });
    log.debug('layers applied', { ref: img.ref, entries: stats.entries, used: r.usedBytes });
  } catch (err) {
    await w.abort().catch(() => undefined);
    throw err;
  }
}

/** One layer blob (tar, gzip or zstd: told by its first bytes, not by the manifest) into the writer. */
async function applyLayer(w: Ext4Writer, file: string, what: string, stats: TarStats): Promise<void> {
  await withDecompressed(file, what, (tar) => applyTar(w, tar, { what, layer: true, stats }));
}
