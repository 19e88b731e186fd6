import { createHash } from 'node:crypto';
import { UserError } from '../util/errors.js';
import { fetchWithTimeout } from '../util/fetch.js';

/** HTTP(S) access for Dockerfile sources, http contexts and ADD URLs: errors say what failed and where. */
export async function httpFetch(url: string, method: 'GET' | 'HEAD' = 'GET', timeoutMs = 60_000): Promise<Response> {
  let res: Response;
  try {
    res = await fetchWithTimeout(url, { method, redirect: 'follow' }, timeoutMs);
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new UserError(`cannot reach ${new URL(url).host} for ${url} (${why}): check the URL and that the server is up`, { cause: err });
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new UserError(`HTTP ${res.status} ${res.statusText} for ${method} ${url}: check the URL`);
  }
  return res;
}

export async function httpText(url: string): Promise<string> {
  return (await httpFetch(url)).text();
}

/** GET a URL and hash it without keeping it. */
export async function httpDigest(url: string): Promise<{ sha256: string; size: number }> {
  const res = await httpFetch(url);
  const h = createHash('sha256');
  let size = 0;
  if (res.body) {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      h.update(chunk);
      size += chunk.length;
    }
  }
  return { sha256: h.digest('hex'), size };
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
