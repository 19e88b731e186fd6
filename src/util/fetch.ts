import { proxyDispatcher } from './proxy.js';

/**
 * The one way firebuild calls fetch: through the proxy the environment names (HTTP_PROXY, HTTPS_PROXY,
 * NO_PROXY, util/proxy.ts), which Node's fetch alone ignores. `direct` skips the proxy (a probe of a VM
 * this host runs).
 */
export async function netFetch(url: string | URL, init: RequestInit = {}, o: { direct?: boolean } = {}): Promise<Response> {
  const dispatcher = o.direct ? undefined : await proxyDispatcher();
  return fetch(url, dispatcher ? ({ ...init, dispatcher } as RequestInit) : init);
}

/**
 * fetch with a deadline on the response headers (and on whatever `use` does with the response, such
 * as reading its body), kept by a referenced timer: AbortSignal.timeout's timer
 * is unreferenced, and while fetch waits on a socket it holds no referenced handle either, so Node could
 * end the process mid-request (see bin/firebuild.js).
 */
export async function fetchWithTimeout<T = Response>(url: string, init: RequestInit, timeoutMs: number, use?: (res: Response) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no answer within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
  try {
    const res = await netFetch(url, { ...init, signal: ac.signal });
    return use ? await use(res) : (res as T);
  } finally {
    clearTimeout(timer);
  }
}
