import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Ext4Image } from '../../src/rootfs/ext4-read.js';
import { expectJsonResult, lines, runCli, tempDir, type CliResult } from '../helpers/cli.js';
import { annotations, runAction, runnerFiles } from '../helpers/runner.js';
import { startResultsService } from '../helpers/results-service.js';
import { ext4Tree, type Tree, changedPaths, ext4Cat } from '../helpers/trees.js';
import { importTestKernel } from '../helpers/vm.js';

/**
 * Build secrets (RUN --mount=type=secret), as BuildKit has them: the guest sees the value at the target
 * (or in a variable) for that RUN only, and the value is nowhere else afterwards: not in the image's bytes,
 * the step cache, the store, the published artifact, the actions' logs, outputs, summaries or state, nor
 * any file under the build's TMPDIR. Every scan reads whole files for the literal value, and a control
 * build that does copy the secret into its image shows that the same scans find it there.
 */
let work: string;
let secretDir: string;
let env: NodeJS.ProcessEnv;
const BASE = 'fbtest/secbase:1';
const REGISTRY = process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000';
/** The secrets of this run: random, so a hit can only come from this test. */
const FILE_SECRET = `fbsecret-file-${randomBytes(16).toString('hex')}`;
const ENV_SECRET = `fbsecret-env-${randomBytes(16).toString('hex')}`;
const ACTION_SECRET = `fbsecret-input-${randomBytes(16).toString('hex')}`;
const ALL = [FILE_SECRET, ENV_SECRET, ACTION_SECRET];
let secretFile: string;
const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');

function writeCtx(name: string, dockerfile: string): string {
  const dir = path.join(work, 'ctx', name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), dockerfile);
  return path.join(dir, 'Dockerfile');
}

const vmBuild = (dockerfile: string, tag: string, extra: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
  runCli(['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--tag', tag, '--accel', 'tcg', ...extra], { env: { ...env, ...extraEnv } });

/** Which of `needles` a stream holds anywhere in its bytes (each chunk, and each seam between two chunks). */
async function streamHas(stream: AsyncIterable<Buffer>, needles: string[]): Promise<string[]> {
  const bufs = needles.map((n) => Buffer.from(n));
  const keep = Math.max(...bufs.map((b) => b.length)) - 1;
  const found = new Set<string>();
  let tail = Buffer.alloc(0);
  for await (const chunk of stream) {
    const seam = Buffer.concat([tail, chunk.subarray(0, keep)]);
    for (const [i, b] of bufs.entries()) if (chunk.includes(b) || seam.includes(b)) found.add(needles[i]!);
    tail = Buffer.from(chunk.length >= keep ? chunk.subarray(chunk.length - keep) : Buffer.concat([tail, chunk]).subarray(-keep));
  }
  return [...found];
}

/** Which of `needles` a file holds anywhere in its bytes (read whole). */
function fileHas(file: string, needles: string[]): Promise<string[]> {
  return streamHas(fs.createReadStream(file, { highWaterMark: 8 << 20 }) as AsyncIterable<Buffer>, needles);
}

/** The bytes a zstd stream decompresses to, scanned as they come. */
async function zstdHas(data: Buffer, needles: string[]): Promise<string[]> {
  const child = spawn('zstd', ['-dcq'], { stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdin.end(data);
  const found = await streamHas(child.stdout as AsyncIterable<Buffer>, needles);
  await new Promise((r) => child.on('close', r));
  return found;
}

/** Every regular file under `dir` holding one of `needles`, as `path: needle` lines. */
async function treeHas(dir: string, needles: string[]): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) for (const n of await fileHas(p, needles)) out.push(`${p}: ${n}`);
    }
  };
  if (fs.existsSync(dir)) await walk(dir);
  return out;
}

/** A published artifact's manifest, config and layers (the rootfs layer decompressed too), scanned. */
async function publishedHas(ref: string, needles: string[]): Promise<string[]> {
  const m = /^([^/]+)\/(.+):([^:]+)$/.exec(ref)!;
  const [, host, repo, tag] = m;
  const manifestRes = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  expect(manifestRes.ok).toBe(true);
  const manifestText = await manifestRes.text();
  const found = needles.filter((n) => manifestText.includes(n)).map((n) => `manifest: ${n}`);
  const manifest = JSON.parse(manifestText) as { config: { digest: string; mediaType: string }; layers: { digest: string; mediaType: string }[] };
  for (const d of [manifest.config, ...manifest.layers]) {
    const blob = Buffer.from(await (await fetch(`http://${host}/v2/${repo}/blobs/${d.digest}`)).arrayBuffer());
    expect(sha(blob)).toBe(d.digest.replace('sha256:', ''));
    for (const n of needles) if (blob.includes(n)) found.push(`${d.digest}: ${n}`);
    if (d.mediaType.endsWith('+zstd')) for (const n of await zstdHas(blob, needles)) found.push(`${d.digest} (decompressed): ${n}`);
  }
  return found;
}

async function inspect(tag: string, home = env): Promise<{ rootfs: string; metadataPath: string }> {
  const r = await runCli(['image', 'inspect', tag], { env: home });
  expect(r.code).toBe(0);
  const j = JSON.parse(r.stdout) as { rootfs: string; path: string };
  return { rootfs: j.rootfs, metadataPath: path.join(path.dirname(j.rootfs), 'metadata.json') };
}

const cat = ext4Cat;
const changed = (after: Tree, before: Tree): string[] => changedPaths(after, before);

beforeAll(async () => {
  work = await tempDir('firebuild-secrets-');
  secretDir = await tempDir('firebuild-secret-src-');
  fs.mkdirSync(path.join(work, 'tmp'));
  secretFile = path.join(secretDir, 'token.txt');
  // A trailing newline: the guest must see the bytes exactly.
  fs.writeFileSync(secretFile, `${FILE_SECRET}\n`, { mode: 0o600 });
  // The build's own TMPDIR (scanned afterwards); docker.io is never reached.
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: path.join(work, 'tmp'), FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:1', FIREBUILD_REGISTRY_MIRRORS: '' };
  expect(await importTestKernel(env)).toBe(0);
  const base = writeCtx('base', `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN true\n`);
  expectJsonResult(await runCli(['baseos', '--dockerfile', base, '--tag', BASE, '--free-space', '64M'], { env }));
}, 10 * 60_000);

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
  fs.rmSync(secretDir, { recursive: true, force: true });
});

describe('RUN --mount=type=secret with the vm engine', () => {
  test('the guest sees the secret (file, target with mode/uid/gid, variable); the image is the base plus what the RUNs wrote; the secret is nowhere; a changed secret value reuses the steps', async () => {
    const dockerfile = writeCtx('uses', [
      `FROM ${BASE}`,
      // The default target, read-only, 0400 root; the config disk is not visible to the command.
      `RUN --mount=type=secret,id=tok sh -c 'sha256sum /run/secrets/tok | cut -d" " -f1 > /tok.sha; stat -c "%a %u %g" /run/secrets/tok > /tok.stat; ls -A /.firebuild/config > /config.ls; if (echo x > /run/secrets/tok) 2>/dev/null; then echo rw; else echo ro; fi > /tok.ro'`,
      // A target of the Dockerfile's (missing parents made and removed), mode/uid/gid, and a variable-only secret.
      'WORKDIR /srv',
      `RUN --mount=type=secret,id=tok,target=/opt/conf/tok,mode=0440,uid=1,gid=2 --mount=type=secret,id=envtok,env=TOK sh -c 'sha256sum /opt/conf/tok | cut -d" " -f1 > /opt.sha; stat -c "%a %u %g" /opt/conf/tok > /opt.stat; printf %s "$TOK" | sha256sum | cut -d" " -f1 > /env.sha; if [ -e /run/secrets/envtok ]; then echo file; else echo none; fi > /envonly'`,
      // A secret not given and not required: the mount is skipped.
      'RUN --mount=type=secret,id=absent,target=rel/absent sh -c \'if [ -e /srv/rel/absent ]; then echo mounted; else echo skipped; fi > /absent\'',
      '',
    ].join('\n'));
    const r = await vmBuild(dockerfile, 'fbtest/secrets:1', ['--secret', `id=tok,src=${secretFile}`, '--secret', 'id=envtok,env=FB_TEST_ENV_SECRET'], { FB_TEST_ENV_SECRET: ENV_SECRET });
    expectJsonResult(r);
    const { rootfs, metadataPath } = await inspect('fbtest/secrets:1');
    // What the guest saw: the exact bytes, the modes and owners asked, read-only, no config disk.
    expect(await cat(rootfs, '/tok.sha')).toBe(`${sha(`${FILE_SECRET}\n`)}\n`);
    expect(await cat(rootfs, '/tok.stat')).toBe('400 0 0\n');
    expect(await cat(rootfs, '/tok.ro')).toBe('ro\n');
    expect(await cat(rootfs, '/config.ls')).toBe('');
    expect(await cat(rootfs, '/opt.sha')).toBe(`${sha(`${FILE_SECRET}\n`)}\n`);
    expect(await cat(rootfs, '/opt.stat')).toBe('440 1 2\n');
    expect(await cat(rootfs, '/env.sha')).toBe(`${sha(ENV_SECRET)}\n`);
    expect(await cat(rootfs, '/envonly')).toBe('none\n');
    expect(await cat(rootfs, '/absent')).toBe('skipped\n');
    expect(r.stderr).toContain("secret 'absent' not given: its mount is skipped");

    // The image is the base plus the RUNs' own files: no mount point is left (no
    // /run/secrets, /opt/conf, /srv/rel), and the directories that held them keep their times.
    const base = await inspect(BASE);
    expect(changed(await ext4Tree(rootfs), await ext4Tree(base.rootfs))).toEqual(['/absent', '/config.ls', '/env.sha', '/envonly', '/opt.sha', '/opt.stat', '/tok.ro', '/tok.sha', '/tok.stat']);
    const times = async (img: string): Promise<unknown[]> => {
      const i = await Ext4Image.open(img);
      try {
        return await Promise.all(['/run', '/opt'].map(async (p) => {
          const e = (await i.stat(p))!;
          return { p, mtime: e.mtime, ctime: e.ctime, nlink: e.nlink };
        }));
      } finally {
        await i.close();
      }
    };
    expect(await times(rootfs)).toEqual(await times(base.rootfs));

    // Nowhere: the image's bytes, the metadata, the step cache, the store, the run cache, TMPDIR, the log.
    expect(await fileHas(rootfs, ALL)).toEqual([]);
    expect(await treeHas(work, ALL)).toEqual([]);
    expect(ALL.filter((s) => r.stdout.includes(s) || r.stderr.includes(s))).toEqual([]);
    expect(fs.readFileSync(metadataPath, 'utf8')).not.toContain('fbsecret');
    // The config disks' staging directories and the build's work directory are gone.
    expect(fs.readdirSync(path.join(work, 'tmp')).filter((n) => n.startsWith('firebuild-config-') || n.startsWith('firebuild-vmbuild-'))).toEqual([]);

    // As in BuildKit, the value is not part of a step's key: another value reuses every step.
    const other = path.join(secretDir, 'other.txt');
    fs.writeFileSync(other, 'another value\n');
    const again = await vmBuild(dockerfile, 'fbtest/secrets:2', ['--secret', `id=tok,src=${other}`]);
    expectJsonResult(again);
    expect(JSON.parse(again.stdout)).toMatchObject({ executed: 0, cached: 4 });
  }, 10 * 60_000);

  test('the shell init (FIREBUILD_GUEST_INIT=shell) mounts the secret the same way and leaves no mount point', async () => {
    const dockerfile = writeCtx('shell-init', `FROM ${BASE}\nRUN --mount=type=secret,id=tok,uid=7,mode=0404 --mount=type=secret,id=tok,env=TOK sh -c 'sha256sum /run/secrets/tok | cut -d" " -f1 > /tok.sha; stat -c "%a %u %g" /run/secrets/tok > /tok.stat; printf %s "$TOK" | sha256sum | cut -d" " -f1 >> /tok.sha; ls -A /.firebuild/config > /config.ls'\n`);
    const r = await vmBuild(dockerfile, 'fbtest/secrets-shell:1', ['--secret', `id=tok,src=${secretFile}`], { FIREBUILD_GUEST_INIT: 'shell' });
    expectJsonResult(r);
    const { rootfs } = await inspect('fbtest/secrets-shell:1');
    expect(await cat(rootfs, '/tok.sha')).toBe(`${sha(`${FILE_SECRET}\n`)}\n${sha(`${FILE_SECRET}\n`)}\n`);
    expect(await cat(rootfs, '/tok.stat')).toBe('404 7 0\n');
    expect(await cat(rootfs, '/config.ls')).toBe('');
    const img = await Ext4Image.open(rootfs);
    try {
      expect(await img.stat('/run/secrets')).toBeUndefined();
    } finally {
      await img.close();
    }
    expect(await fileHas(rootfs, ALL)).toEqual([]);
    expect(await treeHas(work, ALL)).toEqual([]);
  }, 10 * 60_000);

  test('a required secret not given is one line naming the id and how to pass it; no tag, no work dir; a missing src file and RUN --security are one line too', async () => {
    const dockerfile = writeCtx('required', `FROM ${BASE}\nRUN echo before > /before\nRUN --mount=type=secret,id=deploy_key,required=true cat /run/secrets/deploy_key\n`);
    const r = await vmBuild(dockerfile, 'fbtest/secrets-required:1');
    expect(r.code).toBe(2);
    expect(lines(r.stderr).filter((l) => l.startsWith('error:'))).toEqual([`error: ${dockerfile}:3: RUN at Dockerfile:3: the secret 'deploy_key' is required (required=true) and was not given: pass --secret id=deploy_key,src=FILE (or env=VARIABLE), or in build-rootfs the input secrets (deploy_key=value), secret-files or secret-envs`]);
    expect((await runCli(['image', 'inspect', 'fbtest/secrets-required:1'], { env })).code).not.toBe(0);
    expect(fs.readdirSync(path.join(work, 'tmp')).filter((n) => n.startsWith('firebuild-vmbuild-') || n.startsWith('firebuild-config-'))).toEqual([]);

    const missing = await vmBuild(dockerfile, 'fbtest/secrets-required:1', ['--secret', `id=deploy_key,src=${path.join(secretDir, 'nope')}`]);
    expect(missing.code).toBe(2);
    expect(lines(missing.stderr).filter((l) => l.startsWith('error:'))).toEqual([`error: secret 'deploy_key' (file ${path.join(secretDir, 'nope')}) cannot be read (ENOENT): give an existing file in src=`]);

    const insecure = writeCtx('insecure', `FROM ${BASE}\nRUN --mount=type=secret,id=tok --security=insecure true\n`);
    const refused = await vmBuild(insecure, 'fbtest/secrets-insecure:1', ['--secret', `id=tok,src=${secretFile}`]);
    expect(refused.code).toBe(2);
    expect(lines(refused.stderr).filter((l) => l.startsWith('error:'))).toEqual([`error: ${insecure}:2: RUN --security is not supported by the vm engine yet: remove it, or build with --engine docker on a host with BuildKit`]);
  }, 10 * 60_000);
});

describe('the build-rootfs action with secrets, then publish (MUST-SHOW: the secret is nowhere)', () => {
  test('secrets, secret-files and secret-envs reach the RUN; the image bytes, step cache (local and the Actions cache), store, published artifact, logs, outputs, summaries, state and TMPDIR hold none of them', async () => {
    const results = await startResultsService();
    try {
      const dockerfile = writeCtx('action', [
        `FROM ${BASE}`,
        `RUN --mount=type=secret,id=tok --mount=type=secret,id=npmrc,target=/root/.npmrc --mount=type=secret,id=gh,env=GH_TOKEN sh -c 'cat /run/secrets/tok | sha256sum | cut -d" " -f1 > /sums; sha256sum /root/.npmrc | cut -d" " -f1 >> /sums; printf %s "$GH_TOKEN" | sha256sum | cut -d" " -f1 >> /sums'`,
        '',
      ].join('\n'));
      const actionEnv = { ...env, ...results.env, FIREBUILD_ACCEL: 'tcg', FB_TEST_GH: ENV_SECRET };
      const buildFiles = await runnerFiles();
      const build = await runAction('build-rootfs/index.js', {
        dockerfile, tag: 'fbtest/secrets-action:1', engine: 'vm',
        secrets: `tok=${ACTION_SECRET}`, 'secret-files': `npmrc=${secretFile}`, 'secret-envs': 'gh=FB_TEST_GH',
      }, actionEnv, buildFiles);
      expect({ code: build.code, errors: annotations(build.stdout) }).toEqual({ code: 0, errors: [] });
      expect(build.outputs['step-cache-saved']).toMatch(/^firebuild-vmsteps-/);
      expect(await cat(build.outputs.rootfs!, '/sums')).toBe(`${sha(ACTION_SECRET)}\n${sha(`${FILE_SECRET}\n`)}\n${sha(ENV_SECRET)}\n`);
      // The values given as text were masked for the runner before anything ran.
      expect(build.stdout).toContain(`::add-mask::${ACTION_SECRET}`);
      expect(build.stdout).toContain(`::add-mask::${ENV_SECRET}`);

      const ref = `${REGISTRY}/fbtest/secrets-${process.pid}:1`;
      const pubFiles = await runnerFiles();
      const pub = await runAction('publish/index.js', { tag: 'fbtest/secrets-action:1', 'oci-ref': ref }, actionEnv, pubFiles);
      expect({ code: pub.code, errors: annotations(pub.stdout) }).toEqual({ code: 0, errors: [] });

      // The logs without relying on the mask: only the runner's own ::add-mask:: commands name a value.
      for (const out of [build.stdout, pub.stdout]) expect(out.split('\n').filter((l) => !l.startsWith('::add-mask::') && ALL.some((s) => l.includes(s)))).toEqual([]);
      // GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_STATE, GITHUB_ENV and RUNNER_TEMP of both steps.
      expect(await treeHas(buildFiles.dir, ALL)).toEqual([]);
      expect(await treeHas(pubFiles.dir, ALL)).toEqual([]);
      // The image's bytes, the store and its metadata, the local step cache, the run cache, TMPDIR.
      expect(await fileHas(build.outputs.rootfs!, ALL)).toEqual([]);
      expect(await treeHas(work, ALL)).toEqual([]);
      // The step cache carried through the Actions cache (tar.zst of the steps' images), decompressed.
      const entries = [...results.caches.values()].filter((e) => e.key.startsWith('firebuild-vmsteps-'));
      expect(entries.length).toBe(1);
      for (const e of entries) expect([...ALL.filter((s) => e.body.includes(s)), ...(await zstdHas(e.body, ALL))]).toEqual([]);
      // The published manifest, config, metadata and rootfs layer (decompressed).
      expect(await publishedHas(ref, ALL)).toEqual([]);

      // The control: a Dockerfile that copies the secret into its image. The same scans find it in the
      // image, the store and the published rootfs layer, so the empty results above are not blind spots.
      const leakHome = await tempDir('firebuild-secrets-leak-');
      try {
        fs.mkdirSync(path.join(leakHome, 'tmp'));
        const leakEnv = { ...env, FIREBUILD_HOME: path.join(leakHome, 'home'), TMPDIR: path.join(leakHome, 'tmp') };
        expect(await importTestKernel(leakEnv)).toBe(0);
        expectJsonResult(await runCli(['baseos', '--dockerfile', path.join(work, 'ctx', 'base', 'Dockerfile'), '--tag', BASE, '--free-space', '64M'], { env: leakEnv }));
        const leaky = writeCtx('leak', `FROM ${BASE}\nRUN --mount=type=secret,id=tok cp /run/secrets/tok /leaked\n`);
        expectJsonResult(await runCli(['rootfs', '--engine', 'vm', '--dockerfile', leaky, '--tag', 'fbtest/secrets-leak:1', '--accel', 'tcg', '--secret', `id=tok,src=${secretFile}`], { env: leakEnv }));
        const leak = await inspect('fbtest/secrets-leak:1', leakEnv);
        expect(await fileHas(leak.rootfs, ALL)).toEqual([FILE_SECRET]);
        expect((await treeHas(leakHome, ALL)).length).toBeGreaterThan(0);
        const leakRef = `${REGISTRY}/fbtest/secrets-leak-${process.pid}:1`;
        expect((await runCli(['image', 'push', 'fbtest/secrets-leak:1', leakRef], { env: leakEnv })).code).toBe(0);
        expect((await publishedHas(leakRef, ALL)).filter((f) => f.includes('(decompressed)'))).toEqual([expect.stringContaining(FILE_SECRET)]);
      } finally {
        fs.rmSync(leakHome, { recursive: true, force: true });
      }
    } finally {
      results.close();
    }
  }, 15 * 60_000);
});

/** The Docker engine hands the secrets to BuildKit; this host's Docker may lack buildx (then there is nothing to run). */
const hasBuildx = ((): boolean => {
  try {
    execFileSync('docker', ['buildx', 'version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('the Docker engine (BuildKit)', () => {
  (hasBuildx ? test : test.skip)('--engine docker passes --secret to BuildKit (file by path, variable by name): the RUN sees them, the image holds neither', async () => {
    const dockerfile = writeCtx('docker', `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN --mount=type=secret,id=tok --mount=type=secret,id=envtok,env=TOK sh -c 'sha256sum /run/secrets/tok | cut -d" " -f1 > /tok.sha; printf %s "$TOK" | sha256sum | cut -d" " -f1 >> /tok.sha'\n`);
    const r = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', dockerfile, '--tag', 'fbtest/secrets-docker:1', '--secret', `id=tok,src=${secretFile}`, '--secret', 'id=envtok,env=FB_TEST_ENV_SECRET'], { env: { ...env, FB_TEST_ENV_SECRET: ENV_SECRET } });
    expectJsonResult(r);
    const { rootfs } = await inspect('fbtest/secrets-docker:1');
    expect(await cat(rootfs, '/tok.sha')).toBe(`${sha(`${FILE_SECRET}\n`)}\n${sha(ENV_SECRET)}\n`);
    expect(await fileHas(rootfs, ALL)).toEqual([]);
    expect(ALL.filter((s) => r.stdout.includes(s) || r.stderr.includes(s))).toEqual([]);
  }, 10 * 60_000);
});
