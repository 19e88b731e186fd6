import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { ANNOTATION_TAG, ARTIFACT_TYPE, METADATA_MEDIA_TYPE, ROOTFS_MEDIA_TYPE } from '../../src/oci/artifact.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { ImageMetadataSchema, METADATA_SCHEMA_VERSION } from '../../src/store/metadata.js';
import { BIN, REPO, tempDir } from '../helpers/cli.js';

/**
 * SIGINT of `firebuild image pull` in the middle of the rootfs download (the runner's first cancel signal, a
 * terminal's Ctrl-C): the process exits 130 and leaves no firebuild-pull-* temp dir. The artifact is on the
 * shared registry (127.0.0.1:5000); the CLI pulls it through a proxy here that slows blobs down, so the
 * signal lands mid-download every time.
 */
const REGISTRY = '127.0.0.1:5000';
const repo = `fbtest/cancel-${process.pid}`;
// The real entry point: bin/firebuild.js installs the cancel handlers (util/cleanup.ts exitOnSignals).
const ENTRY = [BIN];

let work: string;
let proxy: http.Server;
let proxyPort = 0;

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

beforeAll(async () => {
  work = await tempDir();
  // The artifact: valid metadata, a 48 MiB rootfs blob (random: the pull is stopped before it is checked).
  const reg = new RegistryClient(REGISTRY);
  const big = path.join(work, 'rootfs.ext4.zst');
  fs.writeFileSync(big, randomBytes(48 << 20));
  const bigDigest = `sha256:${createHash('sha256').update(fs.readFileSync(big)).digest('hex')}`;
  const meta = Buffer.from(JSON.stringify(ImageMetadataSchema.parse({
    schemaVersion: METADATA_SCHEMA_VERSION, tag: 'cancel/big:1', type: 'rootfs', created: new Date().toISOString(),
    source: { kind: 'test', ref: 'cancel-pull test' }, config: {}, rootfs: { file: 'rootfs.ext4', sha256: 'a'.repeat(64), apparentSize: 64 << 20 },
  })));
  const empty = Buffer.from('{}');
  await reg.pushBlob(repo, { data: empty }, sha(empty), empty.length);
  await reg.pushBlob(repo, { file: big }, bigDigest, 48 << 20);
  await reg.pushBlob(repo, { data: meta }, sha(meta), meta.length);
  const manifest = {
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: ARTIFACT_TYPE,
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(empty), size: empty.length },
    layers: [{ mediaType: ROOTFS_MEDIA_TYPE, digest: bigDigest, size: 48 << 20 }, { mediaType: METADATA_MEDIA_TYPE, digest: sha(meta), size: meta.length }],
    annotations: { [ANNOTATION_TAG]: 'cancel/big:1' },
  };
  await reg.putManifest(repo, '1', Buffer.from(JSON.stringify(manifest)), manifest.mediaType);
  // The slow path: every response passed on at about 4 MiB/s.
  proxy = http.createServer((req, res) => {
    const up = http.request({ host: '127.0.0.1', port: 5000, path: req.url, method: req.method, headers: { ...req.headers, host: REGISTRY }, agent: false }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.on('data', (c: Buffer) => {
        for (let i = 0; i < c.length; i += 64 << 10) res.write(c.subarray(i, i + (64 << 10)));
        ur.pause();
        setTimeout(() => ur.resume(), Math.ceil(c.length / (4 << 10)));
      });
      ur.on('end', () => res.end());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  proxyPort = (proxy.address() as { port: number }).port;
}, 120_000);

afterAll(async () => {
  proxy?.closeAllConnections();
  await new Promise((resolve) => proxy?.close(resolve));
  fs.rmSync(work, { recursive: true, force: true });
});

/** The firebuild-pull-* dirs under `tmp`, with the size of the rootfs blob downloaded so far. */
function pullDirs(tmp: string): { dir: string; bytes: number }[] {
  return fs.readdirSync(tmp).filter((n) => n.startsWith('firebuild-pull-')).map((n) => {
    const f = path.join(tmp, n, 'rootfs.ext4.zst');
    return { dir: n, bytes: fs.existsSync(f) ? fs.statSync(f).size : 0 };
  });
}

describe('cancelled pull', () => {
  test('SIGINT mid-download: exit 130, no firebuild-pull-* dir left, nothing stored', async () => {
    const tmp = path.join(work, 'tmp');
    const home = path.join(work, 'home');
    fs.mkdirSync(tmp);
    const child = spawn(ENTRY[0]!, [...ENTRY.slice(1), 'image', 'pull', `127.0.0.1:${proxyPort}/${repo}:1`], {
      cwd: REPO, env: { ...process.env, TMPDIR: tmp, FIREBUILD_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    // Wait until the rootfs blob is part-way down.
    let seen: { dir: string; bytes: number }[] = [];
    for (let i = 0; i < 600 && !(seen[0] && seen[0].bytes > 1 << 20); i++) {
      await new Promise((r) => setTimeout(r, 50));
      seen = pullDirs(tmp);
    }
    expect({ dirs: seen.length, stderr: seen.length === 1 ? '' : stderr }).toEqual({ dirs: 1, stderr: '' });
    expect(seen[0]!.bytes).toBeGreaterThan(1 << 20);
    expect(seen[0]!.bytes).toBeLessThan(48 << 20);
    child.kill('SIGINT');
    const code = await exited;
    expect({ code, left: pullDirs(tmp) }).toEqual({ code: 130, left: [] });
    expect(stderr).toMatch(/SIGINT received: removing temp dir .*firebuild-pull-/);
    expect(fs.existsSync(path.join(home, 'rootfs', 'cancel', 'big'))).toBe(false);
  }, 120_000);
});
