import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import * as path from 'node:path';
import { ARTIFACT_TYPE, METADATA_MEDIA_TYPE, ROOTFS_MEDIA_TYPE } from '../../src/oci/artifact.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { UserError } from '../../src/util/errors.js';
import { lines, runCli, tempDir } from '../helpers/cli.js';

/**
 * Hostile peers on 127.0.0.1 (issue 12, items 5 and 7): a registry whose blobs and manifests never end,
 * one that trickles a byte every few seconds, HTTP servers with endless or over-declared bodies, and
 * one whose content changes on every request. Real servers, the real registry client and the real CLI.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const outerEnv = (): NodeJS.ProcessEnv => env;

interface Hostile { url: string; host: string; hits: Map<string, number>; sent: () => number; close(): Promise<void> }

/** An HTTP server answering by path; counts requests per path and every body byte it managed to send. */
async function hostile(handler: (p: string, req: http.IncomingMessage, res: http.ServerResponse, count: (n: number) => void, hit: number) => void): Promise<Hostile> {
  const hits = new Map<string, number>();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let sent = 0;
  const server = http.createServer((req, res) => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    const n = (hits.get(p) ?? 0) + 1;
    hits.set(p, n);
    handler(p, req, res, (k) => (sent += k), n);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    hits,
    sent: () => sent,
    close: () => {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** Writes 64 KiB chunks as fast as the peer takes them, until it goes away. */
function endless(res: http.ServerResponse, count: (n: number) => void): void {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const pump = (): void => {
    while (!res.destroyed) {
      count(chunk.length);
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
  };
  res.on('close', () => res.removeAllListeners('drain'));
  pump();
}

/** One byte every `ms` until the peer goes away. */
function trickle(res: http.ServerResponse, count: (n: number) => void, ms: number): void {
  const t = setInterval(() => {
    if (res.destroyed) return clearInterval(t);
    count(1);
    res.write('x');
  }, ms);
  res.on('close', () => clearInterval(t));
}

const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A firebuild artifact manifest whose metadata layer declares 100 bytes. */
const META_DIGEST = sha('declared but never served');
const manifest = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  artifactType: ARTIFACT_TYPE,
  config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha('{}'), size: 2 },
  layers: [
    { mediaType: ROOTFS_MEDIA_TYPE, digest: sha('rootfs'), size: 6 },
    { mediaType: METADATA_MEDIA_TYPE, digest: META_DIGEST, size: 100 },
  ],
  annotations: { 'dev.firebuild.tag': 'evil/endless:1' },
}));

let registry: Hostile;

beforeAll(async () => {
  work = await tempDir('firebuild-downloads-');
  env = { FIREBUILD_HOME: path.join(work, 'home'), FIREBUILD_LOG_LEVEL: 'error' };
  registry = await hostile((p, _req, res, count) => {
    if (p === '/v2/evil/endless/manifests/1') {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(manifest);
    } else if (p.startsWith('/v2/evil/endless/blobs/')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      endless(res, count);
    } else if (p === '/v2/evil/bigmanifest/manifests/1') {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
      endless(res, count);
    } else if (p.startsWith('/v2/evil/trickle/blobs/')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      trickle(res, count, 3000);
    } else if (p === '/v2/evil/silent/manifests/1') {
      // Never answers: the stall timeout covers the wait for the headers too.
    } else if (p === '/v2/evil/liar/manifests/1') {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': String(10 * 1024 ** 3) });
      endless(res, count);
    } else {
      res.writeHead(404).end();
    }
  });
});

afterAll(async () => {
  await registry.close();
  fs.rmSync(work, { recursive: true, force: true });
});

/** Runs `fn` with these environment variables set in this process. */
async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const old = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(old)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe('registry downloads are bounded', () => {
  test('an endless blob is cut at its declared size: refused within seconds, one line, no file left', async () => {
    const c = new RegistryClient(registry.host);
    const dest = path.join(work, 'blob');
    const t0 = Date.now();
    const err = await c.getBlob('evil/endless', META_DIGEST, 100, dest).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/larger than the 100 bytes its manifest declares/);
    expect((err as Error).message).not.toContain('\n');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(fs.existsSync(dest)).toBe(false);
    // What the server got out before the client cut it: socket buffers, not gigabytes.
    expect(registry.sent()).toBeLessThan(64 * 1024 ** 2);
  }, 30_000);

  test('image pull of an artifact whose blob never ends: exit 2 with one line, nothing stored', async () => {
    const r = await runCli(['image', 'pull', `${registry.host}/evil/endless:1`], { env });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/blob sha256:[0-9a-f]{64} from 127\.0\.0\.1:\d+ is larger than the 100 bytes its manifest declares/);
    expect(fs.existsSync(path.join(work, 'home', 'rootfs', 'evil'))).toBe(false);
  }, 60_000);

  test('an endless manifest is refused at 4 MiB: memory stays flat', async () => {
    const c = new RegistryClient(registry.host);
    const before = process.memoryUsage().rss;
    const err = await c.getManifest('evil/bigmanifest', '1', ['application/vnd.oci.image.manifest.v1+json']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/the manifest of 127\.0\.0\.1:\d+\/evil\/bigmanifest:1 is larger than 4 MiB/);
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 1024 ** 2);
    // A manifest whose Content-Length is over the limit is refused before its body is read.
    const liar = await c.getManifest('evil/liar', '1', ['application/vnd.oci.image.manifest.v1+json']).catch((e: unknown) => e);
    expect((liar as Error).message).toMatch(/larger than 4 MiB/);
  }, 30_000);

  test('a trickling blob and a registry that never answers hit the stall timeout (FIREBUILD_DOWNLOAD_STALL_TIMEOUT) with one line', async () => {
    const c = new RegistryClient(registry.host);
    await withEnv({ FIREBUILD_DOWNLOAD_STALL_TIMEOUT: '1' }, async () => {
      const t0 = Date.now();
      const err = await c.getBlob('evil/trickle', META_DIGEST, 100, path.join(work, 'trickled')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toMatch(/^blob sha256:[0-9a-f]{64} from 127\.0\.0\.1:\d+ sent nothing for 1 s: giving up \(allow longer stalls with FIREBUILD_DOWNLOAD_STALL_TIMEOUT=<seconds>\)$/);
      expect(Date.now() - t0).toBeLessThan(8000);
      expect(fs.existsSync(path.join(work, 'trickled'))).toBe(false);
      const silent = await c.getManifest('evil/silent', '1', ['application/vnd.oci.image.manifest.v1+json']).catch((e: unknown) => e);
      expect((silent as Error).message).toMatch(/^the manifest of 127\.0\.0\.1:\d+\/evil\/silent:1 sent nothing for 1 s/);
    });
    // The overall deadline holds even while bytes keep coming.
    await withEnv({ FIREBUILD_DOWNLOAD_TIMEOUT: '2', FIREBUILD_DOWNLOAD_STALL_TIMEOUT: '10' }, async () => {
      const err = await c.getBlob('evil/trickle', META_DIGEST, 100, path.join(work, 'trickled')).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/did not finish within 2 s: giving up \(allow more with FIREBUILD_DOWNLOAD_TIMEOUT=<seconds>\)$/);
    });
  }, 60_000);
});

describe('HTTP sources and ADD URLs are bounded', () => {
  let web: Hostile;
  // The hostile servers listen on 127.0.0.1, which ADD URLs may only reach when allowed (net/host-only.ts).
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    env = { ...outerEnv(), FIREBUILD_ALLOW_HOST_URLS: '1' };
    web = await hostile((p, _req, res, count) => {
      if (p === '/endless/Dockerfile' || p === '/endless.bin') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        endless(res, count);
      } else if (p === '/declared-huge.bin') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(100 * 1024 ** 3) });
        endless(res, count);
      } else if (p === '/trickle.bin') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        trickle(res, count, 3000);
      } else {
        res.writeHead(404).end();
      }
    });
  });
  afterAll(() => web.close());

  test('an endless Dockerfile over HTTP is refused at 1 MiB with one line', async () => {
    const r = await runCli(['rootfs', '--plan', '--dockerfile', `${web.url}/endless/Dockerfile`], { env });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain(`${web.url}/endless/Dockerfile is larger than 1 MiB, the limit for a Dockerfile or .dockerignore fetched over HTTP`);
  }, 60_000);

  test('ADD of an endless URL, of one declaring 100 GiB, and of a trickle: refused with one line (the cap from --max-download-size or FIREBUILD_MAX_DOWNLOAD_SIZE)', async () => {
    const dir = path.join(work, 'add-endless');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM scratch\nADD ${web.url}/endless.bin /x\n`);
    const t0 = Date.now();
    const a = await runCli(['rootfs', '--plan', '--dockerfile', path.join(dir, 'Dockerfile')], { env: { ...env, FIREBUILD_MAX_DOWNLOAD_SIZE: '8M' } });
    expect(a.code).toBe(2);
    expect(lines(a.stderr)).toHaveLength(1);
    expect(a.stderr).toContain(`${web.url}/endless.bin is larger than 8 MiB, the download limit: raise it with --max-download-size or FIREBUILD_MAX_DOWNLOAD_SIZE`);
    expect(Date.now() - t0).toBeLessThan(30_000);
    // The build itself, with the flag (the vm engine: FROM scratch boots nothing).
    const b = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/endless:1', '--max-download-size', '2M'], { env });
    expect(b.code).toBe(2);
    expect(lines(b.stderr)).toHaveLength(1);
    expect(b.stderr).toMatch(/Dockerfile:2: .*endless\.bin is larger than 2 MiB, the download limit/);
    // The default cap (4 GiB) refuses a declared 100 GiB before reading the body.
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM scratch\nADD ${web.url}/declared-huge.bin /x\n`);
    const sentBefore = web.sent();
    const c = await runCli(['rootfs', '--plan', '--dockerfile', path.join(dir, 'Dockerfile')], { env });
    expect(c.code).toBe(2);
    expect(c.stderr).toContain('declared-huge.bin is larger than 4 GiB, the download limit');
    expect(web.sent() - sentBefore).toBeLessThan(4 * 1024 ** 3);
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM scratch\nADD ${web.url}/trickle.bin /x\n`);
    const d = await runCli(['rootfs', '--plan', '--dockerfile', path.join(dir, 'Dockerfile')], { env: { ...env, FIREBUILD_DOWNLOAD_STALL_TIMEOUT: '1' } });
    expect(d.code).toBe(2);
    expect(lines(d.stderr)).toHaveLength(1);
    expect(d.stderr).toContain(`GET ${web.url}/trickle.bin sent nothing for 1 s: giving up`);
  }, 120_000);
});

describe('ADD <url> is fetched once per build', () => {
  let env: NodeJS.ProcessEnv;
  beforeAll(() => {
    env = { ...outerEnv(), FIREBUILD_ALLOW_HOST_URLS: '1' };
  });
  test('a URL whose content changes per request: the build holds the first (only) fetch, the step key carries its digest, a changed URL re-runs the step', async () => {
    const srv = await hostile((_p, _req, res, _count, hit) => {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`content of request ${hit}\n`);
    });
    try {
      const dir = path.join(work, 'add-once');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM scratch\nADD ${srv.url}/changing.txt /changing.txt\n`);
      const build = async (): Promise<{ content: string; executed: number; cached: number }> => {
        const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/add-once:1', '--overwrite'], { env });
        expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: 0 });
        const out = JSON.parse(r.stdout) as { rootfs: string; executed: number; cached: number };
        const content = execFileSync('debugfs', ['-R', 'cat /changing.txt', out.rootfs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
        return { content, executed: out.executed, cached: out.cached };
      };
      const stepKeys = (): string[] => fs.readdirSync(path.join(work, 'home', 'cache', 'vm-steps')).filter((n) => n.endsWith('.json')).sort();
      const one = await build();
      expect(srv.hits.get('/changing.txt')).toBe(1);
      expect(one.content).toBe('content of request 1\n');
      expect(one.executed).toBe(1);
      const keysAfterOne = stepKeys();
      expect(keysAfterOne).toHaveLength(1);
      // The plan records the digest of what the build saw: the --plan of the same Dockerfile shows the content of its own fetch.
      const plan = await runCli(['rootfs', '--plan', '--dockerfile', path.join(dir, 'Dockerfile')], { env });
      const res = (JSON.parse(plan.stdout) as { stages: { steps: { resources?: { url?: string; sha256?: string }[] }[] }[] }).stages[0]!.steps[0]!.resources![0]!;
      expect(res).toMatchObject({ url: `${srv.url}/changing.txt`, sha256: createHash('sha256').update('content of request 2\n').digest('hex') });
      expect(srv.hits.get('/changing.txt')).toBe(2);
      // The next build sees new content: its step key differs, so the step runs again and holds that content.
      const two = await build();
      expect(srv.hits.get('/changing.txt')).toBe(3);
      expect(two.content).toBe('content of request 3\n');
      expect(two.executed).toBe(1);
      expect(two.cached).toBe(0);
      const keysAfterTwo = stepKeys();
      expect(keysAfterTwo).toHaveLength(2);
      expect(keysAfterTwo).toEqual(expect.arrayContaining(keysAfterOne));
    } finally {
      await srv.close();
    }
  }, 180_000);
});
