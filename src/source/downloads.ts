import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { downloadLimits, type DownloadLimits } from '../util/download.js';
import { dockerfileUrlGuard, HostUrlRefused } from '../net/host-only.js';
import { UserError } from '../util/errors.js';
import { ownedTempDir, type OwnedDir } from '../util/private-dir.js';
import { httpDownload } from './http.js';

export interface Downloaded { file: string; sha256: string; size: number }

/**
 * The URLs one build fetches (ADD URLs, http context files), each fetched once into a private
 * directory (mkdtemp, 0700): the plan records the digest of that very file and the step that uses it
 * reads that file, so what is built is what was planned and keyed. `dispose()` removes the files.
 * These URLs come from a Dockerfile: every hop is refused when it leads to a host-only address
 * (net/host-only.ts) unless `allowHostUrls` (--allow-host-urls, FIREBUILD_ALLOW_HOST_URLS=1).
 */
/**
 * Run one build with its own Downloads (what it fetches is fetched once, while planning, and used from
 * there), removed when the build ends however it ends.
 */
export async function withDownloads<T>(o: { maxDownloadBytes?: number | undefined; allowHostUrls?: boolean | undefined }, build: (d: Downloads) => Promise<T>): Promise<T> {
  const downloads = new Downloads({ ...downloadLimits(), ...(o.maxDownloadBytes ? { maxBytes: o.maxDownloadBytes } : {}) }, o.allowHostUrls === true);
  try {
    return await build(downloads);
  } finally {
    await downloads.dispose();
  }
}

export class Downloads {
  private dir: Promise<OwnedDir> | undefined;
  private readonly byUrl = new Map<string, Promise<Downloaded>>();
  private readonly bySha = new Map<string, string>();
  private n = 0;

  constructor(readonly limits: DownloadLimits = downloadLimits(), readonly allowHostUrls = false) {}

  /** The file of `url`, downloading it on the first call; `trustedOrigin`: the operator's http context, not checked. */
  get(url: string, trustedOrigin?: string): Promise<Downloaded> {
    let p = this.byUrl.get(url);
    if (!p) {
      p = this.fetch(url, trustedOrigin);
      this.byUrl.set(url, p);
      p.catch(() => this.byUrl.delete(url));
    }
    return p;
  }

  /** The downloaded file with this sha256, if this build fetched one. */
  file(sha256: string | undefined): string | undefined {
    return sha256 ? this.bySha.get(sha256) : undefined;
  }

  async dispose(): Promise<void> {
    const d = await this.dir?.catch(() => undefined);
    await d?.remove();
  }

  private async fetch(url: string, trustedOrigin?: string): Promise<Downloaded> {
    // Owned from its creation: a cancelled build leaves no download behind.
    this.dir ??= ownedTempDir('firebuild-download-');
    const file = path.join((await this.dir).path, `d${this.n++}`);
    const d = await httpDownload(url, file, this.limits, dockerfileUrlGuard(this.allowHostUrls, trustedOrigin));
    this.bySha.set(d.sha256, file);
    return { file, ...d };
  }
}

/**
 * The content of a planned URL resource as a host file: this build's download when it made one, else
 * (a plan made elsewhere) a bounded download into `dest` that must match the plan's digest.
 */
export async function plannedDownload(url: string, sha256: string | undefined, dest: string, downloads: Downloads | undefined, what: string): Promise<string> {
  const have = downloads?.file(sha256);
  if (have) return have;
  const d = await httpDownload(url, dest, downloads?.limits ?? downloadLimits(), dockerfileUrlGuard(downloads?.allowHostUrls)).catch((err: unknown) => {
    if (err instanceof HostUrlRefused) throw new HostUrlRefused(`${what} ${url}: ${err.message}`);
    throw err;
  });
  if (sha256 && d.sha256 !== sha256) {
    await fsp.rm(dest, { force: true });
    throw new UserError(`${what} ${url}: the content changed since the plan (sha256 ${d.sha256}, the plan has ${sha256}): the server sends different content per request; use a URL that names one version`);
  }
  return dest;
}
