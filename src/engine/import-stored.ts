import { Readable } from 'node:stream';
import { Ext4Image } from '../rootfs/ext4-read.js';
import { imageTar } from '../rootfs/tar-write.js';
import type { StoredImage } from '../store/provider.js';
import type { Logger } from '../util/logger.js';
import type { DockerEngine } from './docker-engine.js';

export const STORED_SHA_LABEL = 'org.firebuild.rootfs-sha256';

/**
 * `FROM org/name:version` naming a stored firebuild image: make the engine hold that image under the
 * same name (imported from the ext4 file, with its config), unless it already holds this very version.
 * The ext4 file is read in-process (Ext4Image) and streamed to `docker import` as a tar: no host tree.
 */
export async function importStoredImage(engine: DockerEngine, img: StoredImage, ref: string, log: Logger): Promise<void> {
  const have = await engine.imageInspect(ref);
  if (have?.Config?.Labels?.[STORED_SHA_LABEL] === img.metadata.rootfs.sha256) return;
  log.info('importing a stored image into the Docker engine as a base', { tag: img.tag });
  // The tree is read in-process and streamed as a tar: nothing of the image lands on the host.
  const image = await Ext4Image.open(img.rootfsPath, img.tag);
  try {
    const tar = Readable.from(imageTar(image));
    let readError: unknown;
    tar.on('error', (err) => (readError = err));
    // A read error (a broken image) cuts the upload short, which fails the import: the reader's own one line is the error.
    await engine.importTar(tar, ref, importChanges(img)).catch((err: unknown) => {
      throw readError ?? err;
    });
    if (readError) throw readError;
  } finally {
    await image.close();
  }
}

/** The image config as `docker import --change` instructions. */
export function importChanges(img: StoredImage): string[] {
  const c = img.metadata.config;
  const out: string[] = [];
  for (const e of c.env) out.push(`ENV ${e.slice(0, e.indexOf('='))}=${JSON.stringify(e.slice(e.indexOf('=') + 1))}`);
  if (c.entrypoint) out.push(`ENTRYPOINT ${JSON.stringify(c.entrypoint)}`);
  if (c.cmd) out.push(`CMD ${JSON.stringify(c.cmd)}`);
  if (c.workingDir) out.push(`WORKDIR ${c.workingDir}`);
  if (c.user) out.push(`USER ${c.user}`);
  for (const p of c.exposedPorts) out.push(`EXPOSE ${p}`);
  if (c.volumes.length) out.push(`VOLUME ${JSON.stringify(c.volumes)}`);
  if (c.stopSignal) out.push(`STOPSIGNAL ${c.stopSignal}`);
  for (const [k, v] of Object.entries(c.labels)) out.push(`LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`);
  out.push(`LABEL ${STORED_SHA_LABEL}=${img.metadata.rootfs.sha256}`);
  return out;
}
