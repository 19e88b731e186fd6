import * as http from 'node:http';
import type * as net from 'node:net';

/**
 * A local stand-in for the runner's Actions results service and the blob storage behind it — the
 * requests @actions/artifact makes: Twirp `ArtifactService/CreateArtifact` (a name already used in the
 * run is refused as the service does), Azure block-blob `PUT ?comp=block` and `?comp=blocklist` on the
 * signed URL, and `FinalizeArtifact` with the content's size and sha256. And the requests @actions/cache
 * (cache service v2) makes, in Twirp JSON with proto field names as its client sends them:
 * `CacheService/GetCacheEntryDownloadURL` (exact key, then restore-key prefixes matching the newest entry, same version),
 * `CreateCacheEntry` (an existing key+version is refused: entries are immutable), the blob upload,
 * `FinalizeCacheEntryUpload` (the size must match the upload), and a GET of the signed download URL.
 */
export interface CacheEntry { key: string; version: string; body: Buffer; finalized: boolean }

export interface ResultsService {
  env: NodeJS.ProcessEnv;
  artifacts: Map<string, { body: Buffer; finalized?: { size: string; hash: string } }>;
  caches: Map<string, CacheEntry>;
  /** Every Twirp method called, in order. */
  calls: string[];
  close(): void;
}

function b64url(o: unknown): string {
  return Buffer.from(JSON.stringify(o)).toString('base64url');
}

export async function startResultsService(): Promise<ResultsService> {
  const artifacts: ResultsService['artifacts'] = new Map();
  const caches: ResultsService['caches'] = new Map();
  const calls: string[] = [];
  const blocks = new Map<string, Buffer>();
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const base = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
      const url = new URL(req.url!, base);
      const json = (code: number, j: unknown): void => { res.writeHead(code, { 'content-type': 'application/json' }); res.end(JSON.stringify(j)); };
      const twirp = /\/twirp\/github\.actions\.results\.api\.v1\.(\w+)\/(\w+)$/.exec(url.pathname);
      if (twirp) calls.push(`${twirp[1]}/${twirp[2]}`);
      const cacheId = (key: string, version: string): string => `${key}@${version}`;
      if (req.method === 'POST' && url.pathname.endsWith('CacheService/GetCacheEntryDownloadURL')) {
        const q = JSON.parse(body.toString()) as { key: string; restore_keys?: string[]; version: string };
        const done = [...caches.values()].filter((e) => e.finalized && e.version === q.version);
        // A restore key matches the newest entry under its prefix, as GitHub's service does.
        const hit = done.find((e) => e.key === q.key) ?? (q.restore_keys ?? []).map((p) => [...done].reverse().find((e) => e.key.startsWith(p))).find(Boolean);
        if (!hit) return json(200, { ok: false, signed_download_url: '', matched_key: '' });
        return json(200, { ok: true, signed_download_url: `${base}/devstoreaccount1/caches/${encodeURIComponent(cacheId(hit.key, hit.version))}?sig=test`, matched_key: hit.key });
      }
      if (req.method === 'POST' && url.pathname.endsWith('CacheService/CreateCacheEntry')) {
        const q = JSON.parse(body.toString()) as { key: string; version: string };
        const id = cacheId(q.key, q.version);
        if (caches.has(id)) return json(409, { code: 'already_exists', msg: 'cache entry with the same key, version, and scope already exists' });
        caches.set(id, { key: q.key, version: q.version, body: Buffer.alloc(0), finalized: false });
        return json(200, { ok: true, signed_upload_url: `${base}/devstoreaccount1/caches/${encodeURIComponent(id)}?sig=test` });
      }
      if (req.method === 'POST' && url.pathname.endsWith('CacheService/FinalizeCacheEntryUpload')) {
        const q = JSON.parse(body.toString()) as { key: string; version: string; size_bytes: string };
        const e = caches.get(cacheId(q.key, q.version));
        if (!e) return json(404, { code: 'not_found', msg: 'no such cache entry' });
        if (String(e.body.length) !== String(q.size_bytes)) return json(400, { code: 'invalid_argument', msg: `size ${q.size_bytes} does not match the ${e.body.length} bytes uploaded` });
        e.finalized = true;
        return json(200, { ok: true, entry_id: String(caches.size) });
      }
      const cacheBlob = /^\/devstoreaccount1\/caches\/(.+)$/.exec(url.pathname);
      if (cacheBlob) {
        const e = caches.get(decodeURIComponent(cacheBlob[1]!));
        if (!e) return json(404, { code: 'not_found', msg: 'no such blob' });
        if (req.method === 'GET') {
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(e.body.length) });
          return res.end(e.body);
        }
        const headers = { 'x-ms-request-id': '1', 'x-ms-version': '2024-05-04', etag: '"1"', 'last-modified': new Date().toUTCString() };
        const comp = url.searchParams.get('comp');
        if (comp === 'block') blocks.set(`cache/${cacheBlob[1]}/${url.searchParams.get('blockid')}`, body);
        else if (comp === 'blocklist') {
          const ids = [...body.toString().matchAll(/<(?:Latest|Uncommitted|Committed)>([^<]+)<\//g)].map((m) => m[1]!);
          e.body = Buffer.concat(ids.map((id) => blocks.get(`cache/${cacheBlob[1]}/${id}`) ?? Buffer.alloc(0)));
        } else e.body = body;
        res.writeHead(201, headers);
        return res.end();
      }
      if (req.method === 'POST' && url.pathname.endsWith('ArtifactService/CreateArtifact')) {
        const q = JSON.parse(body.toString()) as { name: string };
        if (artifacts.has(q.name)) return json(409, { code: 'already_exists', msg: `an artifact with this name already exists on the workflow run` });
        artifacts.set(q.name, { body: Buffer.alloc(0) });
        return json(200, { ok: true, signedUploadUrl: `${base}/devstoreaccount1/artifacts/${encodeURIComponent(q.name)}.zip?sig=test` });
      }
      if (req.method === 'POST' && url.pathname.endsWith('ArtifactService/FinalizeArtifact')) {
        const q = JSON.parse(body.toString()) as { name: string; size: string; hash?: { value: string } | string };
        const a = artifacts.get(q.name);
        if (!a) return json(404, { code: 'not_found', msg: 'no such artifact' });
        a.finalized = { size: String(q.size), hash: typeof q.hash === 'string' ? q.hash : (q.hash?.value ?? '') };
        return json(200, { ok: true, artifactId: '7' });
      }
      const blob = /^\/devstoreaccount1\/artifacts\/(.+)\.zip$/.exec(url.pathname);
      if (req.method === 'PUT' && blob) {
        const name = decodeURIComponent(blob[1]!);
        const headers = { 'x-ms-request-id': '1', 'x-ms-version': '2024-05-04', etag: '"1"', 'last-modified': new Date().toUTCString() };
        if (url.searchParams.get('comp') === 'block') {
          blocks.set(`${name}/${url.searchParams.get('blockid')}`, body);
          res.writeHead(201, headers);
          return res.end();
        }
        if (url.searchParams.get('comp') === 'blocklist') {
          const ids = [...body.toString().matchAll(/<(?:Latest|Uncommitted|Committed)>([^<]+)<\//g)].map((m) => m[1]!);
          const a = artifacts.get(name);
          if (a) a.body = Buffer.concat(ids.map((id) => blocks.get(`${name}/${id}`) ?? Buffer.alloc(0)));
          res.writeHead(201, headers);
          return res.end();
        }
        const a = artifacts.get(name);
        if (a) a.body = body;
        res.writeHead(201, headers);
        return res.end();
      }
      json(404, { code: 'not_found', msg: `not mocked: ${req.method} ${url.pathname}` });
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ scp: 'Actions.GenericRead Actions.Results:ce7f54c7-61c7-4aae-887f-30da475f5f1a:ca395085-040a-526b-2ce8-bdc85f692774' })}.sig`;
  return { env: { ACTIONS_RUNTIME_TOKEN: token, ACTIONS_RESULTS_URL: `http://127.0.0.1:${port}/`, ACTIONS_CACHE_SERVICE_V2: 'true' }, artifacts, caches, calls, close: () => srv.close() };
}
