import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type Docker from 'dockerode';
import { DockerEngine } from '../docker-engine.js';
import { fromDockerConfig } from '../../oci/image-config.js';
import { registryImageToExt4, type RegistryImage } from '../../oci/image-pull.js';
import { pullFromRegistries } from '../../oci/pull-sources.js';
import { DOCKER_HUB, normalizeRef, type NormalizedRef } from '../../oci/reference.js';
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

/** What ImageResolver found for a reference: the image, or every place asked and what it answered. */
interface Found { image?: ResolvedImage; tried: string[] }

/**
 * Finds an image by reference, once per reference, as `docker build` would: a stored firebuild image,
 * else the local Docker engine's image (when an engine answers), else a registry's, the reference
 * normalized as Docker does (`alpine:3.20` is docker.io/library/alpine:3.20) and a docker.io image asked
 * of each registry mirror before docker.io itself (only its manifest and config are fetched here).
 */
export class ImageResolver {
  private readonly seen = new Map<string, Promise<Found>>();
  private readonly mirrors: readonly string[];
  private readonly env: NodeJS.ProcessEnv;
  /** --pull: skip the local Docker engine's copy, ask the registries (a stored firebuild image is still used). */
  private readonly pull: boolean;
  constructor(private readonly storage: StorageProvider, private readonly log: Logger, o: { registryMirrors?: readonly string[]; env?: NodeJS.ProcessEnv; pull?: boolean } = {}) {
    this.mirrors = o.registryMirrors ?? [];
    this.env = o.env ?? process.env;
    this.pull = o.pull ?? false;
  }

  async resolve(ref: string): Promise<ResolvedImage | undefined> {
    return (await this.lookup(ref)).image;
  }

  /** The image, or a UserError at `where` that starts with `what` (e.g. `base `) and names every place it was looked for. */
  async need(ref: string, what: string, where: { file: string; line: number }): Promise<ResolvedImage> {
    const r = await this.lookup(ref);
    if (!r.image) throw new UserError(`${what}image ${ref} not found. Tried: ${r.tried.join('; ')}`, where);
    return r.image;
  }

  private lookup(ref: string): Promise<Found> {
    let r = this.seen.get(ref);
    if (!r) {
      r = this.find(ref);
      this.seen.set(ref, r);
    }
    return r;
  }

  private async find(ref: string): Promise<Found> {
    const tried: string[] = [];
    const img = await findBase(this.storage, ref);
    if (img) return { image: { source: { kind: 'file', file: img.rootfsPath }, key: sha('image', img.metadata.rootfs.sha256), config: img.metadata.config, parent: img.tag }, tried };
    tried.push('stored firebuild images (firebuild image ls): none named so');
    const d = this.pull ? 'not asked (pull)' : await dockerBase(ref, this.log);
    if (typeof d !== 'string') return { image: { source: { kind: 'docker', ref, id: d.Id }, key: sha('docker', d.Id), config: fromDockerConfig(d.Config as never), parent: ref }, tried };
    tried.push(`the Docker engine: ${d}`);
    let norm: NormalizedRef;
    try {
      norm = normalizeRef(ref);
    } catch (err) {
      tried.push(`registries: ${(err as Error).message}`);
      return { tried };
    }
    const { image: reg, tried: places } = await pullFromRegistries(norm, this.mirrors, this.env);
    for (const p of places) {
      this.log.debug('registry base unavailable', { ref: norm.full, place: p.place, reason: p.reason });
      tried.push(`${norm.full} at ${p.place}: ${p.reason}`);
    }
    if (reg) {
      if (places.length > 0) this.log.info('base found at a later registry', { ref: norm.full, passedOver: places.map((p) => p.place).join(', ') });
      return { image: { source: { kind: 'registry', image: reg }, key: sha('registry', reg.digest), config: reg.config, parent: norm.digest ? norm.full : `${norm.full}@${reg.digest}` }, tried };
    }
    if (norm.domain === DOCKER_HUB && this.mirrors.length === 0) tried.push("no registry mirror set (--registry-mirror, the profile's registry-mirrors or FIREBUILD_REGISTRY_MIRRORS)");
    return { tried };
  }
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

/** The local Docker engine's image, when an engine answers and has it, else why not (nothing is pulled through the engine). */
async function dockerBase(ref: string, log: Logger): Promise<Docker.ImageInspectInfo | 'not reachable' | 'no such image'> {
  const engine = new DockerEngine(log.child('docker'));
  try {
    await engine.ensureReachable();
  } catch {
    return 'not reachable';
  }
  // An engine that cannot inspect the name (400 for a reference it refuses) does not have it either.
  return (await engine.imageInspect(ref).catch(() => undefined)) ?? 'no such image';
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
