import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { EMPTY, MANIFEST_MEDIA_TYPE } from '../oci/referrers.js';
import { dockerConfigCredentials, ManifestNotFound, parseRef, RegistryClient, type Credentials } from '../oci/registry.js';
import { readBounded, smallLimits, Watchdog } from '../util/download.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { CancelledError, own } from '../util/cleanup.js';
import { fileDigest } from '../util/fs.js';
import { privateTempDir } from '../util/private-dir.js';
import type { StepCache } from './step-cache.js';

/**
 * The vm engine's step cache in an OCI registry, shared by every runner that names the same repository
 * (`--cache-from/--cache-to registry:HOST/REPO`), in the spirit of BuildKit's registry cache.
 *
 * One entry per step key: an OCI image manifest tagged `step-<key>` (artifactType
 * `application/vnd.firebuild.step-cache.v1`, the empty config, one layer: the entry as the local step
 * cache packs it, `<key>.ext4` sparse plus `<key>.json`, GNU tar + zstd). The blobs are content-addressed;
 * the tag is the index keyed by the step key. A tag per key instead of one index manifest listing every
 * key means no read-modify-write: two runners pushing the same step write the same tag (last writer wins;
 * either entry is the step's result), two runners pushing different steps write different tags (no
 * entry is lost), and nothing has to be locked across runners.
 *
 * A pulled entry is untrusted: its manifest is bounded and must name the key and exactly one layer of
 * firebuild's type; the layer is bounded by the download limit and verified against its digest while it
 * streams; the archive must hold exactly that key's two files, no larger than the local cache, and the
 * image passes the same ext4 check as any outside image before the local cache keeps it. Anything wrong
 * is a warning and the step is built again (and pushed afresh by --cache-to). Writing to the cache is
 * trusting: whoever can push to the repository decides what later builds reuse (docs/step-cache.md).
 */
export const STEP_CACHE_ARTIFACT_TYPE = 'application/vnd.firebuild.step-cache.v1';
export const STEP_CACHE_LAYER_TYPE = 'application/vnd.firebuild.step-cache.entry.v1.tar+zstd';
export const ANNOTATION_STEP_KEY = 'dev.firebuild.step-key';
const CREATED = 'org.opencontainers.image.created';
const KEY_RE = /^[0-9a-f]{64}$/;
const TAGS_MAX_BYTES = 4 * 1024 ** 2;
/** The most entries `list` (pruning) reads: a manifest GET each. */
const MAX_ENTRIES = 100_000;

export const stepTag = (key: string): string => `step-${key}`;

/** `registry:HOST/REPO` (the form of --cache-from/--cache-to and the actions' inputs): the registry and repository. */
export function parseCacheRef(spec: string): { registry: string; repository: string; text: string } {
  const m = /^registry:(.+)$/.exec(spec.trim());
  if (!m) throw new UserError(`invalid cache location '${spec}': write registry:HOST/REPOSITORY (e.g. registry:ghcr.io/acme/build-cache)`);
  const text = m[1]!;
  if (text.includes('@') || text.slice(text.indexOf('/') + 1).includes(':')) {
    throw new UserError(`invalid cache location '${spec}': name a repository without a tag or digest (each step gets its own tag step-<key>)`);
  }
  const ref = parseRef(text);
  return { registry: ref.registry, repository: ref.repository, text: `${ref.registry}/${ref.repository}` };
}

interface EntryManifest {
  mediaType?: unknown;
  artifactType?: unknown;
  layers?: { mediaType?: unknown; digest?: unknown; size?: unknown }[];
  annotations?: Record<string, unknown>;
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** An entry that is there but wrong (not the registry's fault): the step is rebuilt and the entry replaced. */
class BadEntry extends UserError {}

/** One entry as the registry lists it (for pruning). */
export interface RemoteEntry { key: string; digest: string; bytes: number; created: string }

export class RegistryStepCache {
  /** Keys whose pulled entry was bad: --cache-to pushes them again even though the tag exists. */
  private readonly replace = new Set<string>();
  /** Why the registry could not be read (then no more steps are asked for). */
  private unreadable: string | undefined;
  /** Failures to read an entry that were not the entry's own fault (two: the registry is passed over). */
  private failures = 0;
  /** Entries pulled into the local cache by this build. */
  pulled = 0;
  readonly where: string;

  constructor(private readonly client: RegistryClient, readonly repository: string, private readonly log: Logger, private readonly maxEntryBytes: number) {
    this.where = `${client.registry}/${repository}`;
  }

  static async open(spec: string, log: Logger, o: { credentials?: Credentials; maxEntryBytes: number }): Promise<RegistryStepCache> {
    const ref = parseCacheRef(spec);
    const creds = o.credentials ?? (await dockerConfigCredentials(ref.registry));
    return new RegistryStepCache(new RegistryClient(ref.registry, creds), ref.repository, log, o.maxEntryBytes);
  }

  /** The entry's manifest, validated; undefined when the registry has none for the key. */
  private async manifest(key: string): Promise<{ digest: string; layer: { digest: string; size: number }; created: string } | undefined> {
    let got: { body: Buffer; digest: string };
    try {
      got = await this.client.getManifest(this.repository, stepTag(key), [MANIFEST_MEDIA_TYPE]);
    } catch (err) {
      if (err instanceof ManifestNotFound) return undefined;
      throw err;
    }
    let m: EntryManifest;
    try {
      m = JSON.parse(got.body.toString('utf8')) as EntryManifest;
    } catch {
      throw new BadEntry(`the step cache entry ${stepTag(key).slice(0, 21)} in ${this.where} is not JSON`);
    }
    if (!isObject(m) || !Array.isArray(m.layers) || !isObject(m.layers[0]) || (m.annotations !== undefined && !isObject(m.annotations))) {
      throw new BadEntry(`${this.where}:${stepTag(key).slice(0, 21)} is not a firebuild step cache entry (not an image manifest)`);
    }
    const layer = m.layers[0];
    if (m.artifactType !== STEP_CACHE_ARTIFACT_TYPE || m.layers?.length !== 1 || layer?.mediaType !== STEP_CACHE_LAYER_TYPE) {
      throw new BadEntry(`${this.where}:${stepTag(key).slice(0, 21)} is not a firebuild step cache entry (artifactType ${String(m.artifactType)})`);
    }
    if (m.annotations?.[ANNOTATION_STEP_KEY] !== key) throw new BadEntry(`${this.where}:${stepTag(key).slice(0, 21)} names another step key (${String(m.annotations?.[ANNOTATION_STEP_KEY]).slice(0, 16)})`);
    if (typeof layer.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(layer.digest) || !Number.isSafeInteger(layer.size) || (layer.size as number) < 0) throw new BadEntry(`${this.where}:${stepTag(key).slice(0, 21)} has a malformed layer`);
    const created = typeof m.annotations?.[CREATED] === 'string' ? (m.annotations[CREATED] as string) : '';
    return { digest: got.digest, layer: { digest: layer.digest, size: layer.size as number }, created };
  }

  /**
   * Pull the entry for `key` into the local cache. False when the registry has none, or when anything
   * about it is wrong (a warning; the step is built again and --cache-to replaces the entry).
   */
  async pull(key: string, local: StepCache): Promise<boolean> {
    if (this.unreadable) return false;
    let m: Awaited<ReturnType<RegistryStepCache['manifest']>>;
    try {
      m = await this.manifest(key);
    } catch (err) {
      if (err instanceof CancelledError) throw err;
      // Whatever the entry's fault (or one we cannot tell apart from it): rebuilt, and replaced by --cache-to.
      this.replace.add(key);
      if (err instanceof BadEntry || ++this.failures < 2) {
        this.log.warn('a registry step cache entry cannot be used: the step is built again', { cache: this.where, key: key.slice(0, 16), reason: (err as Error).message });
        return false;
      }
      // Unreachable, refused credentials, 5xx twice: the build goes on without this cache (not asked once per step).
      this.unreadable = (err as Error).message;
      this.log.warn('the registry step cache cannot be read: building without it', { cache: this.where, reason: (err as Error).message });
      return false;
    }
    if (!m) return false;
    const tmp = await workDir(local);
    try {
      if (m.layer.size > this.maxEntryBytes) throw new UserError(`its layer declares ${m.layer.size} bytes, more than the step cache's limit`);
      const file = path.join(tmp.path, 'entry.tar.zst');
      await this.client.getBlob(this.repository, m.layer.digest, m.layer.size, file);
      const n = await local.unpack(file, { only: key });
      if (n !== 1 || !(await local.present([key])).length) throw new UserError('its archive holds no usable entry (an image and its json)');
      this.pulled++;
      this.log.info('step pulled from the registry cache', { cache: this.where, key: key.slice(0, 16), bytes: m.layer.size });
      return true;
    } catch (err) {
      if (err instanceof CancelledError) throw err;
      // Nothing of a refused entry stays in the local cache (a json alone would read as an entry).
      await local.drop(key);
      this.rejected(key, (err as Error).message);
      return false;
    } finally {
      await tmp.remove();
    }
  }

  /**
   * Push the local entries of `keys` the registry lacks (or whose pulled copy was bad). Returns what was
   * pushed and what the registry already had.
   */
  async push(keys: string[], local: StepCache): Promise<{ pushed: string[]; present: string[] }> {
    const pushed: string[] = [];
    const present: string[] = [];
    const tmp = await workDir(local);
    try {
      for (const key of [...new Set(keys)]) {
        if (!KEY_RE.test(key) || !(await local.present([key])).length) continue;
        if (!this.replace.has(key) && (await this.exists(key))) {
          present.push(key);
          continue;
        }
        const file = path.join(tmp.path, `${key}.tar.zst`);
        await local.pack([key], file);
        const data = await fsp.stat(file);
        const digest = `sha256:${(await fileDigest(file)).sha256}`;
        await this.client.pushBlob(this.repository, { file }, digest, data.size);
        await this.client.pushBlob(this.repository, { data: Buffer.from(EMPTY.data, 'base64') }, EMPTY.digest, EMPTY.size);
        const manifest = Buffer.from(JSON.stringify({
          schemaVersion: 2,
          mediaType: MANIFEST_MEDIA_TYPE,
          artifactType: STEP_CACHE_ARTIFACT_TYPE,
          config: { mediaType: EMPTY.mediaType, digest: EMPTY.digest, size: EMPTY.size },
          layers: [{ mediaType: STEP_CACHE_LAYER_TYPE, digest, size: data.size }],
          annotations: { [ANNOTATION_STEP_KEY]: key, [CREATED]: new Date().toISOString() },
        }));
        await this.client.putManifest(this.repository, stepTag(key), manifest, MANIFEST_MEDIA_TYPE);
        await fsp.rm(file, { force: true });
        this.replace.delete(key);
        pushed.push(key);
        this.log.info('step pushed to the registry cache', { cache: this.where, key: key.slice(0, 16), bytes: data.size });
      }
      return { pushed, present };
    } finally {
      await tmp.remove();
    }
  }

  /** A pulled entry that turned out bad (here, or when the engine restored it): rebuilt, and replaced by --cache-to. */
  rejected(key: string, reason: string): void {
    this.replace.add(key);
    this.log.warn('a registry step cache entry cannot be used: the step is built again', { cache: this.where, key: key.slice(0, 16), reason });
  }

  badKeys(): string[] {
    return [...this.replace];
  }

  markBad(key: string): void {
    this.replace.add(key);
  }

  private async exists(key: string): Promise<boolean> {
    const res = await this.client.request('HEAD', `/v2/${this.repository}/manifests/${stepTag(key)}`, `repository:${this.repository}:pull`, { headers: { Accept: MANIFEST_MEDIA_TYPE } });
    await res.body?.cancel().catch(() => undefined);
    if (res.status === 404) return false;
    if (!res.ok) throw new UserError(`registry ${this.client.registry} answered ${res.status} for ${this.where}:${stepTag(key).slice(0, 21)}`);
    return true;
  }

  /**
   * Every step entry in the repository (tags `step-<key>`), oldest first. Entries that cannot be read are
   * skipped. Bounded: each page of the tag list 4 MiB, at most MAX_ENTRIES distinct step tags kept (other
   * tags dropped as they come), and paging stops at a page that adds no new one (a registry ignoring
   * `last` repeats itself).
   */
  async list(): Promise<RemoteEntry[]> {
    const keys = new Set<string>();
    let next: string | undefined = `/v2/${this.repository}/tags/list?n=1000`;
    while (next && keys.size < MAX_ENTRIES) {
      const w = new Watchdog(`the tags of ${this.where}`, smallLimits(TAGS_MAX_BYTES));
      try {
        const res = await this.client.request('GET', next, `repository:${this.repository}:pull`, { signal: w.signal });
        if (res.status === 404) {
          await res.body?.cancel().catch(() => undefined);
          break;
        }
        if (!res.ok) throw new UserError(`registry ${this.client.registry} answered ${res.status} for the tags of ${this.where}`);
        const got = await readBounded(res, w, { maxBytes: TAGS_MAX_BYTES, tooLarge: (limit) => `the tag list of ${this.where} is larger than ${limit}: refusing it` });
        let j: unknown;
        try {
          j = JSON.parse(got.body!.toString('utf8'));
        } catch {
          throw new UserError(`registry ${this.client.registry} answered the tag list of ${this.where} with something that is not JSON`);
        }
        const tags = isObject(j) && Array.isArray(j.tags) ? j.tags : [];
        const before = keys.size;
        for (const t of tags) if (typeof t === 'string' && t.startsWith('step-') && KEY_RE.test(t.slice(5)) && keys.size < MAX_ENTRIES) keys.add(t.slice(5));
        const link = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '');
        // Only the path and query of the next page: it is asked of this registry, whatever host the link names.
        let url: URL | undefined;
        try {
          url = link ? new URL(link[1]!, 'http://registry.invalid') : undefined;
        } catch {
          url = undefined;
        }
        next = url && keys.size > before ? url.pathname + url.search : undefined;
      } catch (err) {
        throw w.fail(err);
      } finally {
        w.done();
      }
    }
    const entries: RemoteEntry[] = [];
    for (const key of keys) {
      const m = await this.manifest(key).catch((err: unknown) => {
        if (err instanceof UserError) return undefined;
        throw err;
      });
      if (m) entries.push({ key, digest: m.digest, bytes: m.layer.size, created: m.created });
    }
    return entries.sort((a, b) => a.created.localeCompare(b.created));
  }

  /** Delete the oldest entries until the repository's entries total at most `maxBytes`; returns the keys deleted. */
  async prune(maxBytes: number): Promise<string[]> {
    const entries = await this.list();
    let total = entries.reduce((a, e) => a + e.bytes, 0);
    const deleted: string[] = [];
    for (const e of entries) {
      if (total <= maxBytes) break;
      const res = await this.client.request('DELETE', `/v2/${this.repository}/manifests/${e.digest}`, `repository:${this.repository}:delete`);
      await res.body?.cancel().catch(() => undefined);
      if (res.status === 405 || res.status === 501) throw new UserError(`registry ${this.client.registry} does not allow deleting manifests, so --cache-max-size cannot prune ${this.where} (distribution: set storage.delete.enabled)`);
      if (!res.ok && res.status !== 404) throw new UserError(`registry ${this.client.registry} answered ${res.status} when deleting a step cache entry of ${this.where}`);
      total -= e.bytes;
      deleted.push(e.key);
    }
    if (deleted.length) this.log.info('registry step cache pruned', { cache: this.where, deleted: deleted.length, bytes: total });
    return deleted;
  }
}

/** A private temp dir beside the local cache's entries (GiB-sized archives stay off a small /tmp), removed by a cancel too. */
async function workDir(local: StepCache): Promise<{ path: string; remove: () => Promise<void> }> {
  await fsp.mkdir(local.dir, { recursive: true, mode: 0o700 });
  const dir = await privateTempDir(local.dir, '.registry-');
  const rm = (): Promise<void> => fsp.rm(dir, { recursive: true, force: true });
  const release = own(`the registry step cache's temp dir ${dir}`, rm);
  return { path: dir, remove: async () => { await rm(); release(); } };
}

/** What the registry caches did for one build (the CLI's JSON, the build-rootfs action's outputs and summary). */
export interface RegistryCacheReport {
  from: string[];
  pulled: number;
  to?: string;
  pushed: number;
  present: number;
  pruned: number;
  /** Wall time of the export (push and prune), ms. */
  exportMs: number;
  /** Why the export failed (the build itself succeeded). */
  exportWarning?: string;
}

/**
 * --cache-from (any number, asked in order) and --cache-to for one build. The locations are parsed and
 * their credentials read before the build starts (a malformed one is a one-line error then); reaching
 * them is not: an unreachable cache only slows the build down (from) or is a warning after it (to).
 */
export class RegistryCaches {
  private constructor(private readonly from: RegistryStepCache[], private readonly to: RegistryStepCache | undefined, private readonly log: Logger) {}

  static async open(o: { from?: readonly string[]; to?: string; maxEntryBytes: number }, log: Logger): Promise<RegistryCaches | undefined> {
    if (!o.from?.length && !o.to) return undefined;
    const from = await Promise.all((o.from ?? []).map((spec) => RegistryStepCache.open(spec, log, { maxEntryBytes: o.maxEntryBytes })));
    const to = o.to ? await RegistryStepCache.open(o.to, log, { maxEntryBytes: o.maxEntryBytes }) : undefined;
    return new RegistryCaches(from, to, log);
  }

  /** The vm engine's remote cache: the first --cache-from that has the step (undefined without --cache-from). */
  remote(): { pull(key: string, local: StepCache): Promise<boolean>; rejected(key: string): void } | undefined {
    if (!this.from.length) return undefined;
    const from = new Map<string, RegistryStepCache>();
    return {
      pull: async (key, local) => {
        for (const c of this.from) {
          if (await c.pull(key, local)) {
            from.set(key, c);
            return true;
          }
        }
        return false;
      },
      rejected: (key) => from.get(key)?.rejected(key, 'it does not match the digest it was stored with'),
    };
  }

  /** Push the build's entries to --cache-to, then prune it to `maxBytes`; a failure is a warning, never the build's. */
  async export(keys: string[], local: StepCache, maxBytes?: number): Promise<RegistryCacheReport> {
    const started = Date.now();
    const report: RegistryCacheReport = { from: this.from.map((c) => c.where), pulled: this.from.reduce((a, c) => a + c.pulled, 0), pushed: 0, present: 0, pruned: 0, exportMs: 0 };
    if (!this.to) return report;
    report.to = this.to.where;
    // A step pulled bad from the --cache-from that is also the --cache-to is pushed afresh.
    for (const c of this.from) if (c.where === this.to.where) c.badKeys().forEach((k) => this.to!.markBad(k));
    try {
      const r = await this.to.push(keys, local);
      report.pushed = r.pushed.length;
      report.present = r.present.length;
      if (maxBytes !== undefined) report.pruned = (await this.to.prune(maxBytes)).length;
    } catch (err) {
      // The image is built: whatever the registry did (refused, broke the connection, answered nonsense), a warning.
      if (err instanceof CancelledError) throw err;
      report.exportWarning = (err as Error).message;
      this.log.warn('the step cache export failed (the image is built and stored)', { cache: this.to.where, reason: (err as Error).message });
    }
    report.exportMs = Date.now() - started;
    return report;
  }
}
