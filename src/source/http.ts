import * as fsp from 'node:fs/promises';
import { UserError } from '../util/errors.js';
import { boundedFetch, downloadLimits, ENV_MAX_SIZE, formatBytes, smallLimits, TEXT_MAX_BYTES, Watchdog, type DownloadLimits } from '../util/download.js';
import { fetchWithTimeout } from '../util/fetch.js';
import { guardedFetch, type HopGuard } from '../util/pinned-request.js';

/** HTTP(S) access for Dockerfile sources, http contexts and ADD URLs: errors say what failed and where; every body is bounded (util/download.ts). */
export async function httpFetch(url: string, method: 'GET' | 'HEAD' = 'GET', timeoutMs = 60_000, guard?: HopGuard): Promise<Response> {
  let res: Response;
  try {
    if (guard) {
      // The response's headers are all a HEAD needs; a GET's body is read by the caller after the deadline.
      const w = new Watchdog(`${method} ${url}`, { maxBytes: 0, deadlineMs: timeoutMs, stallMs: timeoutMs });
      try {
        res = (await guardedFetch(url, method, w.signal, guard).catch((err: unknown) => {
          throw w.fail(err);
        })).res;
      } finally {
        w.done();
      }
    } else res = await fetchWithTimeout(url, { method, redirect: 'follow' }, timeoutMs);
  } catch (err) {
    if (err instanceof UserError) throw err;
    const cause = (err as { cause?: { code?: string; message?: string } }).cause ?? (err as { code?: string; message?: string });
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new UserError(`cannot reach ${new URL(url).host} for ${url} (${why}): check the URL and that the server is up`, { cause: err });
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new UserError(`HTTP ${res.status} ${res.statusText} for ${method} ${url}: check the URL`);
  }
  if (method === 'HEAD') await res.body?.cancel().catch(() => undefined);
  return res;
}

const okOnly = (url: string) => (res: Response): void => {
  if (!res.ok) throw new UserError(`HTTP ${res.status} ${res.statusText} for GET ${url}: check the URL`);
};

/** A small text document (a Dockerfile, a .dockerignore): at most 1 MiB. */
export async function httpTextWithType(url: string): Promise<{ text: string; type: string }> {
  const r = await boundedFetch(url, {
    limits: smallLimits(TEXT_MAX_BYTES),
    what: `GET ${url}`,
    check: okOnly(url),
    tooLarge: (limit) => `${url} is larger than ${limit}, the limit for a Dockerfile or .dockerignore fetched over HTTP: is it the right URL?`,
  });
  return { text: r.body!.toString('utf8'), type: r.headers.get('content-type') ?? '' };
}

export async function httpText(url: string): Promise<string> {
  return (await httpTextWithType(url)).text;
}

/** How an over-large ADD/context download is refused. */
export function tooLargeDownload(url: string): (limit: string) => string {
  return (limit) => `${url} is larger than ${limit}, the download limit: raise it with --max-download-size or ${ENV_MAX_SIZE} if the file is meant to be that large`;
}

/** What BuildKit's http source gives a downloaded file as its mtime: the Last-Modified header's time, else the epoch. */
export function lastModified(header: string | null): Date {
  const t = header ? Date.parse(header) : NaN;
  return new Date(Number.isNaN(t) ? 0 : t);
}

/** GET a URL into `file` (or only hash it when `file` is absent) under `limits`; the file's mtime is the response's Last-Modified (else the epoch), as BuildKit's. */
export async function httpDownload(url: string, file: string | undefined, limits: DownloadLimits = downloadLimits(), guard?: HopGuard): Promise<{ sha256: string; size: number }> {
  const r = await boundedFetch(url, { limits, what: `GET ${url}`, check: okOnly(url), tooLarge: tooLargeDownload(url), ...(file ? { file } : {}), ...(guard ? { guard } : {}) });
  if (file) {
    const t = lastModified(r.headers.get('last-modified'));
    await fsp.utimes(file, t, t);
  }
  return { sha256: r.sha256, size: r.size };
}

/** GET a URL and hash it without keeping it (the plan without a download directory): hashing needs no memory. */
export async function httpDigest(url: string, limits: DownloadLimits = downloadLimits(), guard?: HopGuard): Promise<{ sha256: string; size: number }> {
  const r = await boundedFetch(url, { limits, what: `GET ${url}`, check: okOnly(url), tooLarge: tooLargeDownload(url), discard: true, ...(guard ? { guard } : {}) });
  return { sha256: r.sha256, size: r.size };
}

/** GET a URL that may be absent (404 → undefined). */
export async function httpTextOptional(url: string): Promise<string | undefined> {
  try {
    return await httpText(url);
  } catch (err) {
    if (err instanceof UserError && /HTTP 404/.test(err.message)) return undefined;
    throw err;
  }
}

export { formatBytes };
