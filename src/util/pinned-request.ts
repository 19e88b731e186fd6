import type { LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import { UserError } from './errors.js';
import { netFetch } from './fetch.js';
import { proxyConfig } from './proxy.js';

/** The address a request connects to, fixed before the request (no second DNS answer can change it). */
export interface Pin { address: string; family: 4 | 6 }

/**
 * Checks one hop of a download before it is requested: throws (a one-line UserError) to refuse the
 * destination; returns the address to connect to (pinned), or undefined to connect as usual.
 */
export interface HopGuard {
  check(u: URL): Promise<Pin | undefined>;
}

const NULL_BODY = new Set([101, 204, 205, 304]);
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
export const MAX_REDIRECTS = 10;

/**
 * One HTTP(S) request with node:http(s), connecting to `pin` when given (the TLS name and the Host header
 * stay the URL's), answered as a WHATWG Response whose body streams (readBounded reads it under its cap).
 * No redirect is followed and no content coding is asked for.
 */
export async function pinnedRequest(u: URL, o: { method: string; signal: AbortSignal; pin?: Pin }): Promise<Response> {
  const pin = o.pin;
  const lookup: LookupFunction | undefined = pin
    ? (_host, opts, cb) => {
        if ((opts as { all?: boolean }).all) (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: pin.address, family: pin.family }]);
        else cb(null, pin.address, pin.family);
      }
    : undefined;
  // node:http(s) and TLS load with the first request: every plan imports this module, few fetch (bench/cli-start.mjs).
  const mod = u.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const req = mod.request(u, { method: o.method, signal: o.signal, agent: false, ...(lookup ? { lookup } : {}) }, (res) => {
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 599) {
        res.destroy();
        reject(new Error(`the server answered with status ${status}`));
        return;
      }
      const headers = new Headers();
      for (const [k, v] of Object.entries(res.headers)) {
        if (Array.isArray(v)) for (const x of v) headers.append(k, x);
        else if (v !== undefined) headers.set(k, v);
      }
      const empty = o.method === 'HEAD' || NULL_BODY.has(status);
      if (empty) res.resume();
      resolve(new Response(empty ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), { status, statusText: res.statusMessage ?? '', headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * GET/HEAD `url` following at most 10 redirects (http and https only) by hand, `guard` checking every hop
 * before it is requested. Returns the final response and its URL.
 *
 * A hop that goes through a proxy (HTTP_PROXY/HTTPS_PROXY, not excluded by NO_PROXY: util/proxy.ts) is
 * still checked by `guard` on its URL's host first, but then it is the proxy that resolves the name and
 * connects: the pin cannot apply, since this host never connects to the destination. The proxy is the
 * operator's own configuration, trusted as the way out; a name that resolves to a host-only address here
 * is refused before the proxy is asked.
 */
export async function guardedFetch(url: string, method: string, signal: AbortSignal, guard: HopGuard): Promise<{ res: Response; url: string }> {
  let u = new URL(url);
  let m = method;
  const proxies = proxyConfig();
  for (let hop = 0; ; hop++) {
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new RedirectRefused(`${url} redirects to ${u.toString()}: only http and https redirects are followed`);
    const pin = await guard.check(u);
    // As pinnedRequest: no redirect followed, no content coding asked for (the bytes are the file's).
    const res = proxies?.proxyFor(u)
      ? await netFetch(u, { method: m, signal, redirect: 'manual', headers: { 'accept-encoding': 'identity' } })
      : await pinnedRequest(u, { method: m, signal, ...(pin ? { pin } : {}) });
    const loc = res.headers.get('location');
    if (!REDIRECTS.has(res.status) || loc === null) return { res, url: u.toString() };
    await res.body?.cancel().catch(() => undefined);
    if (hop >= MAX_REDIRECTS) throw new RedirectRefused(`${url} redirects more than ${MAX_REDIRECTS} times: give the final URL`);
    try {
      u = new URL(loc, u);
    } catch {
      throw new RedirectRefused(`${url} redirects to a malformed location ${JSON.stringify(loc)}: give the final URL`);
    }
    if (res.status === 303 && m !== 'HEAD') m = 'GET';
  }
}

/** A redirect that is not followed. */
export class RedirectRefused extends UserError {}
