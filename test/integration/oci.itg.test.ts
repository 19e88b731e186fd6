import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { ARTIFACT_TYPE, METADATA_MEDIA_TYPE, ROOTFS_MEDIA_TYPE } from '../../src/oci/artifact.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { lines, runCli, tempDir } from '../helpers/cli.js';
import { freePort } from '../helpers/vm.js';

/**
 * `image push` / `image pull` against real registries on 127.0.0.1: the shared one on :5000 (no auth)
 * and one this test starts with htpasswd auth. The pulled image must be the pushed one, digest for digest.
 */
const REGISTRY = '127.0.0.1:5000';
const bcrypt = createRequire(import.meta.url)('bcryptjs') as { hashSync(pw: string, rounds: number): string };
let work: string;
let env: NodeJS.ProcessEnv;
let authRegistry: ChildProcess | undefined;
let authPort = 0;
const repo = `fbtest/hello-${process.pid}`;
const errorLines = (s: string): string[] => lines(s).filter((l) => l.startsWith('error:'));
const storeOf = (name: string): NodeJS.ProcessEnv => ({ FIREBUILD_HOME: path.join(work, name) });

beforeAll(async () => {
  work = await tempDir();
  env = storeOf('home');
  const b = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.resolve('examples/hello/Dockerfile'), '--tag', 'examples/hello:1', '--free-space', '32M'], { env });
  expect(b.code).toBe(0);
  // A second registry that wants a password.
  authPort = await freePort();
  fs.writeFileSync(path.join(work, 'htpasswd'), `ci:${bcrypt.hashSync('s3cret', 5)}\n`);
  fs.writeFileSync(path.join(work, 'auth-registry.yml'), [
    'version: 0.1', 'log:', '  level: error', 'storage:', '  filesystem:', `    rootdirectory: ${path.join(work, 'auth-registry')}`,
    'auth:', '  htpasswd:', '    realm: firebuild-test', `    path: ${path.join(work, 'htpasswd')}`, 'http:', `  addr: 127.0.0.1:${authPort}`, '',
  ].join('\n'));
  authRegistry = spawn('docker-registry', ['serve', path.join(work, 'auth-registry.yml')], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const ok = await fetch(`http://127.0.0.1:${authPort}/v2/`).then((r) => r.status === 401).catch(() => false);
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
});
afterAll(() => {
  authRegistry?.kill('SIGKILL');
  fs.rmSync(work, { recursive: true, force: true });
});

describe('image push / image pull (OCI artifacts)', () => {
  test('push writes a firebuild artifact; pull into an empty store yields the same sha256, also by digest', async () => {
    const p = await runCli(['image', 'push', 'examples/hello:1', `${REGISTRY}/${repo}:1`], { env });
    expect({ code: p.code, errors: errorLines(p.stderr) }).toEqual({ code: 0, errors: [] });
    const pushed = JSON.parse(p.stdout) as { digest: string; rootfsSha256: string };
    const original = JSON.parse((await runCli(['image', 'inspect', 'examples/hello:1'], { env })).stdout) as { metadata: { rootfs: { sha256: string }; config: unknown } };
    expect(pushed.rootfsSha256).toBe(original.metadata.rootfs.sha256);

    const res = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/1`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const body = Buffer.from(await res.arrayBuffer());
    expect(`sha256:${createHash('sha256').update(body).digest('hex')}`).toBe(pushed.digest);
    const manifest = JSON.parse(body.toString()) as { artifactType: string; layers: { mediaType: string; annotations: Record<string, string> }[]; annotations: Record<string, string> };
    expect(manifest.artifactType).toBe(ARTIFACT_TYPE);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([ROOTFS_MEDIA_TYPE, METADATA_MEDIA_TYPE]);
    expect(manifest.layers[0]!.annotations['dev.firebuild.rootfs.sha256']).toBe(original.metadata.rootfs.sha256);
    expect(manifest.annotations).toMatchObject({ 'dev.firebuild.tag': 'examples/hello:1', 'org.opencontainers.image.version': '1' });
    // A local Dockerfile's path is not a source URL: no source annotation (test/integration/supply.itg.test.ts has the rest).
    expect(manifest.annotations['org.opencontainers.image.source']).toBeUndefined();

    const empty = storeOf('pulled');
    const q = await runCli(['image', 'pull', `${REGISTRY}/${repo}:1`], { env: empty });
    expect({ code: q.code, errors: errorLines(q.stderr) }).toEqual({ code: 0, errors: [] });
    const got = JSON.parse((await runCli(['image', 'inspect', 'examples/hello:1'], { env: empty })).stdout) as { rootfs: string; metadata: { rootfs: { sha256: string }; source: { kind: string; ref: string }; config: unknown } };
    expect(got.metadata.rootfs.sha256).toBe(original.metadata.rootfs.sha256);
    expect(got.metadata.source).toEqual({ kind: 'registry', ref: `${REGISTRY}/${repo}:1@${pushed.digest}` });
    expect(got.metadata.config).toEqual(original.metadata.config);
    // Sparse, as the store keeps images.
    expect(fs.statSync(got.rootfs).blocks * 512).toBeLessThan(fs.statSync(got.rootfs).size);

    const byDigest = await runCli(['image', 'pull', `${REGISTRY}/${repo}@${pushed.digest}`, '--tag', 'pulled/hello:digest'], { env: empty });
    expect(JSON.parse(byDigest.stdout)).toMatchObject({ tag: 'pulled/hello:digest', sha256: original.metadata.rootfs.sha256 });
  });

  test('a rootfs that does not match its metadata is refused and nothing is stored', async () => {
    // Re-publish the artifact with metadata claiming another rootfs digest.
    const reg = new RegistryClient(REGISTRY);
    const m = JSON.parse((await reg.getManifest(repo, '1', ['application/vnd.oci.image.manifest.v1+json'])).body.toString()) as { layers: { mediaType: string; digest: string; size: number }[] };
    const metaLayer = m.layers[1]!;
    const metaFile = path.join(work, 'meta.json');
    await reg.getBlob(repo, metaLayer.digest, metaLayer.size, metaFile);
    const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8'));
    meta.rootfs.sha256 = '0'.repeat(64);
    const bad = Buffer.from(JSON.stringify(meta));
    const badDigest = `sha256:${createHash('sha256').update(bad).digest('hex')}`;
    await reg.pushBlob(repo, { data: bad }, badDigest, bad.length);
    m.layers[1] = { ...metaLayer, digest: badDigest, size: bad.length };
    await reg.putManifest(repo, 'tampered', Buffer.from(JSON.stringify(m)), 'application/vnd.oci.image.manifest.v1+json');

    const empty = storeOf('tampered');
    const r = await runCli(['image', 'pull', `${REGISTRY}/${repo}:tampered`], { env: empty });
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(/^error: the rootfs of .* has sha256 [0-9a-f]{64}, its metadata says 0{64}: refusing it/)]);
    expect(JSON.parse((await runCli(['image', 'ls', '--json'], { env: empty })).stdout)).toEqual([]);
  });

  test('a registry that wants a password: refused without or with a wrong one; --password-stdin and the Docker config work', async () => {
    const ref = `127.0.0.1:${authPort}/acme/hello:1`;
    const none = await runCli(['image', 'push', 'examples/hello:1', ref], { env: { ...env, DOCKER_CONFIG: path.join(work, 'no-docker') } });
    expect(none.code).toBe(2);
    expect(errorLines(none.stderr)).toEqual([`error: registry 127.0.0.1:${authPort} needs credentials: pass --username and --password-stdin, or docker login 127.0.0.1:${authPort}`]);
    const wrong = await runCli(['image', 'push', 'examples/hello:1', ref, '--username', 'ci', '--password-stdin'], { env, input: 'nope\n' });
    expect(errorLines(wrong.stderr)).toEqual([expect.stringMatching(/^error: registry 127\.0\.0\.1:\d+ refused the credentials/)]);
    expect(wrong.stderr).not.toContain('nope');
    const ok = await runCli(['image', 'push', 'examples/hello:1', ref, '--username', 'ci', '--password-stdin'], { env, input: 's3cret\n' });
    expect({ code: ok.code, errors: errorLines(ok.stderr) }).toEqual({ code: 0, errors: [] });
    // The Docker config's credentials, as `docker login` leaves them.
    const dockerDir = path.join(work, 'docker');
    fs.mkdirSync(dockerDir);
    fs.writeFileSync(path.join(dockerDir, 'config.json'), JSON.stringify({ auths: { [`127.0.0.1:${authPort}`]: { auth: Buffer.from('ci:s3cret').toString('base64') } } }));
    const pulled = await runCli(['image', 'pull', ref, '--tag', 'acme/hello:1'], { env: { ...storeOf('authpull'), DOCKER_CONFIG: dockerDir } });
    expect({ code: pulled.code, errors: errorLines(pulled.stderr) }).toEqual({ code: 0, errors: [] });
  });

  test.each([
    ['a reference without a registry', ['image', 'push', 'examples/hello:1', 'acme/hello:1'], /^error: invalid registry reference 'acme\/hello:1': the first part must be a registry host/],
    ['an artifact that does not exist', ['image', 'pull', `${REGISTRY}/fbtest/nothing-here:1`], /^error: 127\.0\.0\.1:5000\/fbtest\/nothing-here:1 not found in the registry/],
    ['a registry that does not answer', ['image', 'pull', '127.0.0.1:9/acme/x:1'], /^error: cannot reach registry 127\.0\.0\.1:9/],
    ['an image that is already stored', ['image', 'pull', `${REGISTRY}/fbtest/hello-${process.pid}:1`], /^error: image examples\/hello:1 already exists: pass --overwrite/],
    ['--username without --password-stdin', ['image', 'pull', `${REGISTRY}/x/y:1`, '--username', 'u'], /^error: --username needs --password-stdin/],
  ])('bad input: %s is one line, exit 2', async (_n, args, want) => {
    const r = await runCli(args, { env });
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(want)]);
  });
});
