import { describe, expect, test } from '@jest/globals';
import { buildxArgv, parseBuildkitFailure } from '../../src/engine/buildx.js';
import { registryAuth, splitRef } from '../../src/engine/docker-engine.js';
import { fromDockerConfig, tagFromImageRef } from '../../src/oci/image-config.js';
import { importChanges } from '../../src/engine/import-stored.js';
import { buildkitOnly } from '../../src/commands/build.js';
import { mkfsArgv, resizeArgv } from '../../src/rootfs/ext4.js';
import type { StoredImage } from '../../src/store/provider.js';
import { parseSize } from '../../src/util/size.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

describe('tag derived from FROM for baseos (the seed rule)', () => {
  test.each([
    ['alpine:3.12', '_/alpine:3.12'],
    ['debian:bookworm-slim', '_/debian:bookworm-slim'],
    ['alpine', '_/alpine:latest'],
    ['library/ubuntu:24.04', '_/ubuntu:24.04'],
    ['combust-labs/base:1.0', 'combust-labs/base:1.0'],
    ['127.0.0.1:5000/debian:bookworm-slim', '_/debian:bookworm-slim'],
    ['registry.example.com/acme/os:2', 'acme/os:2'],
  ])('%s -> %s', (ref, tag) => expect(tagFromImageRef(ref)).toBe(tag));
  test.each(['alpine@sha256:' + 'a'.repeat(64), 'a/b/c:1'])('%s has no derivable tag', (ref) => expect(tagFromImageRef(ref)).toBeUndefined());
});

describe('buildx argv (BuildKit path), as a table', () => {
  test.each([
    [{ dockerfile: 'Dockerfile', buildArgs: {}, labels: {} }, ['buildx', 'build', '--progress=plain', '--file', 'Dockerfile', '--output', 'type=tar,dest=-', '-']],
    [{ dockerfile: 'app/Dockerfile', buildArgs: { A: '1', B: 'x y' }, target: 'release', labels: { 'org.firebuild.tag': 'a/b:1' } }, ['buildx', 'build', '--progress=plain', '--file', 'app/Dockerfile', '--output', 'type=tar,dest=-', '--build-arg', 'A=1', '--build-arg', 'B=x y', '--target', 'release', '--label', 'org.firebuild.tag=a/b:1', '-']],
    [{ dockerfile: 'Dockerfile', buildArgs: {}, labels: {}, noCache: true, pull: true }, ['buildx', 'build', '--progress=plain', '--file', 'Dockerfile', '--output', 'type=tar,dest=-', '--no-cache', '--pull', '-']],
  ])('%j', (o, argv) => expect(buildxArgv(o)).toEqual(argv));

  test('BuildKit failure output gives the line and exit code', () => {
    const stderr = '#6 [2/2] RUN false\n#6 ERROR: process "/bin/sh -c false" did not complete successfully: exit code: 1\n------\nDockerfile:2\n--------------------\n   1 |     FROM debian\n   2 | >>> RUN false\n--------------------\nERROR: failed to solve: process "/bin/sh -c false" did not complete successfully: exit code: 1\n';
    expect(parseBuildkitFailure(stderr)).toEqual({ line: 2, exitCode: 1, message: 'failed to solve: process "/bin/sh -c false" did not complete successfully: exit code: 1' });
  });
});

describe('classic builder gaps are named', () => {
  const step = (extra: object) => ({ keyword: 'COPY', file: 'Dockerfile', line: 2, original: 'COPY a b', ...extra });
  test.each([
    [step({ chmod: '0644' }), 'COPY --chmod'],
    [step({ heredocs: [{ name: 'EOF', content: 'x', expand: true, chomp: false }] }), 'heredocs'],
    [step({ keyword: 'RUN', mounts: [{ type: 'cache' }] }), 'RUN --mount'],
    [step({ link: true }), 'COPY --link'],
    [step({ original: 'COPY --parents a/b /c', parents: true }), 'COPY --parents'],
    [step({ original: 'COPY --exclude=*.md . /c/', exclude: ['*.md'] }), 'COPY --exclude'],
    [step({ keyword: 'ADD', original: 'ADD --exclude=*.md . /c/', exclude: ['*.md'] }), 'ADD --exclude'],
    [step({ keyword: 'ADD', original: 'ADD --checksum=sha256:00 https://x/y /c/', checksum: 'sha256:00' }), 'ADD --checksum'],
    [step({ keyword: 'ADD', original: 'ADD --unpack=false a.tar /c/' }), 'ADD --unpack'],
    [step({ keyword: 'HEALTHCHECK', healthcheck: { test: ['CMD-SHELL', 'true'], startIntervalNs: 1e9 } }), 'HEALTHCHECK --start-interval'],
    [step({}), undefined],
  ])('%#', (s, want) => expect(buildkitOnly(s as never)).toBe(want));
});

describe('ext4 argv', () => {
  test('mkfs: 4 KiB blocks, no reserved blocks, no journal unless asked, populated from a directory', () => {
    expect(mkfsArgv({ root: '/t', image: '/i.ext4', sizeBytes: 8192 * 4096, inodes: 2000 })).toEqual(['-q', '-F', '-t', 'ext4', '-b', '4096', '-I', '256', '-m', '0', '-O', '^has_journal', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', '-N', '2000', '-L', 'rootfs', '-d', '/t', '/i.ext4', '8192']);
    expect(mkfsArgv({ root: '/t', image: '/i', sizeBytes: 4096, journal: true })).toContain('has_journal');
    expect(resizeArgv('/i')).toEqual(['-M', '/i']);
    expect(resizeArgv('/i', 100)).toEqual(['/i', '100']);
  });
});

test('sizes', () => {
  expect(parseSize('512M', '--size')).toBe(512 * 1024 * 1024);
  expect(parseSize('2G', '--size')).toBe(2 * 1024 ** 3);
  expect(parseSize('1.5GiB', '--size')).toBe(1.5 * 1024 ** 3);
  expect(parseSize('4096', '--size')).toBe(4096);
  expect(() => parseSize('lots', '--size')).toThrow(/malformed --size 'lots'/);
});

test('Docker config in metadata shape', () => {
  expect(fromDockerConfig({ Env: ['A=1'], Cmd: ['x'], ExposedPorts: { '80/tcp': {} }, Healthcheck: { Test: ['CMD', 'true'], Interval: 5e9 }, User: 'app' })).toMatchObject({
    env: ['A=1'], cmd: ['x'], entrypoint: null, exposedPorts: ['80/tcp'], user: 'app', healthcheck: { test: ['CMD', 'true'], intervalNs: 5e9 },
  });
});

test('a stored image config becomes docker import changes', () => {
  const img = { metadata: { rootfs: { sha256: 'ab' }, config: { env: ['PATH=/bin', 'Q=a "b"'], entrypoint: ['/e'], cmd: null, workingDir: '/w', user: 'u', exposedPorts: ['80/tcp'], volumes: ['/v'], stopSignal: 'SIGINT', labels: { k: 'v' } } } } as unknown as StoredImage;
  expect(importChanges(img)).toEqual(['ENV PATH="/bin"', 'ENV Q="a \\"b\\""', 'ENTRYPOINT ["/e"]', 'WORKDIR /w', 'USER u', 'EXPOSE 80/tcp', 'VOLUME ["/v"]', 'STOPSIGNAL SIGINT', 'LABEL "k"="v"', 'LABEL org.firebuild.rootfs-sha256=ab']);
});

test('registry credentials come from the Docker config', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dcfg-'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: { '127.0.0.1:5000': { auth: Buffer.from('user:p:w').toString('base64') }, 'https://index.docker.io/v1/': { identitytoken: 'tok' } } }));
  expect(await registryAuth('127.0.0.1:5000/a/b:1', { DOCKER_CONFIG: dir })).toEqual({ username: 'user', password: 'p:w', serveraddress: '127.0.0.1:5000' });
  expect(await registryAuth('debian:12', { DOCKER_CONFIG: dir })).toEqual({ identitytoken: 'tok', serveraddress: 'https://index.docker.io/v1/' });
  expect(await registryAuth('ghcr.io/a/b:1', { DOCKER_CONFIG: dir })).toBeUndefined();
  expect(splitRef('127.0.0.1:5000/a/b:1')).toEqual(['127.0.0.1:5000/a/b', '1']);
  expect(splitRef('a/b')).toEqual(['a/b', 'latest']);
  fs.rmSync(dir, { recursive: true });
});

describe('imageTag (the build actions\' further tags)', () => {
  test('stores the same image under another tag: same rootfs bytes and metadata but the tag; an existing tag needs overwrite', async () => {
    const { DirectoryStorage } = await import('../../src/store/directory.js');
    const { imageTag } = await import('../../src/commands/image.js');
    const { parseTag } = await import('../../src/store/tag.js');
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'image-tag-'));
    try {
      const store = new DirectoryStorage({ rootfsRoot: path.join(home, 'rootfs'), kernelRoot: path.join(home, 'kernels'), createRoots: true });
      const src = await store.writeImage('acme/web:1.0', async (st) => {
        fs.writeFileSync(st.rootfsPath, Buffer.alloc(64 * 1024, 7));
        return { type: 'rootfs', source: { kind: 'dockerfile', ref: './Dockerfile' }, parents: ['debian:12'], config: { env: [], labels: { a: 'b' } } as never, contentSize: 123 };
      });
      const copy = await imageTag(store, parseTag('acme/web:1.0'), parseTag('acme/web:latest'));
      expect(copy.tag).toBe('acme/web:latest');
      expect(fs.readFileSync(copy.rootfsPath).equals(fs.readFileSync(src.rootfsPath))).toBe(true);
      const { tag: t1, created: c1, ...m1 } = src.metadata;
      const { tag: t2, created: c2, ...m2 } = copy.metadata;
      expect([t1, t2]).toEqual(['acme/web:1.0', 'acme/web:latest']);
      expect(c1 && c2).toBeTruthy();
      expect(m2).toEqual(m1);
      await expect(imageTag(store, parseTag('acme/web:1.0'), parseTag('acme/web:latest'))).rejects.toThrow('image acme/web:latest already exists');
      await imageTag(store, parseTag('acme/web:1.0'), parseTag('acme/web:latest'), { overwrite: true });
      await expect(imageTag(store, parseTag('acme/none:1'), parseTag('acme/web:2'))).rejects.toThrow();
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});
