import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO, expectJsonResult, lines, runCli, tempDir } from '../helpers/cli.js';
import { bodyDefinition, validate } from '../helpers/firecracker-schema.js';
import { DOCKER, ext4Tree, rawTar, type Tree } from '../helpers/trees.js';
import { importTestKernel } from '../helpers/vm.js';
import { annotations, runAction, type ActionRun } from '../helpers/runner.js';
import { startResultsService } from '../helpers/results-service.js';
import { serveDir } from '../helpers/servers.js';
import { factsOf, summaryTables } from '../helpers/summary-render.js';

/** The job summary's first table, as GitHub renders it, as name -> value. */
const summaryFacts = (summary: string): Record<string, string> => factsOf(summaryTables(summary)[0]!);

/**
 * `rootfs --engine vm`: RUN steps execute inside a microVM booted (QEMU, TCG here) from the stage's
 * image, COPY/ADD/WORKDIR are applied offline; no step touches the host. The reference for the file
 * trees is the Docker engine's build of the same Dockerfile (`--engine docker`, the classic builder on
 * this machine) from the same stored base image.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const BASE = 'fbtest/vmbase:1';
const CAP_NET_RAW = '0100000200200000000000000000000000000000';

function writeCtx(name: string, files: Record<string, string>): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), text);
  }
  return dir;
}

const vmBuild = (dir: string, tag: string, extra: string[] = []): ReturnType<typeof runCli> =>
  runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', tag, '--accel', 'tcg', ...extra], { env });

/**
 * The file's own TMPDIR for every build it runs: other test files build in parallel Jest workers, so a
 * look at the shared /tmp (or at every process on the host) would see their work directories too.
 */
const buildTmp = (): string => path.join(work, 'tmp');

function leftovers(): string[] {
  return fs.readdirSync(buildTmp()).filter((n) => n.startsWith('firebuild-vmbuild-'));
}

beforeAll(async () => {
  work = await tempDir('firebuild-vmengine-');
  fs.mkdirSync(buildTmp());
  // docker.io itself at a port fetch refuses outright: a base found nowhere never reaches the internet.
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: buildTmp(), FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:1', FIREBUILD_REGISTRY_MIRRORS: '' };
  expect(await importTestKernel(env)).toBe(0);
  const base = writeCtx('base', { Dockerfile: `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN true\n` });
  const r = await runCli(['baseos', '--dockerfile', path.join(base, 'Dockerfile'), '--tag', BASE, '--free-space', '64M'], { env });
  expectJsonResult(r);
}, 10 * 60_000);

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** Paths Docker itself fills per container or build (bind-mounted hosts, hostname, resolv.conf). */
const BUILD_DEPENDENT = ['/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/.dockerenv'];

function comparable(t: Tree): Tree {
  const out: Tree = {};
  for (const [p, n] of Object.entries(t)) {
    if (BUILD_DEPENDENT.includes(p)) continue;
    // Directory sizes depend on the history of the directory's entries, not on the tree.
    out[p] = n.type === 'dir' ? { ...n, size: undefined } : n;
  }
  return out;
}

/** Every path whose entry differs between the vm engine's tree and the Docker engine's. */
function treeDiff(vt: Tree, dt: Tree): { p: string; vm: Tree[string] | undefined; docker: Tree[string] | undefined }[] {
  return [...new Set([...Object.keys(vt), ...Object.keys(dt)])]
    .filter((p) => JSON.stringify(vt[p]) !== JSON.stringify(dt[p]))
    .map((p) => ({ p, vm: vt[p], docker: dt[p] }));
}

describe('rootfs --engine vm', () => {
  test('RUN, COPY (--chown by name), ADD of a local tar, WORKDIR, USER, ENV, ARG, multi-stage COPY --from: the same tree as the Docker engine builds', async () => {
    const dir = writeCtx('app', {
      'a.txt': 'file a\n',
      'd/sub/x': 'x\n',
      'd/y': 'y\n',
      'ignored.log': 'no\n',
      '.dockerignore': '*.log\n',
      Dockerfile: [
        `FROM ${BASE} AS builder`,
        'RUN mkdir -p /out && echo built > /out/artifact && chmod 0750 /out/artifact',
        `FROM ${BASE}`,
        'ARG GREETING=hello',
        'ENV APP_HOME=/srv/app',
        'RUN echo "$GREETING" > /greeting && useradd --uid 1234 --create-home app && echo tmp > /tmp/kept',
        'COPY a.txt /srv/',
        'COPY --chown=app:app d /srv/d',
        'COPY --from=builder /out/artifact /opt/artifact',
        'ADD files.tar /opt/unpacked/',
        'WORKDIR $APP_HOME/work',
        'RUN touch made-here && ls -a > listing.txt && echo "$APP_HOME $GREETING" > env.txt',
        'USER app',
        'RUN id -un > /srv/d/whoami && echo "$HOME" > /srv/d/home',
        'CMD ["cat", "/greeting"]',
        '',
      ].join('\n'),
    });
    fs.mkdirSync(path.join(work, 'tarsrc', 't'), { recursive: true });
    fs.writeFileSync(path.join(work, 'tarsrc', 't', 'one'), 'one\n');
    execFileSync('tar', ['-cf', path.join(dir, 'files.tar'), '--owner=0', '--group=0', '-C', path.join(work, 'tarsrc'), 't']);
    const vm = await vmBuild(dir, 'fbtest/vm-app:1', ['--build-arg', 'GREETING=hi']);
    expectJsonResult(vm);
    const v = JSON.parse(vm.stdout) as { rootfs: string; executed: number; cached: number; builder: string };
    expect(v).toMatchObject({ builder: 'vm', executed: 9, cached: 0 });
    const dk = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/docker-app:1', '--build-arg', 'GREETING=hi'], { env });
    expectJsonResult(dk);
    const vt = comparable(await ext4Tree(v.rootfs));
    const dt = comparable(await ext4Tree((JSON.parse(dk.stdout) as { rootfs: string }).rootfs));
    expect(treeDiff(vt, dt)).toEqual([]);
    // And what the steps made is there, with Docker's owners.
    expect(vt['/srv/d/sub/x']).toMatchObject({ uid: 1234, gid: 1234, type: 'file' });
    expect(vt['/srv/a.txt']).toMatchObject({ uid: 0, gid: 0, mode: '644' });
    expect(vt['/srv/ignored.log']).toBeUndefined();
    expect(vt['/tmp/kept']).toMatchObject({ type: 'file' });
    expect(vt['/opt/unpacked/t/one']).toMatchObject({ type: 'file', uid: 0 });
    expect(vt['/srv/d/whoami']).toMatchObject({ uid: 1234 });
    expect(vt['/.firebuild']).toBeUndefined();
    expect(leftovers()).toEqual([]);
  }, 20 * 60_000);

  test('ARG/ENV scoping, SHELL, USER switching, WORKDIR chains, ADD of a URL, COPY --from an index: the same tree as the Docker engine builds', async () => {
    const srv = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'last-modified': 'Tue, 01 Sep 2026 10:00:00 GMT' });
      res.end(`served ${req.url}\n`);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}/payload.txt`;
    try {
      const dir = writeCtx('conf2', {
        Dockerfile: [
          `ARG BASE=${BASE}`,
          'FROM $BASE',
          'RUN echo zero > /from-zero',
          'FROM $BASE',
          'ARG VERSION=1.0',
          'ENV APP_VERSION=v$VERSION',
          'ARG LATE',
          'RUN echo "version=$VERSION app=$APP_VERSION late=${LATE:-unset}" > /args.txt',
          'SHELL ["/bin/bash", "-c"]',
          'RUN echo "$((6*7)) ${BASH_VERSION%%.*}" > /bash.txt',
          'RUN useradd --uid 2000 --create-home worker && mkdir -p /data && chown worker /data',
          'USER worker',
          'RUN whoami > /data/who1 && id -u > /data/uid1',
          'USER root',
          'RUN whoami > /data/who2 && chmod 0640 /data/who2',
          'WORKDIR /a',
          'WORKDIR b',
          'WORKDIR ../c',
          'RUN pwd > /pwd.txt',
          `ADD ${url} /downloads/`,
          'COPY --from=0 /from-zero /copied-from-zero',
          '',
        ].join('\n'),
      });
      // The URL is on 127.0.0.1, a host-only address: allowed here with --allow-host-urls (net/host-only.ts).
      const vm = await vmBuild(dir, 'fbtest/vm-conf2:1', ['--build-arg', 'LATE=given', '--allow-host-urls']);
      expectJsonResult(vm);
      const dk = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/docker-conf2:1', '--build-arg', 'LATE=given', '--allow-host-urls'], { env });
      expectJsonResult(dk);
      const vt = comparable(await ext4Tree((JSON.parse(vm.stdout) as { rootfs: string }).rootfs));
      const dt = comparable(await ext4Tree((JSON.parse(dk.stdout) as { rootfs: string }).rootfs));
      expect(treeDiff(vt, dt)).toEqual([]);
      expect(vt['/downloads/payload.txt']).toMatchObject({ mode: '600', uid: 0 });
      expect(vt['/a/c']).toMatchObject({ type: 'dir' });
      expect(vt['/data/uid1']).toMatchObject({ uid: 2000 });
      // ARG values reach RUN but not the image's environment; ENV does.
      const meta = JSON.parse((await runCli(['image', 'inspect', 'fbtest/vm-conf2:1'], { env })).stdout) as { metadata: { config: { env: string[] } } };
      expect(meta.metadata.config.env).toContain('APP_VERSION=v1.0');
      expect(meta.metadata.config.env.some((e) => e.startsWith('VERSION=') || e.startsWith('LATE='))).toBe(false);
    } finally {
      srv.close();
    }
  }, 20 * 60_000);

  test("the Docker-engine issue's cases (COPY --chown by name and number, ADD of a tar.gz keeping its owners and of a URL, COPY --from keeping owners, hard links, devices, FIFOs and capabilities, symlinks, hard links, setuid, setcap, mknod): the same tree as the Docker engine builds", async () => {
    const site = path.join(work, 'site-d');
    fs.mkdirSync(site, { recursive: true });
    execFileSync('sh', ['-c', `mkdir -p r && echo remote > r/remote.txt && tar -czf ${site}/remote.tar.gz -C r remote.txt`], { cwd: work });
    const web = await serveDir(site);
    try {
      const dir = writeCtx('dockercases', {
        'by-name.txt': 'owned by app\n',
        'by-number.txt': 'owned by 1234\n',
        'tree/a.txt': 'a\n',
        'tree/sub/b.txt': 'b\n',
        'tree/scratch.tmp': 'ignored\n',
        'secret.txt': 'never in the image\n',
        '.dockerignore': 'secret.txt\ntree/*.tmp\n',
        Dockerfile: [
          `FROM ${BASE} AS build`,
          'RUN mkdir -p /out/sub && echo built > /out/built.txt && ln /out/built.txt /out/built-hard.txt && echo s > /out/sub/s && chown -R 777:888 /out/sub && mknod /out/null c 1 3 && mkfifo /out/fifo && ln -s /etc/passwd /out/abs && cp /bin/true /out/cap && setcap cap_net_raw+ep /out/cap',
          `FROM ${BASE}`,
          'RUN useradd --create-home --uid 1500 app && groupadd --gid 1600 crew',
          'COPY --chown=app:app by-name.txt /home/app/',
          'COPY --chown=1234:1600 by-number.txt /srv/',
          'ADD bundle.tar.gz /opt/bundle/',
          `ADD ${web.url}/remote.tar.gz /opt/remote.tar.gz`,
          'COPY --from=build /out/ /opt/from-build/',
          'COPY --from=build /out/sub/s /opt/single',
          'COPY tree/ /srv/tree/',
          'RUN ln -s /srv/tree/a.txt /srv/link-abs && ln -s tree/a.txt /srv/link-rel && ln /srv/by-number.txt /srv/hard.txt',
          'RUN cp /bin/true /usr/local/bin/suid-true && chmod 4755 /usr/local/bin/suid-true',
          'RUN cp /bin/true /usr/local/bin/ping-like && setcap cap_net_raw+ep /usr/local/bin/ping-like',
          'RUN mknod /srv/null-dev c 1 3 && mkfifo /srv/fifo',
          'WORKDIR /srv/work',
          'USER app',
          'ENV GREETING=hello',
          'EXPOSE 8080',
          'CMD ["cat", "/home/app/by-name.txt"]',
          '',
        ].join('\n'),
      });
      // A tar.gz whose entries carry their own owners, a setuid bit and a hard link.
      execFileSync('sh', ['-c', 'rm -rf b && mkdir -p b/t && echo inside > b/t/inside && ln b/t/inside b/t/inside-hard && cp /bin/true b/t/suid && chmod 4755 b/t/suid && tar -czf "$0/bundle.tar.gz" --owner=1234 --group=2345 -C b t && rm -r b', dir], { cwd: work });
      const vm = await vmBuild(dir, 'fbtest/vm-dockercases:1', ['--allow-host-urls']); // web.url is on 127.0.0.1
      expectJsonResult(vm);
      const dk = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/docker-dockercases:1', '--allow-host-urls'], { env });
      expectJsonResult(dk);
      const vt = comparable(await ext4Tree((JSON.parse(vm.stdout) as { rootfs: string }).rootfs, { xattrs: true }));
      const dt = comparable(await ext4Tree((JSON.parse(dk.stdout) as { rootfs: string }).rootfs, { xattrs: true }));
      expect(treeDiff(vt, dt)).toEqual([]);
      expect(vt['/home/app/by-name.txt']).toMatchObject({ uid: 1500, gid: 1500 });
      expect(vt['/srv/by-number.txt']).toMatchObject({ uid: 1234, gid: 1600, links: ['/srv/by-number.txt', '/srv/hard.txt'] });
      expect(vt['/opt/bundle/t/inside']).toMatchObject({ uid: 1234, gid: 2345, links: ['/opt/bundle/t/inside', '/opt/bundle/t/inside-hard'] });
      expect(vt['/opt/bundle/t/suid']).toMatchObject({ mode: '4755', uid: 1234 });
      expect(vt['/opt/remote.tar.gz']?.type).toBe('file');
      expect(vt['/opt/from-build/built-hard.txt']?.links).toEqual(['/opt/from-build/built-hard.txt', '/opt/from-build/built.txt']);
      expect(vt['/opt/from-build/sub/s']).toMatchObject({ uid: 777, gid: 888 });
      expect(vt['/opt/single']).toMatchObject({ uid: 777, gid: 888 });
      expect(vt['/opt/from-build/null']).toMatchObject({ type: 'char', rdev: '1:3' });
      expect(vt['/opt/from-build/fifo']).toMatchObject({ type: 'fifo' });
      expect(vt['/opt/from-build/abs']).toMatchObject({ type: 'symlink', link: '/etc/passwd' });
      expect(vt['/opt/from-build/cap']?.xattrs?.['security.capability']).toBe(CAP_NET_RAW);
      expect(vt['/usr/local/bin/ping-like']?.xattrs?.['security.capability']).toBe(CAP_NET_RAW);
      expect(vt['/usr/local/bin/suid-true']?.mode).toBe('4755');
      expect(vt['/srv/null-dev']).toMatchObject({ type: 'char', rdev: '1:3' });
      expect(vt['/srv/tree/scratch.tmp']).toBeUndefined();
      expect(vt['/secret.txt']).toBeUndefined();
      execFileSync('e2fsck', ['-fn', (JSON.parse(vm.stdout) as { rootfs: string }).rootfs], { stdio: 'pipe' });
    } finally {
      await web.close();
    }
  }, 20 * 60_000);

  test('FROM scratch, and COPY --from an external image (one the Docker engine has, and a stored firebuild image): the same tree as the Docker engine builds', async () => {
    const ext = `${process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000'}/debian:bookworm-slim`;
    const dir = writeCtx('scratch', {
      'hello.txt': 'hello from scratch\n',
      Dockerfile: ['FROM scratch', 'COPY hello.txt /hello.txt', `COPY --from=${ext} /etc/debian_version /etc/`, `COPY --from=${ext} /usr/share/doc/bash/ /doc/bash/`, 'CMD ["/hello"]', ''].join('\n'),
    });
    const vm = await vmBuild(dir, 'fbtest/vm-scratch:1');
    expectJsonResult(vm);
    const dk = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/docker-scratch:1'], { env });
    expectJsonResult(dk);
    const vt = comparable(await ext4Tree((JSON.parse(vm.stdout) as { rootfs: string }).rootfs));
    // docker export adds the container's init layer (/etc/mtab, /dev, /proc, /sys, /.dockerenv): not the image's.
    const INIT_LAYER = /^\/(etc\/mtab|dev|proc|sys)(\/|$)/;
    const dt = Object.fromEntries(Object.entries(comparable(await ext4Tree((JSON.parse(dk.stdout) as { rootfs: string }).rootfs))).filter(([p]) => !INIT_LAYER.test(p)));
    expect(treeDiff(Object.fromEntries(Object.entries(vt).filter(([p]) => !INIT_LAYER.test(p))), dt)).toEqual([]);
    expect(Object.keys(vt).sort()).toEqual(expect.arrayContaining(['/hello.txt', '/etc/debian_version', '/doc/bash/copyright']));
    expect(Object.keys(vt).filter((p) => p.startsWith('/usr'))).toEqual([]);
    // A stored firebuild image as the source: read in place.
    const fromStored = writeCtx('fromstored', { Dockerfile: ['FROM scratch', `COPY --from=${BASE} /etc/os-release /os-release`, ''].join('\n') });
    const st = await vmBuild(fromStored, 'fbtest/vm-fromstored:1');
    expectJsonResult(st);
    const { Ext4Reader } = await import('../../src/rootfs/debugfs.js');
    const base = JSON.parse((await runCli(['image', 'inspect', BASE], { env })).stdout) as { rootfs: string };
    expect((await new Ext4Reader((JSON.parse(st.stdout) as { rootfs: string }).rootfs).readFile('/os-release')).toString()).toBe((await new Ext4Reader(base.rootfs).readFile('/usr/lib/os-release')).toString()); // /etc/os-release links there: followed, as Docker does
    expect((await new Ext4Reader((JSON.parse(st.stdout) as { rootfs: string }).rootfs).readFile('/os-release')).toString()).toContain('Debian GNU/Linux');
    // An external image found nowhere: one line at its COPY.
    const missing = writeCtx('fromnowhere', { Dockerfile: ['FROM scratch', 'COPY --from=fbtest/nowhere:1 /x /x', ''].join('\n') });
    const r = await vmBuild(missing, 'fbtest/vm-fromnowhere:1');
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n').pop()).toMatch(/Dockerfile:2: COPY --from=fbtest\/nowhere:1: image fbtest\/nowhere:1 not found/);
    expect(leftovers()).toEqual([]);
  }, 20 * 60_000);

  test('BuildKit semantics the classic builder lacks: ADD --chown applies to the archive\'s entries, COPY --chmod; compared with the tree Docker documents', async () => {
    const dir = writeCtx('buildkit-only', {
      'run.sh': '#!/bin/sh\necho run\n',
      Dockerfile: [`FROM ${BASE}`, 'ADD --chown=5:6 owned.tar.gz /opt/owned/', 'COPY --chmod=0750 run.sh /usr/local/bin/run.sh', 'COPY --chown=7:8 --chmod=0600 run.sh /root/run.sh', ''].join('\n'),
    });
    execFileSync('sh', ['-c', 'rm -rf b && mkdir -p b/t && echo x > b/t/x && tar -czf "$0/owned.tar.gz" --owner=1234 --group=2345 -C b t && rm -r b', dir], { cwd: work });
    const vm = await vmBuild(dir, 'fbtest/vm-buildkit-only:1');
    expectJsonResult(vm);
    const t = await ext4Tree((JSON.parse(vm.stdout) as { rootfs: string }).rootfs);
    expect(t['/opt/owned']).toMatchObject({ type: 'dir', uid: 5, gid: 6, mode: '755' });
    expect(t['/opt/owned/t']).toMatchObject({ type: 'dir', uid: 5, gid: 6 });
    expect(t['/opt/owned/t/x']).toMatchObject({ type: 'file', uid: 5, gid: 6, mode: '644' });
    expect(t['/usr/local/bin/run.sh']).toMatchObject({ mode: '750', uid: 0, gid: 0 });
    expect(t['/root/run.sh']).toMatchObject({ mode: '600', uid: 7, gid: 8 });
  }, 10 * 60_000);

  test('a base only the local Docker engine has: converted, then built on; the same tree as the Docker engine builds', async () => {
    const dir = writeCtx('dockerbase', { Dockerfile: `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN echo from-docker-base > /marker && mkdir -p /var/lib/app\n` });
    const vm = await vmBuild(dir, 'fbtest/vm-dockerbase:1');
    expectJsonResult(vm);
    const dk = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/docker-dockerbase:1'], { env });
    expectJsonResult(dk);
    const vt = comparable(await ext4Tree((JSON.parse(vm.stdout) as { rootfs: string }).rootfs));
    const dt = comparable(await ext4Tree((JSON.parse(dk.stdout) as { rootfs: string }).rootfs));
    expect(treeDiff(vt, dt)).toEqual([]);
    expect(vt['/marker']).toMatchObject({ type: 'file' });
  }, 10 * 60_000);

  test('a base pulled from an OCI registry: layers applied with whiteouts and opaque directories; the same tree as the Docker engine builds', async () => {
    const ref = `127.0.0.1:5000/fbtest/vmbase-wh:${process.pid}`;
    const layered = writeCtx('layered', { Dockerfile: `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN echo lower > /etc/lower && mkdir -p /opt/o && echo a > /opt/o/a\nRUN rm /etc/issue.net /etc/lower && rm -rf /opt/o && mkdir /opt/o && echo b > /opt/o/b\n` });
    execFileSync(DOCKER, ['build', '-q', '-t', ref, layered], { env: { ...process.env, DOCKER_BUILDKIT: '0' }, stdio: 'pipe' });
    execFileSync(DOCKER, ['push', ref], { stdio: 'pipe' });
    // Not in the store; the engine has it too, so take it out of the engine's way: the vm engine must pull.
    execFileSync(DOCKER, ['rmi', ref], { stdio: 'pipe' });
    const dir = writeCtx('fromregistry', { Dockerfile: `FROM ${ref}\nRUN echo on-top > /top\n` });
    const vm = await vmBuild(dir, 'fbtest/vm-registry:1');
    expectJsonResult(vm);
    execFileSync(DOCKER, ['pull', '-q', ref], { stdio: 'pipe' });
    const dk = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/docker-registry:1'], { env });
    expectJsonResult(dk);
    const vt = Object.fromEntries(Object.entries(comparable(await ext4Tree((JSON.parse(vm.stdout) as { rootfs: string }).rootfs))).filter(([p]) => p !== '/dev/console'));
    // The Docker engine's side comes through `docker export`, which adds the container's init layer
    // (/etc/mtab, and /dev/console as an empty file where the image has a device node): not the image's.
    const dt = Object.fromEntries(Object.entries(comparable(await ext4Tree((JSON.parse(dk.stdout) as { rootfs: string }).rootfs))).filter(([p]) => p !== '/etc/mtab' && p !== '/dev/console'));
    expect(treeDiff(vt, dt)).toEqual([]);
    expect(vt['/etc/issue.net']).toBeUndefined();
    expect(vt['/etc/lower']).toBeUndefined();
    expect(Object.keys(vt).filter((p) => p.startsWith('/opt/o/'))).toEqual(['/opt/o/b']);
    expect(vt['/top']).toMatchObject({ type: 'file' });
  }, 10 * 60_000);

  test('heredoc RUN (BuildKit syntax the classic builder lacks): compared with the tree Docker documents', async () => {
    const dir = writeCtx('heredoc', {
      Dockerfile: [`FROM ${BASE}`, 'SHELL ["/bin/bash", "-c"]', 'RUN <<EOT', 'echo "heredoc $((1+2))" > /hd', 'EOT', 'RUN cat > /hd2 <<EOT', 'second', 'EOT', ''].join('\n'),
    });
    const vm = await vmBuild(dir, 'fbtest/vm-heredoc:1');
    expectJsonResult(vm);
    const { Ext4Reader } = await import('../../src/rootfs/debugfs.js');
    const reader = new Ext4Reader((JSON.parse(vm.stdout) as { rootfs: string }).rootfs);
    expect((await reader.readFile('/hd')).toString()).toBe('heredoc 3\n');
    expect((await reader.readFile('/hd2')).toString()).toBe('second\n');
  }, 10 * 60_000);

  test('the network unreachable inside the build VM: the RUN fails with its line and says so', async () => {
    const dir = writeCtx('nonet', { Dockerfile: `FROM ${BASE}
RUN bash -c 'echo > /dev/tcp/10.0.2.2/9'
` });
    const r = await vmBuild(dir, 'fbtest/vm-nonet:1');
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n').pop()).toMatch(/RUN at Dockerfile:2 failed with exit code 1 \(the network is unreachable inside the build VM\): .*Connection refused/);
    expect(leftovers()).toEqual([]);
  }, 10 * 60_000);

  test('Firecracker build VMs (test doubles for firecracker and the jailer): every API request valid against the schema, the disk taken back from a jail on another file system, a failing step reported, nothing left', async () => {
    const FC = path.join(REPO, 'test', 'fixtures', 'firecracker', 'firecracker');
    const JAILER = path.join(REPO, 'test', 'fixtures', 'firecracker', 'jailer');
    // /dev/shm is another file system than the build's work directory: the jail gets a copy of the disk, not a hard link.
    const jails = fs.mkdtempSync('/dev/shm/fbtest-jails-');
    const fcFlags = ['--backend', 'firecracker', '--binary-firecracker', FC, '--binary-jailer', JAILER, '--chroot-base', jails];
    try {
      const dir = writeCtx('firecracker', { 'f.txt': 'f\n', Dockerfile: [`FROM ${BASE}`, 'RUN echo from-the-step > /x', 'COPY f.txt /f.txt', ''].join('\n') });
      const r = await vmBuild(dir, 'fbtest/vm-firecracker:1', fcFlags);
      expectJsonResult(r);
      expect(JSON.parse(r.stdout)).toMatchObject({ builder: 'vm', executed: 2 });
      const tree = await ext4Tree((JSON.parse(r.stdout) as { rootfs: string }).rootfs);
      const { Ext4Reader } = await import('../../src/rootfs/debugfs.js');
      // What the double wrote into the jailed disk reached the stored image: the step's argv, as the guest got it.
      expect(JSON.parse((await new Ext4Reader((JSON.parse(r.stdout) as { rootfs: string }).rootfs).readFile('/.mock-firecracker-ran')).toString())).toEqual(['/bin/sh', '-c', 'echo from-the-step > /x']);
      expect(tree['/f.txt']).toMatchObject({ type: 'file' });
      expect(Object.keys(tree).filter((p) => p.startsWith('/.firebuild'))).toEqual([]);
      const reqs = lines(fs.readFileSync(path.join(jails, 'api-requests.jsonl'), 'utf8')).map((l) => JSON.parse(l) as { method: string; path: string; body: Record<string, unknown> });
      expect(reqs.map((q) => q.path)).toEqual(['/serial', '/machine-config', '/boot-source', '/drives/rootfs', '/drives/disk0', '/actions']);
      for (const q of reqs) {
        const def = bodyDefinition(q.method, q.path);
        expect({ path: q.path, def, errors: def ? validate(def, q.body) : 'no such request' }).toEqual({ path: q.path, def, errors: null });
      }
      expect(reqs.find((q) => q.path === '/boot-source')?.body.boot_args).toMatch(/reboot=k .*init=\/\.firebuild\/init/);
      expect(reqs.find((q) => q.path === '/drives/disk0')?.body).toMatchObject({ is_read_only: true, is_root_device: false });
      // A step that fails in the guest: its line and code, nothing stored.
      fs.writeFileSync(path.join(jails, 'build-exit-code'), '3\n');
      const fail = writeCtx('firecracker-fail', { Dockerfile: [`FROM ${BASE}`, 'RUN exit 3', ''].join('\n') });
      const f = await vmBuild(fail, 'fbtest/vm-firecracker-fail:1', fcFlags);
      expect(f.code).not.toBe(0);
      expect(f.stderr.trim().split('\n').pop()).toMatch(/Dockerfile:2: RUN at Dockerfile:2 failed with exit code 3/);
      expect((await runCli(['image', 'ls'], { env })).stdout).not.toContain('fbtest/vm-firecracker-fail');
      // Nothing left: no jail, no run-cache entry, no work directory.
      expect(fs.existsSync(path.join(jails, 'firecracker')) ? fs.readdirSync(path.join(jails, 'firecracker')) : []).toEqual([]);
      expect(fs.existsSync(path.join(work, 'home', 'run')) ? fs.readdirSync(path.join(work, 'home', 'run')) : []).toEqual([]);
      expect(leftovers()).toEqual([]);
    } finally {
      fs.rmSync(jails, { recursive: true, force: true });
    }
  }, 10 * 60_000);

  test('the CNI build network (inside a test network namespace): RUN reaches a server on the build bridge; the netns, the lease and the VM are gone after', async () => {
    const SUBNET = '192.168.126';
    const ns = `fbb-${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    const server = spawn('ip', ['netns', 'exec', ns, 'python3', '-m', 'http.server', '8099', '--bind', '0.0.0.0', '--directory', work], { stdio: 'ignore' });
    try {
      execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
      fs.writeFileSync(path.join(work, 'payload.txt'), 'served on the build bridge\n');
      const confDir = path.join(work, 'cni-builds');
      fs.mkdirSync(confDir, { recursive: true });
      fs.writeFileSync(path.join(confDir, '10-machine-builds.conflist'), JSON.stringify({
        cniVersion: '1.0.0',
        name: 'machine-builds',
        plugins: [
          { type: 'bridge', bridge: 'fbbuild0', isGateway: true, ipMasq: false, ipam: { type: 'host-local', subnet: `${SUBNET}.0/24`, dataDir: path.join(work, 'ipam-builds') } },
          { type: 'firewall' },
        ],
      }));
      const dir = writeCtx('cni', {
        Dockerfile: [`FROM ${BASE}`, `RUN bash -c 'exec 3<>/dev/tcp/${SUBNET}.1/8099 && printf "GET /payload.txt HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3' > /fetched && ip -4 -o addr show 2>/dev/null > /addr || cat /proc/net/fib_trie > /addr`, ''].join('\n'),
      });
      const before = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
      const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/vm-cni:1', '--accel', 'tcg', '--cni-network-name', 'machine-builds', '--cni-conf-dir', confDir, '--cni-bin-dir', '/usr/lib/cni'], { env, wrap: ['nsenter', `--net=/run/netns/${ns}`, '--'] });
      expectJsonResult(r);
      const { Ext4Reader } = await import('../../src/rootfs/debugfs.js');
      const reader = new Ext4Reader((JSON.parse(r.stdout) as { rootfs: string }).rootfs);
      expect((await reader.readFile('/fetched')).toString()).toContain('served on the build bridge');
      expect((await reader.readFile('/addr')).toString()).toContain(`${SUBNET}.`);
      expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).toBe(before);
      const leases = fs.readdirSync(path.join(work, 'ipam-builds', 'machine-builds')).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
      expect(leases).toEqual([]);
      expect(leftovers()).toEqual([]);
    } finally {
      server.kill();
      execFileSync('ip', ['netns', 'del', ns]);
    }
  }, 10 * 60_000);

  test('the build-rootfs action with engine: vm, run as the runner runs it', async () => {
    const dir = writeCtx('action', { Dockerfile: `FROM ${BASE}\nRUN echo from-the-action > /action\n` });
    const r = await runAction('build-rootfs/index.js', { dockerfile: path.join(dir, 'Dockerfile'), tag: 'fbtest/vm-action:1', engine: 'vm' }, { ...env, FIREBUILD_ACCEL: 'tcg' });
    expect({ code: r.code, errors: annotations(r.stdout) }).toEqual({ code: 0, errors: [] });
    expect(r.outputs).toMatchObject({ tag: 'fbtest/vm-action:1', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(summaryFacts(r.summary)).toMatchObject({ builder: 'vm', steps: '1 run, 0 from the cache' });
  }, 10 * 60_000);

  test('the build-rootfs action carries the step cache between jobs through the Actions cache: a fresh runner runs no step; a change saves a new entry', async () => {
    const results = await startResultsService();
    try {
      const dir = writeCtx('actions-cache', { 'app.txt': 'v1\n', Dockerfile: [`FROM ${BASE}`, 'RUN echo cached-across-jobs > /step1', 'COPY app.txt /app.txt', 'RUN cat /app.txt > /step3', ''].join('\n') });
      const job = (n: string, tag: string): Promise<ActionRun> => runAction('build-rootfs/index.js', { dockerfile: path.join(dir, 'Dockerfile'), tag, engine: 'vm' }, { ...env, ...results.env, FIREBUILD_ACCEL: 'tcg', FIREBUILD_CACHE_DIR: path.join(work, `job-cache-${n}`) });
      const first = await job('1', 'fbtest/vm-actions-cache:1');
      expect({ code: first.code, errors: annotations(first.stdout), warnings: annotations(first.stdout, 'warning') }).toEqual({ code: 0, errors: [], warnings: [] });
      expect(first.outputs['step-cache-restored']).toBe('');
      expect(first.outputs['step-cache-saved']).toMatch(/^firebuild-vmsteps-1-fbtest-vm-actions-cache-[0-9a-f]{8}-[0-9a-f]{20}$/);
      expect(summaryFacts(first.summary)).toMatchObject({ steps: '3 run, 0 from the cache' });
      // The next job, on a fresh runner (an empty build cache): every step from the Actions cache, no VM booted.
      const second = await job('2', 'fbtest/vm-actions-cache:2');
      expect({ code: second.code, errors: annotations(second.stdout), warnings: annotations(second.stdout, 'warning') }).toEqual({ code: 0, errors: [], warnings: [] });
      expect(second.outputs).toMatchObject({ 'step-cache-restored': first.outputs['step-cache-saved'], 'step-cache-saved': '' });
      // The same file tree (the ext4 bytes differ: a file system records when it was made and resized).
      expect(await ext4Tree(second.outputs.rootfs!)).toEqual(await ext4Tree(first.outputs.rootfs!));
      expect(summaryFacts(second.summary)).toMatchObject({ steps: '0 run, 3 from the cache' });
      const cacheEntries = path.join(buildTmp(), `firebuild-${process.geteuid?.() ?? 0}`, 'cache');
      expect(fs.existsSync(cacheEntries) ? fs.readdirSync(cacheEntries).filter((n) => n.includes('vmsteps')) : []).toEqual([]);
      // The COPY's source changes: steps 1 restored, 2 and 3 run, and a new entry is saved.
      fs.writeFileSync(path.join(dir, 'app.txt'), 'v2\n');
      const third = await job('3', 'fbtest/vm-actions-cache:3');
      expect(third.code).toBe(0);
      expect(third.outputs['step-cache-restored']).toBe(first.outputs['step-cache-saved']);
      expect(third.outputs['step-cache-saved']).toMatch(/^firebuild-vmsteps-1-fbtest-vm-actions-cache-/);
      expect(third.outputs['step-cache-saved']).not.toBe(first.outputs['step-cache-saved']);
      expect(summaryFacts(third.summary)).toMatchObject({ steps: expect.stringMatching(/^2 run, /) });
      expect([...results.caches.values()].filter((e) => e.key.startsWith('firebuild-vmsteps-')).length).toBe(2);
    } finally {
      results.close();
    }
  }, 15 * 60_000);

  test('a step cache archive holding anything but entries (a path, a link) is refused and nothing of it is extracted', async () => {
    const { StepCache } = await import('../../src/engine/step-cache.js');
    const { MemoryLogger } = await import('../../src/util/logger.js');
    const cacheDir = path.join(work, 'evil-cache');
    const steps = new StepCache(cacheDir, 1024 ** 3, new MemoryLogger());
    const src = path.join(work, 'evil-src');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'sub', 'x'), 'x');
    fs.symlinkSync('/etc', path.join(src, `${'a'.repeat(64)}.ext4`));
    for (const [name, members] of [['path', ['sub/x']], ['link', [`${'a'.repeat(64)}.ext4`]]] as const) {
      const archive = path.join(work, `evil-${name}.tar.zst`);
      execFileSync('tar', ['--zstd', '-cf', archive, '-C', src, ...members]);
      await expect(steps.unpack(archive)).rejects.toThrow(/not a step cache entry: refusing it/);
    }
    expect(fs.existsSync(path.join(cacheDir, 'vm-steps')) ? fs.readdirSync(path.join(cacheDir, 'vm-steps')) : []).toEqual([]);
  });

  test('vm is the default engine for a Dockerfile: without a kernel, a RUN is one line naming the fix; a Dockerfile without RUN needs none; --docker-image still converts with the Docker engine', async () => {
    const bare = { FIREBUILD_HOME: path.join(work, 'no-kernel-home') };
    const withRun = writeCtx('default-run', { Dockerfile: `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN true\n` });
    const r = await runCli(['rootfs', '--dockerfile', path.join(withRun, 'Dockerfile'), '--tag', 'fbtest/default-run:1'], { env: bare });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n').pop()).toMatch(/^error: the vm engine boots RUN steps in microVMs, and no kernel stored: build the fast guest kernel with firebuild kernel build, or import one with firebuild kernel import .*; or build with --engine docker$/);
    const noRun = writeCtx('default-norun', { 'a.txt': 'a\n', Dockerfile: 'FROM scratch\nCOPY a.txt /a.txt\n' });
    const ok = await runCli(['rootfs', '--dockerfile', path.join(noRun, 'Dockerfile'), '--tag', 'fbtest/default-norun:1'], { env: bare });
    expectJsonResult(ok);
    expect(JSON.parse(ok.stdout)).toMatchObject({ builder: 'vm', executed: 1 });
    const conv = await runCli(['rootfs', '--docker-image', process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim', '--tag', 'fbtest/default-conv:1', '--free-space', '8M'], { env: bare });
    expectJsonResult(conv);
    expect(JSON.parse(conv.stdout)).toMatchObject({ builder: 'none' });
    expect(leftovers()).toEqual([]);
  }, 10 * 60_000);

  test('untrusted names and archives: a link target that would start a second debugfs command is refused; quotes in names are kept; a corrupt archive is one line; COPY --from follows symlinks', async () => {
    const inject = writeCtx('inject', { 'dir/ok.txt': 'ok\n', Dockerfile: `FROM ${BASE}\nCOPY dir/ /d/\n` });
    // A symlink inside a copied directory is copied as a link: its target reaches debugfs.
    fs.symlinkSync('x"\nwrite /etc/shadow /leaked\nsymlink "y" "z', path.join(inject, 'dir', 'evil'));
    const r = await vmBuild(inject, 'fbtest/vm-inject:1');
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n').pop()).toMatch(/holds a line break or NUL, which firebuild does not write into images/);
    expect((await runCli(['image', 'ls'], { env })).stdout).not.toContain('fbtest/vm-inject');

    const quoted = writeCtx('quoted', { 'qdir/a"b c.txt': 'quoted\n', Dockerfile: `FROM ${BASE} AS src\nCOPY qdir/ /q/\nFROM scratch\nCOPY --from=src /q/ /q/\nCOPY --from=src /bin/true /true\nCOPY --from=src /etc/alternatives/awk /awk\n` });
    const q = await vmBuild(quoted, 'fbtest/vm-quoted:1');
    expectJsonResult(q);
    const t = await ext4Tree((JSON.parse(q.stdout) as { rootfs: string }).rootfs);
    expect(t['/q/a"b c.txt']).toMatchObject({ type: 'file', size: 7 });
    const base = await ext4Tree((JSON.parse((await runCli(['image', 'inspect', BASE], { env })).stdout) as { rootfs: string }).rootfs);
    // /bin is a symlink to usr/bin, /etc/alternatives/awk a symlink to a file: both followed, as Docker follows them.
    expect(t['/true']).toMatchObject({ type: 'file', sha256: base['/usr/bin/true']?.sha256 });
    expect(t['/awk']?.type).toBe('file');

    const corrupt = writeCtx('corrupt', { Dockerfile: `FROM ${BASE}\nADD bad.tar.gz /opt/\n` });
    execFileSync('sh', ['-c', 'mkdir -p t && head -c 200000 /dev/urandom > t/r && tar -czf "$0/full.tar.gz" t && head -c 3000 "$0/full.tar.gz" > "$0/bad.tar.gz" && rm -r t "$0/full.tar.gz"', corrupt], { cwd: work });
    const c = await vmBuild(corrupt, 'fbtest/vm-corrupt:1');
    expect(c.code).not.toBe(0);
    expect(c.stderr.trim().split('\n').pop()).toMatch(/Dockerfile:2: .*the archive bad\.tar\.gz/);
    expect(leftovers()).toEqual([]);
  }, 10 * 60_000);

  test('ADD of a hostile local archive materializes nothing on the host: a setuid-root file, devices, a FIFO, a symlink to /etc and an absolute name land only in the image; a path through the symlink is one line', async () => {
    // A fresh TMPDIR for the build (its work and scratch directories live there), and debugfs wrapped by
    // an observer that lists every setuid/setgid file, device node and FIFO under it each time the step
    // writes: while the archive's entries are being written into the image, not only after.
    const tmp = path.join(work, 'hostile-tmp');
    const watch = path.join(work, 'hostile-watch');
    fs.mkdirSync(tmp);
    fs.mkdirSync(watch);
    const seen = path.join(work, 'hostile-seen.log');
    const real = execFileSync('sh', ['-c', 'command -v debugfs'], { encoding: 'utf8' }).trim();
    fs.writeFileSync(path.join(watch, 'debugfs'), `#!/bin/sh\nfind "${tmp}" \\( -perm -4000 -o -perm -2000 -o -type c -o -type b -o -type p \\) -print >> "${seen}" 2>/dev/null\nexec ${real} "$@"\n`, { mode: 0o755 });
    fs.writeFileSync(seen, '');
    const hostileEnv = { ...env, TMPDIR: tmp, PATH: `${watch}:${process.env.PATH ?? ''}` };
    const hostile = (name: string, tag: string): ReturnType<typeof runCli> =>
      runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(work, name, 'Dockerfile'), '--tag', tag, '--accel', 'tcg'], { env: hostileEnv });
    const onHost = (): string[] => execFileSync('find', [tmp, '(', '-perm', '-4000', '-o', '-perm', '-2000', '-o', '-type', 'c', '-o', '-type', 'b', '-o', '-type', 'p', ')', '-print'], { encoding: 'utf8' }).split('\n').filter(Boolean);
    expect(fs.existsSync('/etc/x')).toBe(false);

    const dir = writeCtx('hostile', { Dockerfile: `FROM ${BASE}\nADD hostile.tar /opt/h/\nADD abs.tar.gz /opt/abs/\n` });
    fs.writeFileSync(path.join(dir, 'hostile.tar'), rawTar([
      { path: 'suid', data: '#!/bin/sh\necho root\n', mode: 0o4755, uid: 0, gid: 0 },
      { path: 'suid-hard', type: 'Link', linkpath: 'suid' },
      { path: 'sgid', type: 'Directory', mode: 0o2775, uid: 7, gid: 8 },
      { path: 'null', type: 'CharacterDevice', mode: 0o666, devmaj: 1, devmin: 3 },
      { path: 'sda', type: 'BlockDevice', mode: 0o660, devmaj: 8, devmin: 0, gid: 6 },
      { path: 'fifo', type: 'FIFO', mode: 0o644 },
      { path: 'evil', type: 'SymbolicLink', linkpath: '/etc' },
    ]));
    execFileSync('sh', ['-c', 'gzip -c > "$0"', path.join(dir, 'abs.tar.gz')], { input: rawTar([{ path: '/etc/x', data: 'absolute\n', mode: 0o4755 }]) });
    const r = await hostile('hostile', 'fbtest/vm-hostile:1');
    expectJsonResult(r);
    const t = await ext4Tree((JSON.parse(r.stdout) as { rootfs: string }).rootfs);
    expect(t['/opt/h/suid']).toMatchObject({ type: 'file', mode: '4755', uid: 0, gid: 0, links: ['/opt/h/suid', '/opt/h/suid-hard'] });
    expect(t['/opt/h/sgid']).toMatchObject({ type: 'dir', mode: '2775', uid: 7, gid: 8 });
    expect(t['/opt/h/null']).toMatchObject({ type: 'char', rdev: '1:3', mode: '666' });
    expect(t['/opt/h/sda']).toMatchObject({ type: 'block', rdev: '8:0', gid: 6 });
    expect(t['/opt/h/fifo']).toMatchObject({ type: 'fifo' });
    expect(t['/opt/h/evil']).toMatchObject({ type: 'symlink', link: '/etc' });
    // An absolute name is relative to the destination, as Docker unpacks it.
    expect(t['/opt/abs/etc/x']).toMatchObject({ type: 'file', mode: '4755', size: 9 });
    expect(t['/etc/x']).toBeUndefined();

    const through = writeCtx('hostile-through', { Dockerfile: `FROM ${BASE}\nADD through.tar /opt/t/\n` });
    fs.writeFileSync(path.join(through, 'through.tar'), rawTar([
      { path: 'suid', data: 'x', mode: 0o4755 },
      { path: 'evil', type: 'SymbolicLink', linkpath: '/etc' },
      { path: 'evil/x', data: 'written through the link\n', mode: 0o4755 },
    ]));
    const f = await hostile('hostile-through', 'fbtest/vm-through:1');
    expect(f.code).toBe(2);
    expect(f.stderr.trim().split('\n').pop()).toMatch(/Dockerfile:2: ADD: unsafe entry in the archive through\.tar: entry "evil\/x" goes through the symlink "evil"; refusing to add it$/);
    expect((await runCli(['image', 'ls'], { env })).stdout).not.toContain('fbtest/vm-through');

    // Nothing of either archive was ever a host file: not while the steps wrote, not after; the work
    // directories are gone.
    expect(fs.readFileSync(seen, 'utf8')).toBe('');
    expect(onHost()).toEqual([]);
    expect(fs.readdirSync(tmp)).toEqual([]);
    expect(fs.existsSync('/etc/x')).toBe(false);
  }, 10 * 60_000);

  test('a failing RUN at line 7 fails with that line, its exit code and the output tail; nothing is stored or left behind', async () => {
    const dir = writeCtx('fail', {
      Dockerfile: [`FROM ${BASE}`, 'RUN echo one', '# two', '# three', '# four', '# five', 'RUN echo "about to fail" && ls /nonexistent-dir', 'RUN echo never', ''].join('\n'),
    });
    const r = await vmBuild(dir, 'fbtest/vm-fail:1');
    expect(r.code).not.toBe(0);
    const errLine = r.stderr.trim().split('\n').pop()!;
    expect(errLine).toMatch(/Dockerfile:7: RUN at Dockerfile:7 failed with exit code 2: .*about to fail.*No such file or directory/);
    expect(r.stderr).toContain('RUN at Dockerfile:7: about to fail');
    expect((await runCli(['image', 'ls'], { env })).stdout).not.toContain('fbtest/vm-fail');
    expect(leftovers()).toEqual([]);
  }, 10 * 60_000);

  test("a RUN that leaves what the build VM's init wrote (/etc/hosts) unrestorable fails naming the step, not silently; nothing is stored", async () => {
    // Docker bind-mounts /etc/hosts into a build step (an rm fails there); the vm engine saves the image's file
    // before the step and puts it back after: a directory in its place cannot be replaced, which is an error.
    // An image without the file (FROM scratch): the init's file is removed after the step; a directory the
    // RUN made in its place cannot be, which used to pass silently and leave it in the image.
    const bare = writeCtx('hosts-dir-scratch', { Dockerfile: 'FROM scratch\nCOPY --chmod=755 busybox /busybox\nRUN ["/busybox", "sh", "-c", "/busybox rm -f /etc/hosts && /busybox mkdir -p /etc/hosts"]\n' });
    fs.writeFileSync(path.join(bare, 'busybox'), fs.readFileSync('/bin/busybox'));
    const b = await vmBuild(bare, 'fbtest/vm-hostsdir-scratch:1');
    expect({ code: b.code, last: b.stderr.trim().split('\n').pop() }).toEqual({
      code: 2,
      last: expect.stringMatching(/Dockerfile:3: RUN at Dockerfile:3: could not restore the image's .*\/etc\/hosts.* after the step \(debugfs could not .*rm .*\/etc\/hosts.*directory/),
    });
    // An image with the file: a directory in its place cannot be replaced by the saved file.
    const dir = writeCtx('hosts-dir', { Dockerfile: `FROM ${BASE}\nRUN echo ok\nRUN rm /etc/hosts && mkdir /etc/hosts\n` });
    const r = await vmBuild(dir, 'fbtest/vm-hostsdir:1');
    expect({ code: r.code, last: r.stderr.trim().split('\n').pop() }).toEqual({
      code: 2,
      last: expect.stringMatching(/Dockerfile:3: RUN at Dockerfile:3: could not restore the image's .*\/etc\/hosts.* after the step \(debugfs could not .*rm .*\/etc\/hosts.*directory/),
    });
    expect((await runCli(['image', 'ls'], { env })).stdout).not.toContain('fbtest/vm-hostsdir');
    expect(leftovers()).toEqual([]);
  }, 10 * 60_000);

  test('a pull-request Dockerfile cannot touch the host: its RUN writes and reads inside the VM only', async () => {
    const marker = '/host-marker';
    fs.rmSync(marker, { force: true });
    const dir = writeCtx('pr', { Dockerfile: `FROM ${BASE}\nRUN echo pwned > /host-marker && cat /etc/hostname > /stolen-hostname && (cat /proc/1/cmdline | tr '\\0' ' ' > /pid1)\n` });
    const r = await vmBuild(dir, 'fbtest/vm-pr:1');
    expectJsonResult(r);
    expect(fs.existsSync(marker)).toBe(false);
    const tree = await ext4Tree((JSON.parse(r.stdout) as { rootfs: string }).rootfs);
    expect(tree['/host-marker']).toMatchObject({ type: 'file' });
    const { Ext4Reader } = await import('../../src/rootfs/debugfs.js');
    const reader = new Ext4Reader((JSON.parse(r.stdout) as { rootfs: string }).rootfs);
    const stolen = (await reader.readFile('/stolen-hostname')).toString().trim();
    expect(stolen).toBe('buildkitsandbox');
    expect(stolen).not.toBe(os.hostname());
    // PID 1 of the RUN's world is firebuild's init in the guest, not anything of the host.
    expect((await reader.readFile('/pid1')).toString()).toContain('/.firebuild/init');
  }, 10 * 60_000);

  test('the step cache: an unchanged rebuild runs nothing; a change at step k rebuilds from k; a corrupt entry is detected and rebuilt', async () => {
    const dir = writeCtx('cache', {
      'data.txt': 'v1\n',
      Dockerfile: [`FROM ${BASE}`, 'RUN echo first > /first', 'COPY data.txt /data.txt', 'RUN cat /data.txt > /copied', ''].join('\n'),
    });
    const first = await vmBuild(dir, 'fbtest/vm-cache:1');
    expectJsonResult(first);
    expect(JSON.parse(first.stdout)).toMatchObject({ executed: 3, cached: 0 });
    // Unchanged, same tag: up to date, the same image.
    const again = await vmBuild(dir, 'fbtest/vm-cache:1');
    expectJsonResult(again);
    expect(JSON.parse(again.stdout)).toMatchObject({ executed: 0, sha256: JSON.parse(first.stdout).sha256 });
    // Unchanged, another tag: every step from the cache, no VM booted.
    const other = await vmBuild(dir, 'fbtest/vm-cache:2');
    expectJsonResult(other);
    expect(JSON.parse(other.stdout)).toMatchObject({ executed: 0, cached: 3 });
    expect(JSON.parse(other.stdout).timings.bootMs).toBe(0);
    // Step 3 (the COPY) changes: steps 1 and 2 come from the cache, 3 and 4 run.
    fs.writeFileSync(path.join(dir, 'data.txt'), 'v2\n');
    const changed = await vmBuild(dir, 'fbtest/vm-cache:3');
    expectJsonResult(changed);
    expect(JSON.parse(changed.stdout)).toMatchObject({ executed: 2, cached: 1 });
    // Corrupt every cache entry: detected by its digest, rebuilt, same result as a clean build.
    const steps = path.join(work, 'home', 'cache', 'vm-steps');
    for (const f of fs.readdirSync(steps).filter((n) => n.endsWith('.ext4'))) {
      const fd = fs.openSync(path.join(steps, f), 'r+');
      fs.writeSync(fd, Buffer.from('corrupt!'), 0, 8, 4096 * 2);
      fs.closeSync(fd);
    }
    const rebuilt = await vmBuild(dir, 'fbtest/vm-cache:4');
    expectJsonResult(rebuilt);
    expect(JSON.parse(rebuilt.stdout)).toMatchObject({ executed: 3, cached: 0 });
    expect(rebuilt.stderr).toMatch(/a step cache entry is corrupt: rebuilding it/);
  }, 20 * 60_000);

  test('--label: the labels land in the stored config; other labels make an unchanged rebuild out of date, the same ones keep it', async () => {
    // No RUN: nothing boots, the labels are what is tested.
    const dir = writeCtx('labels', { 'data.txt': 'x\n', Dockerfile: [`FROM ${BASE}`, 'LABEL org.example.from-dockerfile=yes team=dockerfile', 'COPY data.txt /data.txt', ''].join('\n') });
    const meta = (r: Awaited<ReturnType<typeof runCli>>): { config: { labels: Record<string, string> }; created: string } => JSON.parse(fs.readFileSync(JSON.parse(r.stdout).metadata, 'utf8'));
    const first = await vmBuild(dir, 'fbtest/vm-labels:1', ['--label', 'team=web', '--label', 'org.example.x=1']);
    expectJsonResult(first);
    expect(meta(first).config.labels).toMatchObject({ 'org.example.from-dockerfile': 'yes', team: 'web', 'org.example.x': '1' });
    const same = await vmBuild(dir, 'fbtest/vm-labels:1', ['--label', 'team=web', '--label', 'org.example.x=1']);
    expectJsonResult(same);
    expect(same.stderr).toMatch(/up to date/);
    expect(meta(same).created).toBe(meta(first).created);
    const other = await vmBuild(dir, 'fbtest/vm-labels:1', ['--label', 'team=ops', '--overwrite']);
    expectJsonResult(other);
    expect(other.stderr).not.toMatch(/up to date/);
    expect(meta(other).config.labels).toMatchObject({ 'org.example.from-dockerfile': 'yes', team: 'ops' });
    expect(meta(other).config.labels['org.example.x']).toBeUndefined();
    const bad = await vmBuild(dir, 'fbtest/vm-labels:2', ['--label', 'novalue']);
    expect({ code: bad.code, stderr: bad.stderr.trim() }).toEqual({ code: 2, stderr: expect.stringMatching(/^error: malformed --label 'novalue': write NAME=value/) });
  }, 10 * 60_000);

  test('bad input: base image not found, a step that outlives --step-timeout, a full build disk: one line each, nothing left behind', async () => {
    const missing = writeCtx('missing', { Dockerfile: 'FROM fbtest/no-such-base:9\nRUN true\n' });
    const r1 = await vmBuild(missing, 'fbtest/vm-bad:1');
    expect(r1.code).not.toBe(0);
    expect(r1.stderr.trim().split('\n').pop()).toMatch(/Dockerfile:1: base image fbtest\/no-such-base:9 not found\. Tried: stored firebuild images \(firebuild image ls\): none named so; the Docker engine: no such image; docker\.io\/fbtest\/no-such-base:9 at 127\.0\.0\.1:1: unreachable \(.*\); no registry mirror set/);

    const slow = writeCtx('slow', { Dockerfile: `FROM ${BASE}\nRUN echo sleeping && sleep 600\n` });
    const r2 = await vmBuild(slow, 'fbtest/vm-bad:2', ['--step-timeout', '20']);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr.trim().split('\n').pop()).toMatch(/RUN at Dockerfile:2 did not finish within 20 s: raise --step-timeout/);

    const full = writeCtx('full', { Dockerfile: `FROM ${BASE}\nRUN echo before > /before\nRUN dd if=/dev/zero of=/big bs=1M count=400\n` });
    const r3 = await vmBuild(full, 'fbtest/vm-bad:3', ['--size', '300M']);
    expect(r3.code).not.toBe(0);
    expect(r3.stderr.trim().split('\n').pop()).toMatch(/RUN at Dockerfile:3 failed with exit code 1 \(the build disk is full: grow it with --size\)/);
    // As the message says: a larger --size gets past it, the earlier steps still coming from the cache.
    const grown = await vmBuild(full, 'fbtest/vm-grown:1', ['--size', '1G']);
    expectJsonResult(grown);
    expect(JSON.parse(grown.stdout)).toMatchObject({ executed: 1, cached: 1 });

    expect((await runCli(['image', 'ls'], { env })).stdout).not.toContain('fbtest/vm-bad');
    expect(leftovers()).toEqual([]);
    expect(fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).some((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(path.join(buildTmp(), 'firebuild-vmbuild-'));
      } catch {
        return false;
      }
    })).toBe(false);
  }, 10 * 60_000);
});
