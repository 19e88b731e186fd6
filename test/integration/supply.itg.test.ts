import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { INDEX_MEDIA_TYPE, listReferrers, MANIFEST_MEDIA_TYPE, referrersTag } from '../../src/oci/referrers.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { lines, runCli, tempDir } from '../helpers/cli.js';
import { startResultsService } from '../helpers/results-service.js';
import { annotations, runAction } from '../helpers/runner.js';
import { zipEntry } from '../helpers/zip.js';

/**
 * What a publish puts beside the image (docs/registry.md, "What is published"), read back from the
 * registry on 127.0.0.1:5000 (distribution's registry:2: no referrers API, so the referrers tag schema):
 * the manifest's org.opencontainers.image.* annotations, the SPDX SBOM as a referrer of the manifest
 * (its packages read from the ext4 image in-process: base-files with the version dpkg recorded), and no
 * build arg in anything pushed, uploaded or annotated unless asked. The CLI (`image push`, `image sbom`)
 * and the bundled publish action (oci and artifact targets; a results-service stand-in).
 */
const REGISTRY = '127.0.0.1:5000';
const SECRET = `tok-s3cret-${process.pid}-${Date.now()}`;
const TAG = 'fbtest/supply:1';
let work: string;
let env: NodeJS.ProcessEnv;
let baseFilesVersion: string;
let rootfs: string;
const reg = new RegistryClient(REGISTRY);
const errorLines = (s: string): string[] => lines(s).filter((l) => l.startsWith('error:'));

beforeAll(async () => {
  work = await tempDir('firebuild-supply-');
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  // A Debian image built with a build arg its RUN uses (and leaves nowhere in the file system).
  const b = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', 'FROM debian:bookworm-slim\nARG DEPLOY_TOKEN\nRUN test -n "$DEPLOY_TOKEN"\n', '--build-arg', `DEPLOY_TOKEN=${SECRET}`, '--tag', TAG, '--free-space', '16M'], { env });
  expect({ code: b.code, errors: errorLines(b.stderr) }).toEqual({ code: 0, errors: [] });
  rootfs = (JSON.parse(b.stdout) as { rootfs: string }).rootfs;
  // The store keeps the build args (the host's own record); only what is published leaves them out.
  expect(fs.readFileSync((JSON.parse(b.stdout) as { metadata: string }).metadata, 'utf8')).toContain(SECRET);
  // What dpkg recorded, read by another reader (debugfs) than the SBOM's.
  const status = execFileSync('debugfs', ['-R', 'cat /var/lib/dpkg/status', rootfs], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  baseFilesVersion = /^Package: base-files\n(?:[^\n]+\n)*?Version: (\S+)/m.exec(status)![1]!;
  expect(baseFilesVersion).toMatch(/^\d/);
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

async function manifestOf(repo: string, reference: string): Promise<{ body: Buffer; digest: string; json: { artifactType?: string; subject?: { digest: string; mediaType: string; size: number }; layers: { mediaType: string; digest: string; size: number }[]; annotations?: Record<string, string> } }> {
  const m = await reg.getManifest(repo, reference, [MANIFEST_MEDIA_TYPE]);
  return { body: m.body, digest: m.digest, json: JSON.parse(m.body.toString()) };
}

async function blob(repo: string, d: { digest: string; size: number }): Promise<Buffer> {
  const f = path.join(work, `blob-${d.digest.slice(7, 19)}`);
  await reg.getBlob(repo, d.digest, d.size, f);
  return fs.readFileSync(f);
}

/** Every byte the registry holds for this push, but the rootfs layer: manifests, the metadata, the referrers and their index. */
async function everythingButTheRootfs(repo: string, digest: string): Promise<string> {
  const m = await manifestOf(repo, digest);
  const parts = [m.body, await blob(repo, m.json.layers[1]!)];
  const refs = await listReferrers(reg, repo, digest);
  for (const r of refs.manifests) {
    const rm = await manifestOf(repo, r.digest);
    parts.push(rm.body, await blob(repo, rm.json.layers[0]!));
  }
  parts.push(Buffer.from(JSON.stringify(refs)));
  return Buffer.concat(parts).toString('utf8');
}

type Spdx = { spdxVersion: string; packages: { SPDXID: string; name: string; versionInfo?: string; externalRefs?: { referenceLocator: string }[] }[]; relationships: unknown[] };

describe('what image push publishes', () => {
  test('annotations from the image (no source for a local Dockerfile), the SBOM as a referrer of the manifest, no build arg anywhere', async () => {
    const repo = `fbtest/supply-cli-${process.pid}`;
    const p = await runCli(['image', 'push', TAG, `${REGISTRY}/${repo}:1`], { env });
    expect({ code: p.code, errors: errorLines(p.stderr) }).toEqual({ code: 0, errors: [] });
    const pushed = JSON.parse(p.stdout) as { digest: string; sbom: string };
    const m = await manifestOf(repo, '1');
    expect(m.digest).toBe(pushed.digest);
    const created = (JSON.parse((await runCli(['image', 'inspect', TAG], { env })).stdout) as { metadata: { created: string } }).metadata.created;
    // A local Dockerfile's path is never published as the source; nor is a revision claimed.
    expect(m.json.annotations).toEqual({ 'org.opencontainers.image.version': '1', 'org.opencontainers.image.created': created, 'dev.firebuild.tag': TAG });

    // The registry has no referrers API: the index is under the referrers tag, and names the SBOM.
    expect((await fetch(`http://${REGISTRY}/v2/${repo}/referrers/${pushed.digest}`)).status).toBe(404);
    const refs = await listReferrers(reg, repo, pushed.digest, 'application/spdx+json');
    expect(refs).toEqual({ via: 'tag', manifests: [expect.objectContaining({ mediaType: MANIFEST_MEDIA_TYPE, digest: pushed.sbom, artifactType: 'application/spdx+json' })] });
    const index = await reg.getManifest(repo, referrersTag(pushed.digest), [INDEX_MEDIA_TYPE]);
    expect(JSON.parse(index.body.toString())).toMatchObject({ mediaType: INDEX_MEDIA_TYPE });
    const sbomManifest = await manifestOf(repo, pushed.sbom);
    expect(sbomManifest.json).toMatchObject({ artifactType: 'application/spdx+json', subject: { mediaType: MANIFEST_MEDIA_TYPE, digest: pushed.digest, size: m.body.length }, layers: [{ mediaType: 'application/spdx+json' }] });
    const sbomBytes = await blob(repo, sbomManifest.json.layers[0]!);
    const sbom = JSON.parse(sbomBytes.toString()) as Spdx;
    expect(sbom.spdxVersion).toBe('SPDX-2.3');
    expect(sbom.packages.find((x) => x.name === 'base-files')).toMatchObject({
      versionInfo: baseFilesVersion,
      externalRefs: [expect.objectContaining({ referenceLocator: `pkg:deb/debian/base-files@${encodeURIComponent(baseFilesVersion)}?arch=amd64&distro=debian-12` })],
    });
    expect(sbom.packages.length).toBeGreaterThan(50);
    // Published again: the same manifest, and still one SBOM (the document is deterministic).
    const again = await runCli(['image', 'push', TAG, `${REGISTRY}/${repo}:again`], { env });
    expect({ code: again.code, digest: (JSON.parse(again.stdout) as { digest: string }).digest }).toEqual({ code: 0, digest: pushed.digest });
    expect((await listReferrers(reg, repo, pushed.digest)).manifests.map((x) => x.digest)).toEqual([pushed.sbom]);
    // `image sbom` prints the same document.
    const printed = await runCli(['image', 'sbom', TAG], { env });
    expect(printed.code).toBe(0);
    expect(printed.stdout).toBe(sbomBytes.toString());

    const pushedText = await everythingButTheRootfs(repo, pushed.digest);
    expect(pushedText).toContain('base-files'); // what was read is the real thing
    expect(pushedText).not.toContain(SECRET);
    expect(pushedText).not.toContain('DEPLOY_TOKEN');
    // Nor in the rootfs layer (the RUN used the arg and wrote nothing).
    const zst = await blob(repo, m.json.layers[0]!);
    expect(execFileSync('zstd', ['-dc'], { input: zst, maxBuffer: 1 << 30 }).includes(Buffer.from(SECRET))).toBe(false);
  });

  test('--source, --revision, SOURCE_DATE_EPOCH and --include-build-args: annotated and kept as asked; --no-sbom attaches nothing', async () => {
    const repo = `fbtest/supply-args-${process.pid}`;
    const p = await runCli(['image', 'push', TAG, `${REGISTRY}/${repo}:1`, '--source', 'https://github.com/acme/app', '--revision', 'c'.repeat(40), '--include-build-args', '--no-sbom'], { env: { ...env, SOURCE_DATE_EPOCH: '1700000000' } });
    expect({ code: p.code, errors: errorLines(p.stderr) }).toEqual({ code: 0, errors: [] });
    const pushed = JSON.parse(p.stdout) as { digest: string; sbom?: string };
    expect(pushed.sbom).toBeUndefined();
    const m = await manifestOf(repo, '1');
    expect(m.json.annotations).toEqual({
      'org.opencontainers.image.source': 'https://github.com/acme/app', 'org.opencontainers.image.revision': 'c'.repeat(40),
      'org.opencontainers.image.version': '1', 'org.opencontainers.image.created': '2023-11-14T22:13:20Z', 'dev.firebuild.tag': TAG,
    });
    const meta = JSON.parse((await blob(repo, m.json.layers[1]!)).toString()) as { build: { buildArgs?: Record<string, string> } };
    expect(meta.build.buildArgs).toEqual({ DEPLOY_TOKEN: SECRET });
    expect(await listReferrers(reg, repo, pushed.digest)).toEqual({ via: 'tag', manifests: [] });
  });

  test('a pulled image never stands in for a local build: its build cache key is not stored, so a build of the same inputs into its tag does not take it as up to date', async () => {
    const repo = `fbtest/supply-key-${process.pid}`;
    const dockerfile = `FROM debian:bookworm-slim\nENV BUILT_BY=supply-${process.pid}\n`;
    const local = `fbtest/supply-key:${process.pid}`;
    const b = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--tag', local, '--free-space', '16M'], { env });
    expect({ code: b.code, errors: errorLines(b.stderr) }).toEqual({ code: 0, errors: [] });
    const keyOf = async (tag: string): Promise<string | undefined> => (JSON.parse((await runCli(['image', 'inspect', tag], { env })).stdout) as { metadata: { build?: { cacheKey?: string } } }).metadata.build?.cacheKey;
    expect(await keyOf(local)).toMatch(/^[0-9a-f]{64}$/);
    // Published with its build record (as an attacker would, claiming the key of someone's build), then pulled.
    const p = await runCli(['image', 'push', local, `${REGISTRY}/${repo}:1`, '--include-build-args', '--no-sbom'], { env });
    expect({ code: p.code, errors: errorLines(p.stderr) }).toEqual({ code: 0, errors: [] });
    const pulledTag = `fbtest/supply-pulled:${process.pid}`;
    const pull = await runCli(['image', 'pull', `${REGISTRY}/${repo}:1`, '--tag', pulledTag], { env });
    expect({ code: pull.code, errors: errorLines(pull.stderr) }).toEqual({ code: 0, errors: [] });
    expect(await keyOf(pulledTag)).toBeUndefined();
    // The same Dockerfile built into the pulled tag is not "up to date": the pulled image is not taken for it.
    const again = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--tag', pulledTag, '--free-space', '16M'], { env });
    expect({ code: again.code, errors: errorLines(again.stderr) }).toEqual({ code: 2, errors: [`error: image ${pulledTag} already exists (built from other inputs): choose another tag or pass --overwrite`] });
  }, 5 * 60_000);

  test('bad input: a source that is a path, and a malformed SOURCE_DATE_EPOCH, are one line each and push nothing', async () => {
    const repo = `fbtest/supply-bad-${process.pid}`;
    const a = await runCli(['image', 'push', TAG, `${REGISTRY}/${repo}:1`, '--source', './Dockerfile'], { env });
    expect({ code: a.code, errors: errorLines(a.stderr) }).toEqual({ code: 2, errors: ["error: the source URL './Dockerfile' is not an http(s) URL: give the repository's web address, e.g. https://github.com/acme/app"] });
    const b = await runCli(['image', 'push', TAG, `${REGISTRY}/${repo}:1`], { env: { ...env, SOURCE_DATE_EPOCH: 'soon' } });
    expect(b.code).toBe(2);
    expect(errorLines(b.stderr)).toEqual([expect.stringMatching(/^error: SOURCE_DATE_EPOCH 'soon' is not a number of seconds since 1970/)]);
    expect((await fetch(`http://${REGISTRY}/v2/${repo}/tags/list`)).status).toBe(404);
  });
});

describe('what the publish action publishes', () => {
  test('the runner names the source and revision; the SBOM is an output, a referrer and an artifact file; build args stay out unless include-build-args', async () => {
    const svc = await startResultsService();
    try {
      const runner = { ...env, ...svc.env, GITHUB_SERVER_URL: 'https://github.com', GITHUB_REPOSITORY: 'acme/app', GITHUB_SHA: 'd'.repeat(40) };
      const repo = `fbtest/supply-action-${process.pid}`;
      const r = await runAction('publish/index.js', { tag: TAG, 'oci-ref': `${REGISTRY}/${repo}:1`, targets: 'oci,artifact', 'artifact-name': 'plain' }, runner);
      expect({ code: r.code, errors: annotations(r.stdout) }).toEqual({ code: 0, errors: [] });
      const m = await manifestOf(repo, '1');
      expect(m.digest).toBe(r.outputs.digest);
      expect(m.json.annotations).toMatchObject({ 'org.opencontainers.image.source': 'https://github.com/acme/app', 'org.opencontainers.image.revision': 'd'.repeat(40), 'org.opencontainers.image.version': '1' });
      // The sbom output is the file, the same bytes as the referrer and the artifact's sbom.spdx.json.
      const sbom = fs.readFileSync(r.outputs.sbom!);
      const refs = await listReferrers(reg, repo, r.outputs.digest!, 'application/spdx+json');
      expect(refs.manifests).toHaveLength(1);
      expect(await blob(repo, (await manifestOf(repo, refs.manifests[0]!.digest)).json.layers[0]!)).toEqual(sbom);
      const zip = svc.artifacts.get('plain')!.body;
      expect(zipEntry(zip, 'sbom.spdx.json')).toBe(sbom.toString());
      const sums = zipEntry(zip, 'SHA256SUMS');
      expect(sums).toContain(`${createHash('sha256').update(sbom).digest('hex')}  sbom.spdx.json`);
      expect((JSON.parse(sbom.toString()) as Spdx).packages.find((x) => x.name === 'base-files')?.versionInfo).toBe(baseFilesVersion);
      // No build arg in the registry, the artifact's files or the step's log and outputs.
      expect(await everythingButTheRootfs(repo, r.outputs.digest!)).not.toContain(SECRET);
      for (const f of ['metadata.json', 'SHA256SUMS', 'sbom.spdx.json']) expect([f, zipEntry(zip, f).includes(SECRET)]).toEqual([f, false]);
      expect(JSON.parse(zipEntry(zip, 'metadata.json'))).toMatchObject({ tag: TAG, build: { engine: 'docker' } });
      expect(r.stdout + JSON.stringify(r.outputs) + r.summary).not.toContain(SECRET);

      // Asked for: the build args are in the published metadata.
      const asked = await runAction('publish/index.js', { tag: TAG, 'oci-ref': `${REGISTRY}/${repo}:args`, targets: 'oci,artifact', 'artifact-name': 'with-args', 'include-build-args': 'true', sbom: 'false' }, runner);
      expect({ code: asked.code, errors: annotations(asked.stdout) }).toEqual({ code: 0, errors: [] });
      expect(asked.outputs.sbom).toBeUndefined();
      expect(JSON.parse(zipEntry(svc.artifacts.get('with-args')!.body, 'metadata.json'))).toMatchObject({ build: { buildArgs: { DEPLOY_TOKEN: SECRET } } });
      expect(() => zipEntry(svc.artifacts.get('with-args')!.body, 'sbom.spdx.json')).toThrow(/no sbom\.spdx\.json/);
      const am = await manifestOf(repo, 'args');
      expect((await blob(repo, am.json.layers[1]!)).toString()).toContain(SECRET);
    } finally {
      svc.close();
    }
  });
});
