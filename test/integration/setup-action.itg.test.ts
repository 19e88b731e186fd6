import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as http from 'node:http';
import type * as net from 'node:net';
import * as path from 'node:path';
import { REPO, runCli, tempDir } from '../helpers/cli.js';
import { hostileNameImage, mkfsFromDir, storeRawImage } from '../helpers/ext4-craft.js';
import { startResultsService, type ResultsService } from '../helpers/results-service.js';
import { annotations, runAction, runPost, type ActionRun } from '../helpers/runner.js';
import { factsOf, summaryTables } from '../helpers/summary-render.js';
import { KERNEL_CACHE } from '../helpers/global-setup.js';
import { debianCloudKernel, killAll } from '../helpers/vm.js';
import { DirectoryStorage } from '../../src/store/directory.js';
import { importPackagedImage, importPackagedKernel, packageImage, packageKernel } from '../../src/store/package.js';
import { detectKvm } from '../../src/vmm/kvm.js';

/**
 * The bundled setup action, run as the runner runs it. Real parts: the doctor's checks on this host,
 * @actions/tool-cache downloading a release tarball from a local HTTP server (the Firecracker and jailer
 * test doubles packed in the release's layout; no Firecracker can run here), the kernel build from
 * Debian's linux-source, the Docker engine for base images, and @actions/cache archiving with the
 * system's tar and zstd. The Actions cache service is the local stand-in (test/helpers/results-service).
 */
const FC_VERSION = 'v1.10.1';
let work: string;
let results: ResultsService;
let tarball: Buffer;
let downloads = 0;
let server: http.Server;
let fcUrl: string;

function homeEnv(name: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    FIREBUILD_HOME: path.join(work, name),
    FIREBUILD_PROFILE_CONF_DIR: path.join(work, name, 'profiles'),
    FIREBUILD_CHROOT_BASE: path.join(work, name, 'jailer'),
    RUNNER_TOOL_CACHE: path.join(work, 'toolcache'),
    GITHUB_WORKSPACE: work,
    ...results.env,
    ...extra,
  };
}

/** A step that passed: exit 0, no error or warning annotations. */
function ok(r: ActionRun): void {
  expect({ code: r.code, errors: annotations(r.stdout), warnings: annotations(r.stdout, 'warning') }).toEqual({ code: 0, errors: [], warnings: [] });
}

const message = (annotation: string): string => annotation.replace(/^::\w+[^:]*::/, '');

beforeAll(async () => {
  work = await tempDir('firebuild-setup-');
  results = await startResultsService();
  // A Firecracker release tarball in the release's layout, holding the test doubles.
  const rel = path.join(work, 'release', `release-${FC_VERSION}-x86_64`);
  fs.mkdirSync(rel, { recursive: true });
  fs.copyFileSync(path.join(REPO, 'test/fixtures/firecracker/firecracker'), path.join(rel, `firecracker-${FC_VERSION}-x86_64`));
  fs.copyFileSync(path.join(REPO, 'test/fixtures/firecracker/jailer'), path.join(rel, `jailer-${FC_VERSION}-x86_64`));
  execFileSync('tar', ['-czf', path.join(work, 'fc.tgz'), '-C', path.join(work, 'release'), `release-${FC_VERSION}-x86_64`]);
  tarball = fs.readFileSync(path.join(work, 'fc.tgz'));
  server = http.createServer((req, res) => {
    if (req.url === `/releases/${FC_VERSION}/firecracker-${FC_VERSION}-x86_64.tgz`) {
      downloads++;
      res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': String(tarball.length) });
      return res.end(tarball);
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  fcUrl = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/releases/{version}/firecracker-{version}-{arch}.tgz`;
});

afterAll(async () => {
  results.close();
  server.close();
  for (const d of fs.readdirSync(work)) if (fs.existsSync(path.join(work, d, 'run'))) await killAll(path.join(work, d, 'run'), { FIREBUILD_HOME: path.join(work, d) });
  fs.rmSync(work, { recursive: true, force: true });
});

describe('the setup action', () => {
  test('bad input is one annotation and a failed step; nothing is written', async () => {
    const kvm = await detectKvm();
    const cases: [Record<string, string>, RegExp][] = [
      [{ accel: 'bogus' }, /^input 'accel' is 'bogus': use one of kvm, tcg, auto$/],
      [{ backend: 'vmware' }, /^input 'backend' is 'vmware': use one of auto, qemu, firecracker$/],
      [{ accel: 'tcg', backend: 'firecracker' }, /needs KVM and accel is 'tcg'/],
      [{ accel: 'tcg', backend: 'qemu', baseos: 'no-equals-sign' }, /^input 'baseos' line 'no-equals-sign' is malformed: write TAG=DOCKERFILE/],
      [{ accel: 'tcg', backend: 'qemu', 'kernel-path': '/boot/x', 'kernel-version': '6.1' }, /exclude each other/],
      [{ accel: 'tcg', backend: 'qemu', 'firecracker-sha256': 'abc' }, /is not a sha256/],
      [{ accel: 'tcg', backend: 'qemu', 'registry-mirrors': 'http://127.0.0.1:5000\nmirror.example' }, /^malformed registry mirror 'mirror\.example' \(input 'registry-mirrors'\)/],
      // No kernel in an empty store, none to import or build.
      [{ accel: 'tcg', backend: 'qemu' }, /^no kernel default on this runner: set kernel-path .* or kernel-version/],
      // Firecracker is neither in the tool cache nor on PATH, and no checksum is given: no download.
      [{ accel: 'tcg', backend: 'qemu', 'install-firecracker': 'true', 'firecracker-url': fcUrl }, /^firecracker v1\.10\.1 is not installed and no checksum is pinned for its download: set firecracker-sha256/],
      // A checksum that does not match the download: refused, nothing cached.
      [{ accel: 'tcg', backend: 'qemu', 'install-firecracker': 'true', 'firecracker-url': fcUrl, 'firecracker-sha256': '0'.repeat(64) }, /has sha256 [0-9a-f]{64}, firecracker-sha256 pins 0{64}: refusing it/],
    ];
    // The default accel is kvm: on this machine (no usable KVM) that is the runner check's failure.
    if (!kvm.usable) cases.push([{}, /^KVM is not usable on this runner: .*Run on a KVM-capable runner \(see runner-setup\/\), or set accel: tcg and backend: qemu/]);
    for (const [inputs, want] of cases) {
      const env = homeEnv('bad');
      const r = await runAction('setup/index.js', inputs, env);
      const errs = annotations(r.stdout);
      expect({ inputs, code: r.code, count: errs.length }).toEqual({ inputs, code: 1, count: 1 });
      expect(message(errs[0]!)).toMatch(want);
      expect(r.exported).toEqual({});
      expect(fs.existsSync(path.join(env.FIREBUILD_PROFILE_CONF_DIR!, 'ci.json'))).toBe(false);
    }
    expect(fs.existsSync(path.join(work, 'toolcache', 'firecracker'))).toBe(false);
  });

  test('Firecracker and the jailer: downloaded once, checksum-verified, kept in the tool cache; the profile names them', async () => {
    const sha = createHash('sha256').update(tarball).digest('hex');
    const k = debianCloudKernel();
    const inputs = { accel: 'tcg', backend: 'qemu', 'install-firecracker': 'true', 'firecracker-url': fcUrl, 'firecracker-sha256': sha, 'kernel-path': k.kernel, 'kernel-initrd': k.initrd, 'registry-mirrors': 'http://127.0.0.1:5000, https://mirror.example' };
    const before = downloads;
    const first = await runAction('setup/index.js', inputs, homeEnv('fc'));
    ok(first);
    expect(downloads).toBe(before + 1);
    const toolDir = path.join(work, 'toolcache', 'firecracker', '1.10.1', process.arch);
    expect(first.outputs).toMatchObject({ backend: 'qemu', vmm: 'qemu', firecracker: path.join(toolDir, 'firecracker'), jailer: path.join(toolDir, 'jailer'), profile: 'ci', 'vmlinux-id': 'default', 'kernel-id': 'default', 'kernel-source': 'imported' });
    expect(execFileSync(first.outputs.firecracker!, ['--version']).toString()).toContain(FC_VERSION);
    expect(first.exported).toMatchObject({ FIREBUILD_PROFILE: 'ci', FIREBUILD_ACCEL: 'tcg' });
    const profile = JSON.parse(fs.readFileSync(path.join(homeEnv('fc').FIREBUILD_PROFILE_CONF_DIR!, 'ci.json'), 'utf8')) as Record<string, unknown>;
    expect(profile).toMatchObject({ 'binary-firecracker': first.outputs.firecracker, 'binary-jailer': first.outputs.jailer, 'registry-mirrors': ['http://127.0.0.1:5000', 'https://mirror.example'] });
    const [facts] = summaryTables(first.summary);
    expect(factsOf(facts!)).toMatchObject({ VMM: 'qemu', accel: 'tcg', Firecracker: `${FC_VERSION} (download)`, 'Firecracker binary': first.outputs.firecracker, kernel: 'default (imported)', profile: 'ci', duration: expect.stringMatching(/ (ms|s)$/) });
    // The CLI takes the profile the action wrote.
    const shown = await runCli(['profile-inspect', '--profile', 'ci'], { env: homeEnv('fc') });
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(first.outputs.firecracker);

    // A second job on the runner: the tool cache has it, no download.
    const second = await runAction('setup/index.js', inputs, homeEnv('fc2'));
    ok(second);
    expect(downloads).toBe(before + 1);
    expect(factsOf(summaryTables(second.summary)[0]!).Firecracker).toBe(`${FC_VERSION} (tool-cache)`);
  });

  test('a kernel built from linux-source is saved to the Actions cache by the post step and restored by the next job (no build), with the same digest', async () => {
    // The kernel build tree is shared with kernel-build.itg (a no-op make when it was built before).
    const extra = { FIREBUILD_CACHE_DIR: KERNEL_CACHE };
    const inputs = { accel: 'tcg', backend: 'qemu', 'kernel-version': '6.1', 'vmlinux-id': 'k61' };
    const first = await runAction('setup/index.js', inputs, homeEnv('k1', extra));
    ok(first);
    expect(first.outputs).toMatchObject({ 'vmlinux-id': 'k61', 'kernel-id': 'k61', 'kernel-source': 'built', 'cache-hit': 'false' });
    const post = await runPost('setup/post/index.js', first.state, homeEnv('k1', extra));
    ok(post);
    const saved = [...results.caches.values()].filter((e) => e.key.startsWith('firebuild-kernel-1-x86_64-'));
    expect(saved).toHaveLength(1);
    expect(saved[0]!.finalized).toBe(true);
    expect(saved[0]!.body.length).toBeGreaterThan(1 << 20);
    // The packaged files existed only while the post step saved them.
    expect(fs.readdirSync(path.join(os.tmpdir(), `firebuild-${process.geteuid?.() ?? 0}`, 'cache'))).not.toContain(saved[0]!.key);

    // A fresh runner: an empty store and an empty build cache; the kernel comes from the Actions cache.
    const second = await runAction('setup/index.js', inputs, homeEnv('k2', { FIREBUILD_CACHE_DIR: path.join(work, 'k2-cache') }));
    ok(second);
    expect(second.outputs).toMatchObject({ 'kernel-source': 'cache', 'cache-hit': 'true' });
    expect(fs.existsSync(path.join(work, 'k2-cache', 'kernel-build'))).toBe(false);
    const sha = (name: string): string => (JSON.parse(fs.readFileSync(path.join(work, name, 'kernels', 'k61', 'metadata.json'), 'utf8')) as { vmlinux: { sha256: string } }).vmlinux.sha256;
    expect(sha('k2')).toBe(sha('k1'));
    // Nothing to save after a hit.
    expect(JSON.parse(second.state['cache-saves'] ?? '[]')).toEqual([]);
  }, 60 * 60_000);

  test('base images: built and saved on a miss, restored (same sha256) on a hit, rebuilt when the Dockerfile changes; later steps boot with the profile', async () => {
    const dir = path.join(work, 'baseos');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'motd'), 'built by firebuild setup\n');
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nCOPY motd /etc/motd\nCMD ["/bin/cat", "/etc/motd"]\n`);
    const k = debianCloudKernel();
    const tag = `fbtest/setup-base:${process.pid}`;
    const inputs = { accel: 'tcg', backend: 'qemu', baseos: `${tag}=${path.join(dir, 'Dockerfile')}`, 'kernel-path': k.kernel, 'kernel-initrd': k.initrd };
    const first = await runAction('setup/index.js', inputs, homeEnv('b1'));
    ok(first);
    expect(first.outputs).toMatchObject({ 'base-images': tag, 'cache-hit': 'false' });
    // The summary's base image table (rendered as GitHub renders it): how each image came, its sha256.
    const baseRow = (r: ActionRun): string[] | undefined => summaryTables(r.summary)[1]?.rows.find((row) => row[0] === tag);
    expect(summaryTables(first.summary)[1]!.rows[0]).toEqual(['image', 'from', 'time', 'sha256']);
    expect(baseRow(first)).toEqual([tag, 'built', expect.stringMatching(/ (ms|s)$/), expect.stringMatching(/^[0-9a-f]{64}$/)]);
    ok(await runPost('setup/post/index.js', first.state, homeEnv('b1')));
    const shaOf = async (home: string): Promise<string> => {
      const r = await runCli(['image', 'inspect', tag], { env: homeEnv(home) });
      expect(r.code).toBe(0);
      return (JSON.parse(r.stdout) as { metadata: { rootfs: { sha256: string } } }).metadata.rootfs.sha256;
    };

    const second = await runAction('setup/index.js', inputs, homeEnv('b2'));
    ok(second);
    expect(second.outputs).toMatchObject({ 'cache-hit': 'true' });
    expect(baseRow(second)?.[1]).toBe('restored from the cache');
    expect(await shaOf('b2')).toBe(await shaOf('b1'));

    // The restored base image boots through smoke-test, which takes the profile setup exported.
    const smoke = await runAction('smoke-test/index.js', { tag, 'expect-exit-code': '0', timeout: '180', mem: '256' }, homeEnv('b2', second.exported));
    ok(smoke);
    expect(fs.readFileSync(smoke.outputs['serial-log']!, 'utf8')).toContain('built by firebuild setup');
    ok(await runPost('smoke-test/post/index.js', smoke.state, homeEnv('b2', second.exported)));

    // A changed input is a new key: built again.
    fs.writeFileSync(path.join(dir, 'motd'), 'changed\n');
    const third = await runAction('setup/index.js', inputs, homeEnv('b3'));
    ok(third);
    expect(third.outputs).toMatchObject({ 'cache-hit': 'false' });
    expect(baseRow(third)?.[1]).toBe('built');
  }, 20 * 60_000);

  test('post-if always(): what setup built before a failure is still saved; an entry a later step replaced is not', async () => {
    const yml = fs.readFileSync(path.join(REPO, 'setup', 'action.yml'), 'utf8');
    expect(yml).toMatch(/^ {2}post-if: always\(\)$/m);
    const dir = path.join(work, 'partial');
    fs.mkdirSync(dir, { recursive: true });
    const base = process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim';
    fs.writeFileSync(path.join(dir, 'Dockerfile.good'), `FROM ${base}\nRUN echo partial-${process.pid} > /etc/motd\n`);
    fs.writeFileSync(path.join(dir, 'Dockerfile.bad'), `FROM ${base}\nRUN exit 3\n`);
    const good = `fbtest/partial-good:${process.pid}`;
    const k = debianCloudKernel();
    const kernel = { accel: 'tcg', backend: 'qemu', 'kernel-path': k.kernel, 'kernel-initrd': k.initrd };
    // The second base fails: the step fails, but the post step (always) saves the first.
    const failed = await runAction('setup/index.js', { ...kernel, baseos: `${good}=${path.join(dir, 'Dockerfile.good')}\nfbtest/partial-bad:1=${path.join(dir, 'Dockerfile.bad')}` }, homeEnv('p1'));
    expect(failed.code).not.toBe(0);
    ok(await runPost('setup/post/index.js', failed.state, homeEnv('p1')));
    const next = await runAction('setup/index.js', { ...kernel, baseos: `${good}=${path.join(dir, 'Dockerfile.good')}` }, homeEnv('p2'));
    ok(next);
    expect(next.outputs).toMatchObject({ 'cache-hit': 'true' });

    // A later step of the job replaces the stored image under the same tag: the post step does not save it.
    fs.writeFileSync(path.join(dir, 'Dockerfile.other'), `FROM ${base}\nRUN echo replaced > /etc/motd\n`);
    const changed = path.join(dir, 'Dockerfile.changed');
    fs.writeFileSync(changed, `FROM ${base}\nRUN echo changed-${process.pid} > /etc/motd\n`);
    const tag = `fbtest/partial-swap:${process.pid}`;
    const first = await runAction('setup/index.js', { ...kernel, baseos: `${tag}=${changed}` }, homeEnv('p3'));
    ok(first);
    const swap = await runCli(['baseos', '--dockerfile', path.join(dir, 'Dockerfile.other'), '--tag', tag, '--overwrite'], { env: homeEnv('p3') });
    expect(swap.code).toBe(0);
    const post = await runPost('setup/post/index.js', first.state, homeEnv('p3'));
    expect({ code: post.code, warnings: annotations(post.stdout, 'warning').map(message) }).toEqual({
      code: 0, warnings: [expect.stringMatching(new RegExp(`^could not save firebuild-baseos-.*: the stored image ${tag.replace(/[/.]/g, '\\$&')} changed after setup made it \\(sha256 [0-9a-f]{64}, setup saw [0-9a-f]{64}\\): not saved to the cache$`))],
    });
    const again = await runAction('setup/index.js', { ...kernel, baseos: `${tag}=${changed}` }, homeEnv('p4'));
    ok(again);
    expect(again.outputs).toMatchObject({ 'cache-hit': 'false' });
  }, 20 * 60_000);

  test('what the cache restores is checked by its digests and as a file system: a corrupt package or kernel, or a hostile ext4 with valid digests, is refused and nothing lands in the store', async () => {
    const root = path.join(work, 'digests');
    const store = new DirectoryStorage({ rootfsRoot: path.join(root, 'rootfs'), kernelRoot: path.join(root, 'kernels'), createRoots: true });
    fs.mkdirSync(path.join(root, 'tree', 'etc'), { recursive: true });
    fs.writeFileSync(path.join(root, 'tree', 'etc', 'motd'), 'packaged\n');
    mkfsFromDir(path.join(root, 'tree'), path.join(root, 'clean.ext4'), { sizeMiB: 8 });
    await storeRawImage(root, 'fbtest/pkg:1', path.join(root, 'clean.ext4'));
    await packageImage(store, 'fbtest/pkg:1', path.join(root, 'pkg'));
    // A hostile ext4 (a root entry named ../…/tmp/<leaf>) packaged with valid digests, as a poisoned cache entry holds it.
    hostileNameImage(path.join(root, 'evil.ext4'), root, `fb-setup-evil-${process.pid}`);
    await storeRawImage(root, 'fbtest/evil:1', path.join(root, 'evil.ext4'));
    await packageImage(store, 'fbtest/evil:1', path.join(root, 'evil-pkg'));
    await expect(importPackagedImage(store, path.join(root, 'evil-pkg'), { tag: 'fbtest/evil:2', sourceRef: 'actions-cache:firebuild-baseos-x' })).rejects.toThrow(/^the ext4 image actions-cache:firebuild-baseos-x fails e2fsck -fn .*refusing it/);
    expect(await store.hasImage('fbtest/evil:2')).toBe(false);
    const k = debianCloudKernel();
    await store.importKernel('k', k.kernel);
    await packageKernel(store, 'k', path.join(root, 'kpkg'));
    // Intact packages go back in under other names.
    expect((await importPackagedImage(store, path.join(root, 'pkg'), { tag: 'fbtest/pkg:2', sourceRef: 'test' })).tag).toBe('fbtest/pkg:2');
    expect((await importPackagedKernel(store, path.join(root, 'kpkg'), 'k2', false)).id).toBe('k2');
    // One flipped byte each.
    const flip = (f: string): void => {
      const b = fs.readFileSync(f);
      b.writeUInt8(b.readUInt8(b.length >> 1) ^ 0xff, b.length >> 1);
      fs.writeFileSync(f, b);
    };
    flip(path.join(root, 'pkg', 'rootfs.ext4.zst'));
    await expect(importPackagedImage(store, path.join(root, 'pkg'), { tag: 'fbtest/pkg:3', sourceRef: 'test' })).rejects.toThrow(/rootfs\.ext4\.zst has sha256 [0-9a-f]{64}, SHA256SUMS says [0-9a-f]{64}: the package is corrupt/);
    flip(path.join(root, 'kpkg', 'vmlinux'));
    await expect(importPackagedKernel(store, path.join(root, 'kpkg'), 'k3', false)).rejects.toThrow(/vmlinux has sha256 [0-9a-f]{64}, its metadata says [0-9a-f]{64}: the package is corrupt/);
    expect(await store.hasImage('fbtest/pkg:3')).toBe(false);
    expect((await store.listKernels()).map((x) => x.id).sort()).toEqual(['k', 'k2']);
  });
});
