import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Descriptor } from '../oci/referrers.js';
import type { RegistryOptions } from '../oci/artifact.js';
import { packageImage, type PackagedImage } from '../store/package.js';
import type { StorageProvider } from '../store/provider.js';
import { formatTag, type Tag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { imagePush } from './image.js';
import { makeSbom, publishedCreated, type PublishOptions } from './supply.js';

export type { PublishOptions };

/**
 * The publish action's use cases, one per target (docs/registry.md): a stored image to an OCI registry
 * as a firebuild artifact, as release files (rootfs.ext4.zst, metadata.json, sbom.spdx.json, SHA256SUMS),
 * those files as the assets of a release, the digests a provenance statement names, and the provenance
 * bundle attached to the pushed manifest. The face sequences them (each is one group of the job's log,
 * its outputs set as soon as it is done) and brings what only it reaches: the release API (GitHub's,
 * through @actions/github), the artifact upload and the attestation.
 */
export interface RegistryPublished {
  digest: string;
  rootfsSha256: string;
  compressedSize: number;
  /** The repository without the reference's tag or digest, and the pushed manifest by digest in it. */
  repository: string;
  refByDigest: string;
  /** The pushed manifest (a referrer's subject) and the SBOM attached to it. */
  manifest: Descriptor;
  sbom?: Descriptor;
}

/** The image's SBOM (commands/supply.ts), made once for every target. */
export async function sbomForPublish(storage: StorageProvider, tag: Tag, log: Logger): Promise<{ bytes: Buffer; packages: number }> {
  return makeSbom(await storage.getImage(formatTag(tag)), log);
}

export async function publishToRegistry(storage: StorageProvider, tag: Tag, ociRef: string, registry: RegistryOptions, o: PublishOptions & { sbom?: Buffer }, log: Logger): Promise<RegistryPublished> {
  const r = await imagePush(storage, tag, ociRef, registry, { ...o, sbom: o.sbom ?? false }, log);
  const repository = ociRef.replace(/[:@][^/]*$/, '');
  return {
    digest: r.digest, rootfsSha256: r.rootfsSha256, compressedSize: r.compressedSize, repository, refByDigest: `${repository}@${r.digest}`,
    manifest: r.manifest, ...(r.sbom ? { sbom: r.sbom } : {}),
  };
}

/** The image as release files in `dir` (store/package.ts), its metadata as published. */
export async function packageForRelease(storage: StorageProvider, tag: Tag, dir: string, o: { includeBuildArgs: boolean; sbom?: Buffer }): Promise<PackagedImage> {
  return packageImage(storage, formatTag(tag), dir, { published: { includeBuildArgs: o.includeBuildArgs }, ...(o.sbom ? { sbom: o.sbom } : {}) });
}

export const SIGSTORE_BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';

/**
 * The provenance's Sigstore bundle attached to the pushed manifest as an OCI referrer, as GitHub's
 * attest-build-provenance does with push-to-registry (artifactType and layer: the bundle's media type;
 * annotations naming the DSSE envelope and the predicate type), so `gh attestation verify oci://...` and
 * cosign find it in the registry.
 */
export async function attachProvenance(storage: StorageProvider, tag: Tag, ociRef: string, pushed: RegistryPublished, bundle: { mediaType?: string; data: Buffer; predicateType: string }, registry: RegistryOptions, log: Logger): Promise<Descriptor> {
  const { attachReferrer } = await import('../oci/artifact.js');
  const created = publishedCreated(await storage.getImage(formatTag(tag)));
  const type = bundle.mediaType ?? SIGSTORE_BUNDLE_MEDIA_TYPE;
  return attachReferrer(ociRef, pushed.manifest, {
    artifactType: type, data: bundle.data,
    annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': bundle.predicateType, 'org.opencontainers.image.created': created },
  }, registry, log);
}

/** The default name of the Actions artifact holding the release files. */
export function artifactNameOf(tag: Tag): string {
  return `firebuild-${formatTag(tag).replace(/[/:]/g, '-')}`;
}

/** What a provenance statement names: each published digest (the manifest, the rootfs, the compressed rootfs, the SBOM). */
export interface Subject {
  name: string;
  digest: { sha256: string };
}

/** `sbomSha256`: the SBOM attached to the pushed manifest (the release files name theirs in SHA256SUMS). */
export function provenanceSubjects(pushed: RegistryPublished | undefined, pkg: PackagedImage | undefined, sbomSha256?: string): Subject[] {
  const subjects: Subject[] = [];
  if (pushed) subjects.push({ name: pushed.repository, digest: { sha256: pushed.digest.replace(/^sha256:/, '') } }, { name: 'rootfs.ext4', digest: { sha256: pushed.rootfsSha256 } });
  if (pkg) {
    if (!subjects.some((x) => x.name === 'rootfs.ext4')) subjects.push({ name: 'rootfs.ext4', digest: { sha256: pkg.sums['rootfs.ext4'] as string } });
    subjects.push({ name: 'rootfs.ext4.zst', digest: { sha256: pkg.sums['rootfs.ext4.zst'] as string } });
  }
  const sbom = pkg?.sums['sbom.spdx.json'] ?? sbomSha256;
  if (sbom) subjects.push({ name: 'sbom.spdx.json', digest: { sha256: sbom } });
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
