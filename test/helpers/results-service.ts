import * as http from 'node:http';
import type * as net from 'node:net';

/**
 * A local stand-in for the runner's Actions results service and the blob storage behind it — the
 * requests @actions/artifact makes: Twirp `ArtifactService/CreateArtifact` (a name already used in the
 * run is refused as the service does), Azure block-blob `PUT ?comp=block` and `?comp=blocklist` on the
 * signed URL, and `FinalizeArtifact` with the content's size and sha256.
 */
export interface ResultsService {
  env: NodeJS.ProcessEnv;
  artifacts: Map<string, { body: Buffer; finalized?: { size: string; hash: string } }>;
  close(): void;
}

function b64url(o: unknown): string {
  return Buffer.from(JSON.stringify(o)).toString('base64url');
}

export async function startResultsService(): Promise<ResultsService> {
  const artifacts: ResultsService['artifacts'] = new Map();
  const blocks = new Map<string, Buffer>();
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const base = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
      const url = new URL(req.url!, base);
      const json = (code: number, j: unknown): void => { res.writeHead(code, { 'content-type': 'application/json' }); res.end(JSON.stringify(j)); };
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
  return { env: { ACTIONS_RUNTIME_TOKEN: token, ACTIONS_RESULTS_URL: `http://127.0.0.1:${port}/` }, artifacts, close: () => srv.close() };
}
