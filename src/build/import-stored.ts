import { spawn } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { unpackExt4 } from '../rootfs/unpack.js';
import type { StoredImage } from '../store/provider.js';
import type { Logger } from '../util/logger.js';
import type { DockerEngine } from './docker-engine.js';

export const STORED_SHA_LABEL = 'org.firebuild.rootfs-sha256';

/**
 * `FROM org/name:version` naming a stored firebuild image: make the engine hold that image under the
 * same name (imported from the ext4 file, with its config), unless it already holds this very version.
 */
export async function importStoredImage(engine: DockerEngine, img: StoredImage, ref: string, log: Logger): Promise<void> {
  const have = await engine.imageInspect(ref);
  if (have?.Config?.Labels?.[STORED_SHA_LABEL] === img.metadata.rootfs.sha256) return;
  log.info('importing a stored image into the Docker engine as a base', { tag: img.tag });
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'firebuild-import-'));
  try {
    await unpackExt4(img.rootfsPath, dir);
    await fsp.rm(path.join(dir, 'lost+found'), { recursive: true, force: true });
    const tar = spawn('tar', ['-c', '--numeric-owner', '-C', dir, '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await engine.importTar(tar.stdout as Readable, ref, importChanges(img));
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
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
