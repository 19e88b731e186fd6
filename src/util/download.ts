import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { UserError } from './errors.js';
import { netFetch } from './fetch.js';
import { guardedFetch, type HopGuard } from './pinned-request.js';
import { viaProxy } from './proxy.js';
import { parseSize } from './size.js';

/**
 * Bounded downloads: every byte firebuild takes from a network peer (registry manifests, tokens and
 * blobs, HTTP Dockerfile sources and contexts, ADD URLs) goes through here, with a hard size cap (the
 * Content-Length is checked before the body, and the body is cut the moment it passes the cap), an
 * overall deadline and a stall timeout (no byte for that long). Bodies stream to a file or into a buffer
 * never larger than the cap; a refused download leaves no partial file.
 */
export interface DownloadLimits {
  /** The most bytes the body may have. */
  maxBytes: number;
  /** The whole download, headers included, must end within this. */
  deadlineMs: number;
  /** The longest wait for the next byte (or for the headers). */
  stallMs: number;
}

/** A registry manifest or index: the distribution spec lets registries refuse manifests over 4 MiB. */
export const MANIFEST_MAX_BYTES = 4 * 1024 ** 2;
/** A token service's answer (a JSON object with one token). */
export const TOKEN_MAX_BYTES = 1024 ** 2;
/** A Dockerfile or .dockerignore fetched over HTTP. */
export const TEXT_MAX_BYTES = 1024 ** 2;
/** ADD URLs, HTTP context files, and the largest declared registry blob. */
export const DEFAULT_MAX_DOWNLOAD_BYTES = 4 * 1024 ** 3;
export const DEFAULT_DEADLINE_MS = 30 * 60_000;
export const DEFAULT_STALL_MS = 60_000;

export const ENV_MAX_SIZE = 'FIREBUILD_MAX_DOWNLOAD_SIZE';
export const ENV_DEADLINE = 'FIREBUILD_DOWNLOAD_TIMEOUT';
export const ENV_STALL = 'FIREBUILD_DOWNLOAD_STALL_TIMEOUT';

function seconds(env: NodeJS.ProcessEnv, name: string, def: number): number {
  const v = env[name];
  if (v === undefined || v === '') return def;
  if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0) throw new UserError(`malformed ${name}='${v}': give seconds, e.g. ${name}=120`);
  return Math.round(Number(v) * 1000);
}

/** The limits for a large download (ADD URL, blob ceiling): `FIREBUILD_MAX_DOWNLOAD_SIZE`, `FIREBUILD_DOWNLOAD_TIMEOUT`, `FIREBUILD_DOWNLOAD_STALL_TIMEOUT` (seconds) override the defaults. */
export function downloadLimits(env: NodeJS.ProcessEnv = process.env): DownloadLimits {
  const size = env[ENV_MAX_SIZE];
  return {
    maxBytes: size ? parseSize(size, ENV_MAX_SIZE) : DEFAULT_MAX_DOWNLOAD_BYTES,
    deadlineMs: seconds(env, ENV_DEADLINE, DEFAULT_DEADLINE_MS),
    stallMs: seconds(env, ENV_STALL, DEFAULT_STALL_MS),
  };
}

/** Limits for a small document (manifest, token, Dockerfile): its own cap, the environment's timeouts (shorter of the two deadlines). */
export function smallLimits(maxBytes: number, env: NodeJS.ProcessEnv = process.env): DownloadLimits {
  const l = downloadLimits(env);
  return { maxBytes, deadlineMs: Math.min(l.deadlineMs, 5 * 60_000), stallMs: l.stallMs };
}

export function formatBytes(n: number): string {
  for (const [u, m] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) if (n >= m) return `${+(n / m).toFixed(1)} ${u}`;
  return `${n} bytes`;
}

/**
 * The deadline and stall timers of one download. `signal` goes to fetch (it aborts the request and the
 * body); `touch()` after every chunk; `fail(err)` turns what an abort threw into the one-line reason.
 */
export class Watchdog {
  private readonly ac = new AbortController();
  private readonly deadline: NodeJS.Timeout;
  private stall: NodeJS.Timeout | undefined;
  private fired: UserError | undefined;

  constructor(private readonly what: string, private readonly limits: DownloadLimits) {
    // Referenced timers: while fetch waits on a socket Node holds no other handle (see bin/firebuild.js).
    this.deadline = setTimeout(() => this.abort(`${what} did not finish within ${Math.round(limits.deadlineMs / 1000)} s: giving up (allow more with ${ENV_DEADLINE}=<seconds>)`), limits.deadlineMs);
    this.touch();
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  touch(): void {
    if (this.stall) clearTimeout(this.stall);
    if (this.fired) return;
    this.stall = setTimeout(() => this.abort(`${this.what} sent nothing for ${Math.round(this.limits.stallMs / 1000)} s: giving up (allow longer stalls with ${ENV_STALL}=<seconds>)`), this.limits.stallMs);
  }

  /** Stop both timers (always, in a finally). */
  done(): void {
    clearTimeout(this.deadline);
    if (this.stall) clearTimeout(this.stall);
  }

  /** The error to throw for `err`: the timeout that fired, else `err` itself. */
  fail(err: unknown): unknown {
    return this.fired ?? err;
  }

  private abort(message: string): void {
    this.fired = new UserError(message);
    if (this.stall) clearTimeout(this.stall);
    this.ac.abort(this.fired);
  }
}

export interface BodyResult { size: number; sha256: string; body?: Buffer }

export interface ReadOptions {
  maxBytes: number;
  /** Stream to this file (created 0600; removed when the download is refused); else into memory. */
  file?: string;
  /** Neither file nor memory: only hash and count the body. */
  discard?: boolean;
  /** The one-line refusal when the body is over `maxBytes` (what it is, the limit, how to raise it). */
  tooLarge: (limit: string) => string;
}

/** Read a response body under the watchdog and the byte cap. */
export async function readBounded(res: Response, w: Watchdog, o: ReadOptions): Promise<BodyResult> {
  const refuse = (): never => {
    throw new UserError(o.tooLarge(formatBytes(o.maxBytes)));
  };
  const declared = res.headers.get('content-length');
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > o.maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    refuse();
  }
  const hash = createHash('sha256');
  const chunks: Buffer[] = [];
  let size = 0;
  const fh = o.file ? await fsp.open(o.file, 'w', 0o600) : undefined;
  const reader = res.body?.getReader();
  try {
    for (;;) {
      if (!reader) break;
      const { done, value } = await reader.read();
      if (done) break;
      w.touch();
      size += value.length;
      if (size > o.maxBytes) {
        await reader.cancel().catch(() => undefined);
        refuse();
      }
      const b = Buffer.from(value.buffer, value.byteOffset, value.length);
      hash.update(b);
      if (fh) await fh.write(b);
      else if (!o.discard) chunks.push(b);
    }
    await fh?.close();
  } catch (err) {
    await fh?.close().catch(() => undefined);
    if (o.file) await fsp.rm(o.file, { force: true });
    await reader?.cancel().catch(() => undefined);
    throw w.fail(err);
  }
  return { size, sha256: hash.digest('hex'), ...(fh || o.discard ? {} : { body: Buffer.concat(chunks, size) }) };
}

export interface BoundedFetchOptions extends Omit<ReadOptions, 'maxBytes'> {
  init?: RequestInit;
  limits: DownloadLimits;
  /** Names the download in messages, e.g. `ADD https://x/y`. */
  what: string;
  /** Checks the status (and headers) before the body is read; throw to refuse. */
  check?: (res: Response) => Promise<void> | void;
  /**
   * Checks every hop (redirects followed by hand, at most 10, http/https only) before it is requested,
   * and connects to the address it checked (unless the hop goes through a proxy: see pinned-request.ts);
   * without it fetch follows redirects itself.
   */
  guard?: HopGuard;
  /** Never through HTTP(S)_PROXY: a probe of a VM on this host. */
  direct?: boolean;
}

export interface BoundedResponse extends BodyResult { status: number; headers: Headers; url: string }

/** GET (or `init.method`) `url` under `o.limits`, to a file or into memory. */
export async function boundedFetch(url: string, o: BoundedFetchOptions): Promise<BoundedResponse> {
  const w = new Watchdog(o.what, o.limits);
  try {
    let res: Response;
    let finalUrl = url;
    try {
      if (o.guard) ({ res, url: finalUrl } = await guardedFetch(url, o.init?.method ?? 'GET', w.signal, o.guard));
      else res = await netFetch(url, { redirect: 'follow', ...o.init, signal: w.signal }, { direct: o.direct ?? false });
    } catch (err) {
      const f = w.fail(err);
      if (f !== err || err instanceof UserError) throw f;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause ?? (err as { code?: string; message?: string });
      const why = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new UserError(`cannot reach ${new URL(url).host} for ${url}${o.direct ? '' : viaProxy(url)} (${why}): check the URL and that the server is up`, { cause: err });
    }
    w.touch();
    if (o.check) {
      try {
        await o.check(res);
      } catch (err) {
        await res.body?.cancel().catch(() => undefined);
        throw err;
      }
    }
    const body = await readBounded(res, w, { maxBytes: o.limits.maxBytes, tooLarge: o.tooLarge, ...(o.file ? { file: o.file } : {}), ...(o.discard ? { discard: true } : {}) });
    return { ...body, status: res.status, headers: res.headers, url: res.url || finalUrl };
  } finally {
    w.done();
  }
}
