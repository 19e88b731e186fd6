import { createHash } from 'node:crypto';
import { UserError } from '../util/errors.js';
import { ManifestNotFound, type RegistryClient } from './registry.js';

/**
 * OCI 1.1 referrers: an artifact (an SBOM, a provenance bundle) attached to a pushed manifest. It is
 * pushed as an image manifest whose `subject` is the manifest it is about, with the artifact's type as
 * `artifactType` and the artifact as its one layer (config: the empty descriptor). A registry with the
 * referrers API indexes it and says so with the `OCI-Subject` header; otherwise (distribution's
 * registry:2, ...) the client keeps the index itself under the referrers tag `sha256-<hex>` of the
 * subject, as the distribution spec's fallback says: read it (absent: empty), add the descriptor, put it
 * back. Readers ask the API first and fall back to the tag (`listReferrers`).
 */
export const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
export const INDEX_MEDIA_TYPE = 'application/vnd.oci.image.index.v1+json';
export const EMPTY = { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2, data: 'e30=' };

export interface Descriptor { mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }

export interface Referrer {
  artifactType: string;
  /** The layer's media type (default: the artifact type). */
  mediaType?: string;
  data: Buffer;
  annotations?: Record<string, string>;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The referrers tag of a subject digest: `sha256:<hex>` → `sha256-<hex>`. */
export function referrersTag(digest: string): string {
  return digest.replace(':', '-');
}

/** Push `a` as a referrer of `subject` in `repo`; returns its manifest's descriptor and whether the tag fallback was used. */
export async function pushReferrer(reg: RegistryClient, repo: string, subject: Descriptor, a: Referrer): Promise<{ descriptor: Descriptor; fallback: boolean }> {
  const layer = { mediaType: a.mediaType ?? a.artifactType, digest: sha256(a.data), size: a.data.length };
  const manifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: a.artifactType,
    config: EMPTY,
    layers: [layer],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    ...(a.annotations && Object.keys(a.annotations).length ? { annotations: a.annotations } : {}),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = sha256(bytes);
  await reg.pushBlob(repo, { data: Buffer.from('{}') }, EMPTY.digest, EMPTY.size);
  await reg.pushBlob(repo, { data: a.data }, layer.digest, layer.size);
  const put = await reg.putManifestWithSubject(repo, digest, bytes, MANIFEST_MEDIA_TYPE);
  const descriptor: Descriptor = { mediaType: MANIFEST_MEDIA_TYPE, digest, size: bytes.length, artifactType: a.artifactType, ...(manifest.annotations ? { annotations: manifest.annotations } : {}) };
  if (put.ociSubject === subject.digest) return { descriptor, fallback: false };
  await addToReferrersTag(reg, repo, subject.digest, descriptor);
  return { descriptor, fallback: true };
}

/** The index under a referrers tag (empty when there is none); anything else there is an error, not overwritten. */
async function readIndex(reg: RegistryClient, repo: string, tag: string): Promise<{ schemaVersion: number; mediaType: string; manifests: Descriptor[] }> {
  let body: Buffer;
  try {
    body = (await reg.getManifest(repo, tag, [INDEX_MEDIA_TYPE])).body;
  } catch (err) {
    if (err instanceof ManifestNotFound) return { schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests: [] };
    throw err;
  }
  return parseIndex(body, `${reg.registry}/${repo}:${tag}`);
}

function parseIndex(body: Buffer, what: string): { schemaVersion: number; mediaType: string; manifests: Descriptor[] } {
  let j: { mediaType?: unknown; manifests?: unknown };
  try {
    j = JSON.parse(body.toString('utf8'));
  } catch {
    throw new UserError(`${what} is not JSON, so not a referrers index: remove that tag or push elsewhere`);
  }
  const ok = (d: unknown): d is Descriptor => typeof d === 'object' && d !== null && typeof (d as Descriptor).digest === 'string' && typeof (d as Descriptor).mediaType === 'string' && typeof (d as Descriptor).size === 'number';
  if (j.mediaType !== INDEX_MEDIA_TYPE || !Array.isArray(j.manifests) || !j.manifests.every(ok)) throw new UserError(`${what} is not an OCI image index, so not a referrers index: remove that tag or push elsewhere`);
  return { schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests: j.manifests };
}

/**
 * The referrers tag schema: the subject's index with `d` added (when not already there). Two publishers
 * of referrers to one subject at the same moment may each write the index without the other's entry
 * (the registry offers no conditional PUT); a publish is one writer per image.
 */
async function addToReferrersTag(reg: RegistryClient, repo: string, subjectDigest: string, d: Descriptor): Promise<void> {
  const tag = referrersTag(subjectDigest);
  const index = await readIndex(reg, repo, tag);
  if (index.manifests.some((m) => m.digest === d.digest)) return;
  index.manifests.push(d);
  await reg.putManifest(repo, tag, Buffer.from(JSON.stringify(index)), INDEX_MEDIA_TYPE);
}

/** The referrers of a manifest (the API, else the referrers tag), of one artifact type when given. */
export async function listReferrers(reg: RegistryClient, repo: string, digest: string, artifactType?: string): Promise<{ manifests: Descriptor[]; via: 'api' | 'tag' }> {
  const api = await reg.getReferrers(repo, digest);
  const index = api ? parseIndex(api, `the referrers of ${reg.registry}/${repo}@${digest}`) : await readIndex(reg, repo, referrersTag(digest));
  const manifests = artifactType ? index.manifests.filter((m) => m.artifactType === artifactType) : index.manifests;
  return { manifests, via: api ? 'api' : 'tag' };
}
