import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type Docker from 'dockerode';
import { DockerEngine } from '../docker-engine.js';
import { fromDockerConfig } from '../../oci/image-config.js';
import { registryImageToExt4, resolveRegistryImage, type RegistryImage } from '../../oci/image-pull.js';
import { parseRef } from '../../oci/registry.js';
import { convertTarStream } from '../../rootfs/convert.js';
import { Ext4Tools } from '../../rootfs/ext4.js';
import type { ImageConfig } from '../../store/metadata.js';
import type { StorageProvider, StoredImage } from '../../store/provider.js';
import { formatTag, parseTag } from '../../store/tag.js';
import { UserError } from '../../util/errors.js';
import { copySparse } from '../../util/fs.js';
import type { Logger } from '../../util/logger.js';
import { roomForCopy } from './disk.js';
import { sha } from './keys.js';

/**
 * The vm engine's bases: the image a FROM or a `COPY --from=<image>` names, found (a stored firebuild
 * image, the local Docker engine's, or a registry's) and made into an ext4 file in the build's work
 * directory. Nothing of a base runs here.
 */

/** Where an image's file system comes from: a stored firebuild image, the local Docker engine, or a registry. */
export type ImageSource = { kind: 'file'; file: string } | { kind: 'docker'; ref: string; id: string } | { kind: 'registry'; image: RegistryImage };

export interface ResolvedImage {
  source: ImageSource;
  /** What the step keys chain from: the content's digest. */
  key: string;
  config: ImageConfig;
  /** The parent recorded in metadata. */
  parent: string;
}

/**
 * Finds an image by reference, once per reference: a stored firebuild image, else the local Docker
 * engine's image (when an engine answers), else, for a reference that names a registry host, the
 * registry's (only its manifest and config are fetched here).
 */
export class ImageResolver {
  private readonly seen = new Map<string, Promise<ResolvedImage | undefined>>();
  constructor(private readonly storage: StorageProvider, private readonly log: Logger) {}

  resolve(ref: string): Promise<ResolvedImage | undefined> {
    let r = this.seen.get(ref);
    if (!r) {
      r = this.find(ref);
      this.seen.set(ref, r);
    }
    return r;
  }

  /** The image, or a UserError at `where` that starts with `what` (e.g. `base `) and says where it was looked for. */
  async need(ref: string, what: string, where: { file: string; line: number }): Promise<ResolvedImage> {
    const r = await this.resolve(ref);
    if (!r) throw new UserError(`${what}${notFound(ref)}`, where);
    return r;
  }

  private async find(ref: string): Promise<ResolvedImage | undefined> {
    const img = await findBase(this.storage, ref);
    if (img) return { source: { kind: 'file', file: img.rootfsPath }, key: sha('image', img.metadata.rootfs.sha256), config: img.metadata.config, parent: img.tag };
    const d = await dockerBase(ref, this.log);
    if (d) return { source: { kind: 'docker', ref, id: d.Id }, key: sha('docker', d.Id), config: fromDockerConfig(d.Config as never), parent: ref };
    const reg = await registryBase(ref, this.log);
    if (reg) return { source: { kind: 'registry', image: reg }, key: sha('registry', reg.digest), config: reg.config, parent: `${ref}@${reg.digest}` };
    return undefined;
  }
}

function notFound(ref: string): string {
  return `image ${ref} not found: not a stored firebuild image (firebuild image ls; build one with firebuild baseos or firebuild image pull one), not in the local Docker engine, and not pullable from a registry (name one: registry-host/repository:tag)`;
}

/** An image's file system as an ext4 file at `dest` (stored images are copied; nothing of the image runs). */
export async function materialize(src: ImageSource, dest: string, scratch: string, log: Logger): Promise<void> {
  if (src.kind === 'file') {
    await roomForCopy(src.file, dest, `the build's copy of ${src.file}`);
    return copySparse(src.file, dest);
  }
  await fsp.mkdir(scratch);
  try {
    if (src.kind === 'registry') {
      await registryImageToExt4(src.image, scratch, dest, log);
      return;
    }
    // A base only the local Docker engine has: its export, converted.
    const exp = await new DockerEngine(log.child('docker')).exportImage(src.id);
    const [conv, done] = await Promise.allSettled([convertTarStream(exp.stream, { image: dest, what: `the export of ${src.ref}`, freeBytes: 0, log }), exp.done()]);
    if (done.status === 'rejected') throw done.reason;
    if (conv.status === 'rejected') throw conv.reason;
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

/** `COPY --from=<image>`: the image's file system, read in place when stored, else made once per build in the work directory. */
export async function external(ref: string, images: ImageResolver, work: string, made: Map<string, string>, log: Logger, where: { file: string; line: number }): Promise<string> {
  const r = await images.need(ref, `COPY --from=${ref}: `, where);
  if (r.source.kind === 'file') return r.source.file;
  let file = made.get(ref);
  if (!file) {
    file = path.join(work, `external-${made.size}.ext4`);
    await materialize(r.source, file, path.join(work, `external-${made.size}`), log);
    made.set(ref, file);
  }
  return file;
}

/** FROM scratch: an empty file system (only lost+found, which no tree comparison counts). */
export async function emptyImage(image: string, scratch: string, log: Logger): Promise<void> {
  await fsp.mkdir(scratch);
  try {
    await new Ext4Tools(log).mkfs({ root: scratch, image, sizeBytes: 64 * 1024 ** 2 });
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

/** An image in an OCI registry, for references that name a registry host (nothing is downloaded but its manifest and config). */
async function registryBase(ref: string, log: Logger): Promise<RegistryImage | undefined> {
  let parsed = true;
  try {
    parseRef(ref);
  } catch {
    parsed = false;
  }
  if (!parsed) return undefined;
  try {
    return await resolveRegistryImage(ref);
  } catch (err) {
    log.debug('registry base unavailable', { ref, reason: (err as Error).message });
    return undefined;
  }
}

/** The local Docker engine's image, when an engine answers and has it (nothing is pulled: the registry path is for OCI clients). */
async function dockerBase(ref: string, log: Logger): Promise<Docker.ImageInspectInfo | undefined> {
  try {
    const engine = new DockerEngine(log.child('docker'));
    await engine.ensureReachable();
    return await engine.imageInspect(ref);
  } catch {
    return undefined;
  }
}

/** The stored image `ref` names, if it is a firebuild tag with an entry; a corrupt entry is an error saying so, not "not found". */
async function findBase(storage: StorageProvider, ref: string): Promise<StoredImage | undefined> {
  let t: string;
  try {
    t = formatTag(parseTag(ref));
  } catch {
    return undefined; // not a firebuild tag: a Docker or registry reference
  }
  return (await storage.hasImage(t)) ? storage.getImage(t) : undefined;
}
