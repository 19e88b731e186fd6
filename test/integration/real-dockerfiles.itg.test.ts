import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expectJsonResult, REPO, runCli, tempDir } from '../helpers/cli.js';
import { DOCKER, ext4Tree, type Tree } from '../helpers/trees.js';
import { importTestKernel } from '../helpers/vm.js';

/**
 * Real Dockerfiles, built with both engines, give the same tree: docker-library's buildpack-deps
 * (bookworm curl, then scm FROM it: test/fixtures/real-dockerfiles/buildpack-deps, copied unchanged), a
 * compiled service (a gcc build stage, a slim runtime stage) and an interpreter app (python3 from
 * Debian, USER, WORKDIR, COPY --chown, exec-form ENTRYPOINT). `FROM debian:bookworm(-slim)` is the
 * suite's offline Debian base (scripts/make-base-image.sh), which both engines take from the local
 * Docker engine; apt-get reaches Debian's mirrors from the build VMs (user-mode network) and from
 * Docker's build containers. The vm engine runs under TCG here: these are the suite's slowest builds.
 */
const FIXTURES = path.join(REPO, 'test', 'fixtures', 'real-dockerfiles');
let work: string;
let env: NodeJS.ProcessEnv;
const times: Record<string, number> = {};

/** `debian:bookworm`, as buildpack-deps names it: the suite's base, tagged so unless the engine has another image of that name. */
function tagBookworm(): void {
  const label = (ref: string): string | undefined => {
    try {
      return execFileSync(DOCKER, ['image', 'inspect', '--format', '{{ index .Config.Labels "org.firebuild.test-base" }}', ref], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return undefined;
    }
  };
  const ours = label('firebuild-test/debian:bookworm');
  if (!ours) throw new Error('the suite base firebuild-test/debian:bookworm is missing: the global setup makes it (scripts/make-base-image.sh)');
  const have = label('debian:bookworm');
  if (have === undefined || have !== ours) {
    if (have === '') throw new Error('debian:bookworm exists in the Docker engine and is not the suite base: remove it (docker rmi debian:bookworm) to run this file');
    execFileSync(DOCKER, ['tag', 'firebuild-test/debian:bookworm', 'debian:bookworm']);
  }
}

beforeAll(async () => {
  work = await tempDir('firebuild-realdf-');
  fs.mkdirSync(path.join(work, 'tmp'));
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: path.join(work, 'tmp'), FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:1', FIREBUILD_REGISTRY_MIRRORS: '' };
  tagBookworm();
  expect(await importTestKernel(env)).toBe(0);
}, 10 * 60_000);

afterAll(() => {
  process.stderr.write(`real-dockerfiles: wall times (s): ${JSON.stringify(times)}\n`);
  fs.rmSync(work, { recursive: true, force: true });
});

/** A fixture's context copied into the work directory (the scm Dockerfile's FROM rewritten to name the curl image just built). */
function context(name: string, from?: string): string {
  const dir = path.join(work, 'ctx', `${name.replace(/\//g, '-')}${from ? `-${from.replace(/[/:]/g, '-')}` : ''}`);
  fs.cpSync(path.join(FIXTURES, name), dir, { recursive: true });
  if (from) {
    const df = path.join(dir, 'Dockerfile');
    const text = fs.readFileSync(df, 'utf8');
    expect(text).toContain('\nFROM buildpack-deps:bookworm-curl\n');
    fs.writeFileSync(df, text.replace('\nFROM buildpack-deps:bookworm-curl\n', `\nFROM ${from}\n`));
  }
  return dir;
}

interface Built { rootfs: string; config: Record<string, unknown> }

async function build(engine: 'vm' | 'docker', dir: string, tag: string): Promise<Built> {
  const t0 = Date.now();
  const r = await runCli(['rootfs', '--engine', engine, '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', tag, '--free-space', '64M', ...(engine === 'vm' ? ['--accel', 'tcg', '--mem', '1024'] : [])], { env });
  times[`${tag} (${engine})`] = Math.round((Date.now() - t0) / 1000);
  if (r.code !== 0) process.stderr.write(`${engine} build of ${tag} failed:\n${r.stderr.split('\n').slice(-30).join('\n')}\n`);
  expectJsonResult(r);
  const rootfs = (JSON.parse(r.stdout) as { rootfs: string }).rootfs;
  const inspect = JSON.parse((await runCli(['image', 'inspect', tag], { env })).stdout) as { metadata: { config: Record<string, unknown> } };
  return { rootfs, config: inspect.metadata.config };
}

/** Paths Docker fills per container or build (bind-mounted hosts, hostname, resolv.conf): not the Dockerfile's. */
const BUILD_DEPENDENT = ['/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/.dockerenv'];

/**
 * What a build leaves that depends on when and how fast it ran, not on what the Dockerfile says: left out
 * of the comparison, each for its reason (each differed between the engines' builds here). Not left out,
 * because they came out the same: /var/lib/apt/lists (every Dockerfile here removes the lists it fetched),
 * debconf's `*-old` backups, and any .pyc files (their headers hold their sources' mtimes, which come from
 * the packages; the app sets PYTHONDONTWRITEBYTECODE). /etc/shadow's last-change day is the build's day:
 * both engines build on the same day here.
 */
const RUN_DEPENDENT: RegExp[] = [
  // apt's and dpkg's logs: timestamps on every line.
  /^\/var\/log\/apt(\/|$)/,
  /^\/var\/log\/dpkg\.log$/,
  /^\/var\/log\/alternatives\.log$/,
  // apt's binary caches of the package lists: they hold the lists' fetch times and the mirror's Release dates.
  /^\/var\/cache\/apt(\/|$)/,
  // ldconfig's auxiliary cache: keyed by each library's inode, size and ctime on the build's file system.
  /^\/var\/cache\/ldconfig\/aux-cache$/,
];

function comparable(t: Tree): Tree {
  const out: Tree = {};
  for (const [p, n] of Object.entries(t)) {
    if (BUILD_DEPENDENT.includes(p) || RUN_DEPENDENT.some((re) => re.test(p))) continue;
    out[p] = n.type === 'dir' ? { ...n, size: undefined } : n;
  }
  return out;
}

function treeDiff(vt: Tree, dt: Tree): { p: string; vm: Tree[string] | undefined; docker: Tree[string] | undefined }[] {
  return [...new Set([...Object.keys(vt), ...Object.keys(dt)])].filter((p) => JSON.stringify(vt[p]) !== JSON.stringify(dt[p])).map((p) => ({ p, vm: vt[p], docker: dt[p] }));
}

/** Both engines' trees and image configs, compared. */
async function same(vm: Built, dk: Built): Promise<Tree> {
  const vfull = await ext4Tree(vm.rootfs);
  const dfull = await ext4Tree(dk.rootfs);
  // What the exclusions hid this time (reported, not checked: they differ only when a build's timing does).
  const hidden = treeDiff(vfull, dfull).filter((d) => RUN_DEPENDENT.some((re) => re.test(d.p))).map((d) => d.p);
  if (hidden.length) process.stderr.write(`real-dockerfiles: excluded paths that differ: ${hidden.join(' ')}\n`);
  const vt = comparable(vfull);
  const dt = comparable(dfull);
  expect(treeDiff(vt, dt)).toEqual([]);
  const pick = (c: Record<string, unknown>): Record<string, unknown> => ({ entrypoint: c.entrypoint, cmd: c.cmd, user: c.user, workingDir: c.workingDir, env: c.env, exposedPorts: c.exposedPorts });
  expect(pick(vm.config)).toEqual(pick(dk.config));
  return vt;
}

describe('real Dockerfiles: the vm engine and the Docker engine give the same tree', () => {
  test("docker-library's buildpack-deps: bookworm curl, then scm FROM it", async () => {
    const curlVm = await build('vm', context('buildpack-deps/bookworm/curl'), 'fbtest/bpd-curl:vm');
    const curlDk = await build('docker', context('buildpack-deps/bookworm/curl'), 'fbtest/bpd-curl:docker');
    const curl = await same(curlVm, curlDk);
    expect(curl['/usr/bin/curl']).toMatchObject({ type: 'file' });
    expect(curl['/usr/bin/wget']).toMatchObject({ type: 'file' });
    expect(curl['/usr/bin/sq']).toMatchObject({ type: 'file' });
    expect(curl['/etc/ssl/certs/ca-certificates.crt']).toMatchObject({ type: 'file' });
    // buildpack-deps removes the package lists it fetched.
    expect(Object.keys(curl).filter((p) => p.startsWith('/var/lib/apt/lists/'))).toEqual([]);
    const scmVm = await build('vm', context('buildpack-deps/bookworm/scm', 'fbtest/bpd-curl:vm'), 'fbtest/bpd-scm:vm');
    const scmDk = await build('docker', context('buildpack-deps/bookworm/scm', 'fbtest/bpd-curl:docker'), 'fbtest/bpd-scm:docker');
    const scm = await same(scmVm, scmDk);
    for (const tool of ['git', 'hg', 'svn', 'ssh', 'ps']) expect(scm[`/usr/bin/${tool}`]).toBeDefined();
  }, 60 * 60_000);

  test('a compiled service: a gcc build stage, its binary copied into a slim runtime stage', async () => {
    const vm = await build('vm', context('c-service'), 'fbtest/c-service:vm');
    const dk = await build('docker', context('c-service'), 'fbtest/c-service:docker');
    const t = await same(vm, dk);
    expect(t['/usr/local/bin/hello-svc']).toMatchObject({ type: 'file', mode: '755', uid: 0, gid: 0 });
    // The runtime stage has no toolchain: only the binary came over.
    expect(t['/usr/bin/gcc']).toBeUndefined();
    expect(vm.config).toMatchObject({ entrypoint: ['/usr/local/bin/hello-svc'], cmd: ['8080'], user: '65534:65534' });
  }, 40 * 60_000);

  test('an interpreter app: python3 from Debian, its own user, WORKDIR, COPY --chown, exec-form ENTRYPOINT', async () => {
    const vm = await build('vm', context('python-app'), 'fbtest/python-app:vm');
    const dk = await build('docker', context('python-app'), 'fbtest/python-app:docker');
    const t = await same(vm, dk);
    expect(t['/app']).toMatchObject({ type: 'dir', uid: 0, gid: 0 });
    expect(t['/app/main.py']).toMatchObject({ type: 'file', uid: 10001, gid: 10001 });
    expect(t['/app/greeting.py']).toMatchObject({ type: 'file', uid: 10001, gid: 10001 });
    expect(vm.config).toMatchObject({ entrypoint: ['python3', '/app/main.py'], user: 'app', workingDir: '/app' });
  }, 40 * 60_000);
});
