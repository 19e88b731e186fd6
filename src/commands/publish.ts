import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { RegistryOptions } from '../oci/artifact.js';
import { packageImage, type PackagedImage } from '../store/package.js';
import type { StorageProvider } from '../store/provider.js';
import { formatTag, type Tag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { imagePush } from './image.js';

/**
 * The publish action's use cases, one per target (docs/registry.md): a stored image to an OCI registry
 * as a firebuild artifact, as release files (rootfs.ext4.zst, metadata.json, SHA256SUMS), those files
 * as the assets of a release, and the digests a provenance statement names. The face sequences them (each
 * is one group of the job's log, its outputs set as soon as it is done) and brings what only it reaches:
 * the release API (GitHub's, through @actions/github), the artifact upload and the attestation.
 */
export interface RegistryPublished {
  digest: string;
  rootfsSha256: string;
  compressedSize: number;
  /** The repository without the reference's tag or digest, and the pushed manifest by digest in it. */
  repository: string;
  refByDigest: string;
}

export async function publishToRegistry(storage: StorageProvider, tag: Tag, ociRef: string, registry: RegistryOptions, log: Logger): Promise<RegistryPublished> {
  const r = await imagePush(storage, tag, ociRef, registry, log);
  const repository = ociRef.replace(/[:@][^/]*$/, '');
  return { digest: r.digest, rootfsSha256: r.rootfsSha256, compressedSize: r.compressedSize, repository, refByDigest: `${repository}@${r.digest}` };
}

/** The image as release files in `dir` (store/package.ts). */
export async function packageForRelease(storage: StorageProvider, tag: Tag, dir: string): Promise<PackagedImage> {
  return packageImage(storage, formatTag(tag), dir);
}

/** The default name of the Actions artifact holding the release files. */
export function artifactNameOf(tag: Tag): string {
  return `firebuild-${formatTag(tag).replace(/[/:]/g, '-')}`;
}

/** What a provenance statement names: each published digest (the manifest, the rootfs, the compressed rootfs). */
export interface Subject {
  name: string;
  digest: { sha256: string };
}

export function provenanceSubjects(pushed: RegistryPublished | undefined, pkg: PackagedImage | undefined): Subject[] {
  const subjects: Subject[] = [];
  if (pushed) subjects.push({ name: pushed.repository, digest: { sha256: pushed.digest.replace(/^sha256:/, '') } }, { name: 'rootfs.ext4', digest: { sha256: pushed.rootfsSha256 } });
  if (pkg) {
    if (!subjects.some((x) => x.name === 'rootfs.ext4')) subjects.push({ name: 'rootfs.ext4', digest: { sha256: pkg.sums['rootfs.ext4'] as string } });
    subjects.push({ name: 'rootfs.ext4.zst', digest: { sha256: pkg.sums['rootfs.ext4.zst'] as string } });
  }
  return subjects;
}

/** A release of a repository's release API: its page, where assets upload, the assets it has. */
export interface Release {
  id: number;
  url: string;
  uploadUrl: string;
  assets: { id: number; name: string }[];
}

/** The release API the face reaches (GitHub's); `find` answers undefined for a release that does not exist, and throws on anything else. */
export interface ReleaseApi {
  find(tag: string): Promise<Release | undefined>;
  create(tag: string): Promise<Release>;
  deleteAsset(id: number): Promise<void>;
  /** Returns the asset's download URL. */
  upload(release: Release, name: string, data: Buffer): Promise<string>;
}

/**
 * The release target: the packaged files as assets of the release for `tag` (created when missing). An
 * asset name already in the release is an error unless `overwrite`, which replaces it.
 */
export async function publishRelease(api: ReleaseApi, t: { repository: string; tag: string; files: string[]; overwrite: boolean }): Promise<{ url: string; assets: string[] }> {
  let release: Release | undefined;
  try {
    release = await api.find(t.tag);
  } catch (err) {
    throw new UserError(`cannot read the release ${t.tag} of ${t.repository}: ${(err as Error).message}`);
  }
  release ??= await api.create(t.tag);
  const names = t.files.map((f) => path.basename(f));
  const taken = release.assets.filter((a) => names.includes(a.name));
  if (taken.length && !t.overwrite) throw new UserError(`release ${t.tag} already has ${taken.map((a) => a.name).join(', ')}: set overwrite: true to replace them`);
  for (const a of taken) await api.deleteAsset(a.id);
  const assets: string[] = [];
  for (const f of t.files) assets.push(await api.upload(release, path.basename(f), await fsp.readFile(f)));
  return { url: release.url, assets };
}
