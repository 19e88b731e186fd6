import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { ReadableStream } from 'node:stream/web';
import { netFetch } from '../util/fetch.js';
import { viaProxy } from '../util/proxy.js';
import { boundedFetch, downloadLimits, ENV_MAX_SIZE, formatBytes, MANIFEST_MAX_BYTES, readBounded, smallLimits, TOKEN_MAX_BYTES, Watchdog, type DownloadLimits } from '../util/download.js';
import { UserError } from '../util/errors.js';
import type { Credentials } from './docker-config.js';

/**
 * A small OCI distribution-spec client (push and pull of blobs and manifests, Basic and Bearer-token
 * auth) on Node's fetch. No maintained npm library covers OCI artifacts with bearer auth, so this is
 * the subset firebuild needs, tested against a real registry.
 */
export interface OciRef { registry: string; repository: string; reference: string }

const REPO_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/** `registry/repository:tag` or `registry/repository@sha256:...`; the registry part is required. */
export function parseRef(s: string): OciRef {
  const bad = (why: string): never => {
    throw new UserError(`invalid registry reference '${s}': ${why} (e.g. 127.0.0.1:5000/acme/app:1.0 or ghcr.io/acme/app:1.0)`);
  };
  const slash = s.indexOf('/');
  if (slash < 0) bad('name the registry host first');
  const registry = s.slice(0, slash);
  if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(registry) || !(registry.includes('.') || registry.includes(':') || registry === 'localhost')) bad('the first part must be a registry host');
  let rest = s.slice(slash + 1);
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at >= 0) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(reference)) bad('a digest must be sha256:<64 hex>');
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon >= 0) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
      if (!TAG_RE.test(reference)) bad('invalid tag');
    }
  }
  if (!REPO_RE.test(rest)) bad('invalid repository name (lower-case letters, digits, . _ - and /)');
  return { registry, repository: rest, reference };
}

/** The registry has no such repository, tag or digest (a 404 for the manifest): a mirror without it is passed over. */
export class ManifestNotFound extends UserError {}

export type { Credentials } from './docker-config.js';
export { dockerConfigCredentials } from './docker-config.js';

export class RegistryClient {
  private token: string | undefined;
  private readonly base: string;

  /** `scheme`, when given (a mirror's URL names it), beats the default: http for loopback hosts and `insecure`, else https. */
  constructor(readonly registry: string, private readonly creds?: Credentials, insecure = false, scheme?: 'http' | 'https') {
    const local = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(registry);
    this.base = `${scheme ?? (local || insecure ? 'http' : 'https')}://${registry}`;
  }

  private basic(): string | undefined {
    return this.creds?.username ? `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password}`).toString('base64')}` : undefined;
  }

  /** `: check ...` after a refusal: where the refused credentials came from. */
  private fix(): string {
    return this.creds?.source ? ` (from ${this.creds.source}): check them, or docker login ${this.registry} again` : ': check --username/--password-stdin or docker login';
  }

  /** Answer a 401 challenge: Basic with the credentials, or a Bearer token from the realm. */
  private async authorize(challenge: string, scope: string): Promise<void> {
    if (/^basic/i.test(challenge)) {
      if (!this.creds) throw new UserError(`registry ${this.registry} needs credentials: pass --username and --password-stdin, or docker login ${this.registry}`);
      if (!this.creds.username) throw new UserError(`registry ${this.registry} asks for a user and password, but its credentials${this.creds.source ? ` from ${this.creds.source}` : ''} are an identity token: docker login ${this.registry} with a password`);
      this.token = this.basic();
      return;
    }
    const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (!params.realm) throw new UserError(`registry ${this.registry} sent an unusable auth challenge: ${challenge.slice(0, 200)}`);
    let url: URL;
    try {
      url = new URL(params.realm);
    } catch {
      throw new UserError(`registry ${this.registry} names a malformed token service '${params.realm.slice(0, 200)}'`);
    }
    // An identity token is traded as an OAuth2 refresh token (POST, as Docker does); else a GET, with Basic auth when there are credentials.
    const refresh = this.creds?.identityToken;
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh ?? '', client_id: 'firebuild', scope, ...(params.service ? { service: params.service } : {}) });
    if (!refresh) {
      if (params.service) url.searchParams.set('service', params.service);
      url.searchParams.set('scope', scope);
    }
    const basic = this.basic();
    const res = await boundedFetch(url.toString(), {
      init: refresh
        ? { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: form.toString() }
        : { headers: basic ? { Authorization: basic } : {} },
      limits: smallLimits(TOKEN_MAX_BYTES),
      what: `the token service of registry ${this.registry} (${url.host})`,
      check: (r) => {
        if (!r.ok) throw new UserError(`registry ${this.registry} refused the credentials (token service answered ${r.status})${this.fix()}`);
      },
      tooLarge: (limit) => `the token service of registry ${this.registry} sent more than ${limit}: refusing it (a token is a small JSON object)`,
    });
    let j: { token?: unknown; access_token?: unknown };
    try {
      j = JSON.parse(res.body!.toString('utf8'));
    } catch {
      throw new UserError(`the token service of registry ${this.registry} answered with something that is not JSON`);
    }
    const token = typeof j?.token === 'string' && j.token ? j.token : typeof j?.access_token === 'string' && j.access_token ? j.access_token : undefined;
    if (!token) throw new UserError(`the token service of registry ${this.registry} answered without a token`);
    this.token = `Bearer ${token}`;
  }

  /** A request with auth: one retry after answering a 401 challenge. */
  async request(method: string, p: string, scope: string, init: { headers?: Record<string, string>; body?: Buffer | ReadableStream | Readable; duplex?: 'half'; signal?: AbortSignal } = {}, redirectUrl?: string): Promise<Response> {
    const url = redirectUrl ?? `${this.base}${p}`;
    const go = (): Promise<Response> => netFetch(url, { method, ...init, headers: { ...(init.headers ?? {}), ...(this.token ? { Authorization: this.token } : {}) } } as RequestInit).catch((err: Error) => {
      if (init.signal?.aborted) throw init.signal.reason;
      if (err instanceof UserError) throw err;
      throw new UserError(`cannot reach registry ${this.registry}${viaProxy(url)}: ${(err.cause as Error | undefined)?.message ?? err.message}`);
    });
    let res = await go();
    if (res.status === 401 && !(init.body instanceof Readable)) {
      await res.body?.cancel().catch(() => undefined);
      const hadToken = Boolean(this.token);
      await this.authorize(res.headers.get('www-authenticate') ?? 'Basic', scope);
      res = await go();
      if (res.status === 401) throw new UserError(`registry ${this.registry} refused the credentials${hadToken ? '' : ` for ${scope}`}${this.fix()}`);
    }
    if (res.status === 403) throw new UserError(`registry ${this.registry} denied ${method} ${p}: the credentials lack permission for ${scope}`);
    return res;
  }

  async blobExists(repo: string, digest: string): Promise<boolean> {
    const res = await this.request('HEAD', `/v2/${repo}/blobs/${digest}`, `repository:${repo}:pull,push`);
    return res.ok;
  }

  /** Monolithic upload of a file or buffer (skipped when the registry already has the blob). */
  async pushBlob(repo: string, content: { file: string } | { data: Buffer }, digest: string, size: number): Promise<void> {
    const scope = `repository:${repo}:pull,push`;
    if (await this.blobExists(repo, digest)) return;
    const start = await this.request('POST', `/v2/${repo}/blobs/uploads/`, scope, { headers: { 'Content-Length': '0' } });
    if (start.status !== 202) throw new UserError(`registry ${this.registry} refused an upload to ${repo} (${start.status}): ${await errorText(start)}`);
    const loc = new URL(start.headers.get('location') ?? '', this.base);
    loc.searchParams.set('digest', digest);
    const body = 'file' in content ? (Readable.toWeb(fs.createReadStream(content.file)) as unknown as ReadableStream) : content.data;
    const put = await this.request('PUT', loc.pathname, scope, { headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) }, body, ...('file' in content ? { duplex: 'half' as const } : {}) }, loc.toString());
    if (put.status !== 201) throw new UserError(`registry ${this.registry} did not accept blob ${digest} (${put.status}): ${await errorText(put)}`);
  }

  async putManifest(repo: string, reference: string, manifest: Buffer, mediaType: string): Promise<string> {
    return (await this.putManifestWithSubject(repo, reference, manifest, mediaType)).digest;
  }

  /** A manifest PUT that also answers the registry's `OCI-Subject` header (a registry with the referrers API sends it for a manifest with a subject). */
  async putManifestWithSubject(repo: string, reference: string, manifest: Buffer, mediaType: string): Promise<{ digest: string; ociSubject?: string }> {
    const res = await this.request('PUT', `/v2/${repo}/manifests/${reference}`, `repository:${repo}:pull,push`, { headers: { 'Content-Type': mediaType }, body: manifest });
    if (res.status !== 201) throw new UserError(`registry ${this.registry} did not accept the manifest for ${repo}${DIGEST_RE.test(reference) ? '@' : ':'}${reference} (${res.status}): ${await errorText(res)}`);
    await res.body?.cancel().catch(() => undefined);
    const digest = res.headers.get('docker-content-digest') ?? `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
    const ociSubject = res.headers.get('oci-subject') ?? undefined;
    return { digest, ...(ociSubject ? { ociSubject } : {}) };
  }

  /**
   * The referrers API (`GET /v2/<repo>/referrers/<digest>`, OCI distribution 1.1): the image index it
   * answers, or undefined when the registry has no such API (404 or 405, as registry:2 answers), so the
   * caller reads the referrers tag instead. Bounded as a manifest.
   */
  async getReferrers(repo: string, digest: string): Promise<Buffer | undefined> {
    const what = `the referrers of ${this.registry}/${repo}@${digest}`;
    const w = new Watchdog(what, smallLimits(MANIFEST_MAX_BYTES));
    try {
      const res = await this.request('GET', `/v2/${repo}/referrers/${digest}`, `repository:${repo}:pull`, { headers: { Accept: 'application/vnd.oci.image.index.v1+json' }, signal: w.signal });
      if (res.status === 404 || res.status === 405) {
        await res.body?.cancel().catch(() => undefined);
        return undefined;
      }
      if (!res.ok) throw new UserError(`registry ${this.registry} answered ${res.status} for ${what}: ${await errorText(res)}`);
      const got = await readBounded(res, w, { maxBytes: MANIFEST_MAX_BYTES, tooLarge: (limit) => `${what} is larger than ${limit}: refusing it` });
      return got.body!;
    } catch (err) {
      throw w.fail(err);
    } finally {
      w.done();
    }
  }

  /** A manifest or index: at most 4 MiB (the distribution spec's limit), under the download deadline and stall timeout. */
  async getManifest(repo: string, reference: string, accept: string[]): Promise<{ body: Buffer; digest: string; mediaType: string }> {
    const what = `the manifest of ${this.registry}/${repo}:${reference}`;
    const w = new Watchdog(what, smallLimits(MANIFEST_MAX_BYTES));
    try {
      const res = await this.request('GET', `/v2/${repo}/manifests/${reference}`, `repository:${repo}:pull`, { headers: { Accept: accept.join(', ') }, signal: w.signal });
      if (res.status === 404) throw new ManifestNotFound(`${this.registry}/${repo}${DIGEST_RE.test(reference) ? '@' : ':'}${reference} not found in the registry`);
      if (!res.ok) throw new UserError(`registry ${this.registry} answered ${res.status} for ${repo}:${reference}: ${await errorText(res)}`);
      const got = await readBounded(res, w, { maxBytes: MANIFEST_MAX_BYTES, tooLarge: (limit) => `${what} is larger than ${limit}, the distribution spec's limit for a manifest: refusing it` });
      const body = got.body!;
      const digest = `sha256:${got.sha256}`;
      if (DIGEST_RE.test(reference) && reference !== digest) throw new UserError(`the manifest of ${repo}@${reference} has digest ${digest}: the registry served other content`);
      return { body, digest, mediaType: res.headers.get('content-type') ?? '' };
    } catch (err) {
      throw w.fail(err);
    } finally {
      w.done();
    }
  }

  /**
   * Download a blob to a file, verifying its size and sha256 while streaming: never more bytes than the
   * manifest declares (cut the moment it passes them), no declared size above the download limit
   * (FIREBUILD_MAX_DOWNLOAD_SIZE, default 4 GiB), within the deadline and stall timeout; a refused blob leaves no file.
   */
  async getBlob(repo: string, digest: string, size: number, dest: string, limits: DownloadLimits = downloadLimits()): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new UserError(`a manifest from ${this.registry} gives blob ${digest} the size ${String(size)}: refusing it`);
    if (size > limits.maxBytes) throw new UserError(`blob ${digest} from ${this.registry} declares ${formatBytes(size)}, over the download limit of ${formatBytes(limits.maxBytes)}: raise it with ${ENV_MAX_SIZE} if the image is meant to be that large`);
    const what = `blob ${digest} from ${this.registry}`;
    const w = new Watchdog(what, limits);
    try {
      const res = await this.request('GET', `/v2/${repo}/blobs/${digest}`, `repository:${repo}:pull`, { signal: w.signal });
      if (!res.ok || !res.body) {
        await res.body?.cancel().catch(() => undefined);
        throw new UserError(`registry ${this.registry} answered ${res.status} for blob ${digest}`);
      }
      const got = await readBounded(res, w, { maxBytes: size, file: dest, tooLarge: () => `${what} is larger than the ${size} bytes its manifest declares: refusing it` });
      if (`sha256:${got.sha256}` !== digest || got.size !== size) {
        await fsp.rm(dest, { force: true });
        throw new UserError(`blob ${digest} from ${this.registry} does not match its digest (got sha256:${got.sha256}, ${got.size} bytes): refusing it`);
      }
    } catch (err) {
      throw w.fail(err);
    } finally {
      w.done();
    }
  }
}

/** The registry's error message: at most the first 16 KiB of the body are read. */
async function errorText(res: Response): Promise<string> {
  const chunks: Uint8Array[] = [];
  let n = 0;
  const reader = res.body?.getReader();
  try {
    while (reader && n < 16 * 1024) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.length;
    }
  } catch {
    // what arrived is enough
  }
  await reader?.cancel().catch(() => undefined);
  const t = Buffer.concat(chunks).subarray(0, 16 * 1024).toString('utf8');
  try {
    const j = JSON.parse(t) as { errors?: { code?: string; message?: string }[] };
    if (j.errors?.length) return j.errors.map((e) => `${e.code}: ${e.message}`).join('; ');
  } catch {
    // plain text
  }
  return t.trim().slice(0, 200) || res.statusText;
}
