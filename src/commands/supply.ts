import { isGitSource, parseGitSource } from '../source/git.js';
import type { StoredImage } from '../store/provider.js';
import { imageSbom } from '../store/sbom.js';
import { parseTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

/**
 * What a publish says about an image beyond its files (docs/registry.md, "What is published"): the
 * org.opencontainers.image.* annotations of the pushed manifest and the SPDX SBOM of its rootfs. Shared
 * by `image push` and the publish action; both faces only say where the source URL and revision come
 * from (flags; the runner's GITHUB_* variables).
 */
export interface PublishOptions {
  /** org.opencontainers.image.source: the repository's URL. Unset: the https form of the image's git source, when it has one; else none. */
  source?: string;
  /** org.opencontainers.image.revision. Unset: the commit of the image's git source (only with the source derived from it). */
  revision?: string;
  /** Keep the build args in what is published (store/package.ts `publishedMetadata`). */
  includeBuildArgs: boolean;
}

/** SOURCE_DATE_EPOCH (reproducible-builds.org): an integer of seconds since 1970, as RFC 3339; undefined when unset. */
export function sourceDateEpoch(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === '') return undefined;
  // At most 9999-12-31T23:59:59Z: RFC 3339 has four-digit years.
  const n = /^\d{1,12}$/.test(v) && Number(v) <= 253402300799 ? Number(v) : NaN;
  const d = new Date(n * 1000);
  if (!Number.isFinite(n) || Number.isNaN(d.getTime())) throw new UserError(`SOURCE_DATE_EPOCH '${v.slice(0, 40)}' is not a number of seconds since 1970: give an integer (e.g. $(git log -1 --format=%ct)) or unset it`);
  return d.toISOString().replace(/\.000Z$/, 'Z');
}

/** The image's creation time as published: SOURCE_DATE_EPOCH when set, else when it was built (RFC 3339). */
export function publishedCreated(image: StoredImage, env: NodeJS.ProcessEnv = process.env): string {
  return sourceDateEpoch(env) ?? image.metadata.created;
}

/**
 * The web form of a git source's repository: `git+https://host/acme/app.git:/Dockerfile#v1` and
 * `ssh://git@host/acme/app.git:/...` give `https://host/acme/app`; credentials, ports of ssh and git://,
 * and `.git` are dropped. Undefined for anything else (a local path is never a source URL).
 */
export function gitSourceUrl(ref: string): string | undefined {
  if (!isGitSource(ref)) return undefined;
  let u: URL;
  try {
    u = new URL(parseGitSource(ref).url);
  } catch {
    return undefined;
  }
  if (!u.hostname) return undefined;
  const p = u.pathname.replace(/\/+$/, '').replace(/\.git$/, '');
  const web = u.protocol === 'http:' || u.protocol === 'https:' ? `${u.protocol}//${u.host}` : `https://${u.hostname}`;
  return `${web}${p}`;
}

/** A source URL given by a flag or the runner: http(s), no credentials, no spaces. */
export function checkSourceUrl(s: string, what: string): string {
  let u: URL | undefined;
  try {
    u = /^https?:\/\/\S+$/i.test(s) ? new URL(s) : undefined;
  } catch {
    u = undefined;
  }
  if (!u) throw new UserError(`${what} '${s.slice(0, 200)}' is not an http(s) URL: give the repository's web address, e.g. https://github.com/acme/app`);
  if (u.username || u.password) throw new UserError(`${what} carries credentials: give the repository's address without them (it is published)`);
  return s;
}

function checkRevision(s: string, what: string): string {
  if (!/^[\x21-\x7e]{1,128}$/.test(s)) throw new UserError(`${what} '${s.slice(0, 80)}' is not a revision: give a commit id (or another identifier without spaces, at most 128 characters)`);
  return s;
}

/**
 * The pushed manifest's org.opencontainers.image.* annotations: source and revision (see
 * PublishOptions), version (the tag's version), created (`publishedCreated`).
 */
export function publishAnnotations(image: StoredImage, o: Pick<PublishOptions, 'source' | 'revision'>, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const a: Record<string, string> = {};
  const derived = o.source === undefined && image.metadata.source.kind === 'dockerfile' ? gitSourceUrl(image.metadata.source.ref) : undefined;
  const source = o.source !== undefined ? checkSourceUrl(o.source, 'the source URL') : derived;
  if (source) a['org.opencontainers.image.source'] = source;
  const revision = o.revision !== undefined ? checkRevision(o.revision, 'the revision') : derived ? image.metadata.source.commit : undefined;
  if (revision) a['org.opencontainers.image.revision'] = revision;
  a['org.opencontainers.image.version'] = parseTag(image.tag).version;
  a['org.opencontainers.image.created'] = publishedCreated(image, env);
  return a;
}

/** The SPDX 2.3 SBOM of a stored image's rootfs (store/sbom.ts), its creation time `publishedCreated`. */
export async function makeSbom(image: StoredImage, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<{ bytes: Buffer; packages: number }> {
  const r = await imageSbom(image, publishedCreated(image, env));
  for (const n of r.notes) log.warn(`SBOM of ${image.tag}: ${n}`);
  const packages = r.doc.packages.length - 1;
  log.info('made the SBOM', { tag: image.tag, packages });
  return { bytes: r.bytes, packages };
}
