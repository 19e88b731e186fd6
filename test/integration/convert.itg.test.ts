import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { convertTarStream } from '../../src/rootfs/convert.js';
import { Ext4Reader } from '../../src/rootfs/debugfs.js';
import { DirectoryStorage } from '../../src/store/directory.js';
import { UserError } from '../../src/util/errors.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { REPO, tempDir } from '../helpers/cli.js';
import { DOCKER, dockerExportTree, ext4Tree, rawTar, tarTree } from '../helpers/trees.js';

let work: string;
let src: string;
let tarFile: string;
const log = new MemoryLogger();
const CAP_NET_RAW = '0100000200200000000000000000000000000000';

beforeAll(async () => {
  work = await tempDir();
  src = path.join(work, 'src');
  const sh = (cmd: string): void => void execFileSync('sh', ['-c', cmd], { cwd: src });
  fs.mkdirSync(src);
  sh(`mkdir -p etc usr/bin var/mail tmp srv/deep/er dev
      printf 'root:x:0:0::/root:/bin/sh\\n' > etc/passwd
      printf 'owned' > srv/owned && chown 1234:5678 srv/owned && chmod 0640 srv/owned
      cp /bin/true usr/bin/suid && chmod 4755 usr/bin/suid
      cp /bin/true usr/bin/sgid && chmod 2711 usr/bin/sgid
      cp /bin/true usr/bin/ping && setcap cap_net_raw+ep usr/bin/ping
      chmod 2775 var/mail && chown 0:8 var/mail
      chmod 1777 tmp
      printf 'one content' > srv/hard1 && ln srv/hard1 srv/deep/hard2
      ln -s /etc/passwd srv/abs-link && ln -s ../etc/passwd srv/rel-link && ln -s nowhere srv/dangling
      mknod dev/null c 1 3 && mknod dev/sda b 8 0 && mkfifo srv/fifo
      : > srv/empty
      head -c 3000000 /dev/urandom > srv/deep/er/big.bin
      truncate -s 50M srv/sparse.img`);
  tarFile = path.join(work, 'tree.tar');
  execFileSync('tar', ['-c', '--numeric-owner', '--xattrs', '--xattrs-include=*', '-f', tarFile, '-C', src, '.']);
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('tar stream to ext4, without mounting', () => {
  test('owners, modes, setuid/setgid/sticky, hard links, symlinks, devices, fifos and capabilities survive', async () => {
    const dir = path.join(work, 'c1');
    fs.mkdirSync(dir);
    const image = path.join(dir, 'rootfs.ext4');
    const r = await convertTarStream(fs.createReadStream(tarFile), { image, what: 'test tree', freeBytes: 8 << 20, log });
    expect(r.stats).toMatchObject({ hardlinks: 1, symlinks: 3, devices: 3 });
    const want = await tarTree(fs.createReadStream(tarFile));
    const got = await ext4Tree(image);
    expect(got).toEqual(want);
    expect(got['/usr/bin/suid']?.mode).toBe('4755');
    expect(got['/srv/deep/hard2']?.links).toEqual(['/srv/deep/hard2', '/srv/hard1']);
    const ping = (await new Ext4Reader(image).tree({ xattrs: true })).find((e) => e.path === '/usr/bin/ping');
    expect(ping?.xattrs?.['security.capability']).toBe(CAP_NET_RAW);
    execFileSync('e2fsck', ['-fn', image]); // throws unless clean
    expect(fs.readdirSync(dir)).toEqual(['rootfs.ext4']); // nothing extracted on the host
    // Sparse: a 50 MiB hole allocates nothing, and free space costs nothing.
    expect(r.imageAllocated).toBeLessThan(r.stats.bytes - (50 << 20) + (4 << 20));
    expect(r.imageBytes).toBeGreaterThanOrEqual(r.minBytes + (8 << 20));
  });

  test('--size gives an exact size, and a size too small is a clear error', async () => {
    const dir = path.join(work, 'c2');
    fs.mkdirSync(dir);
    const image = path.join(dir, 'rootfs.ext4');
    await convertTarStream(fs.createReadStream(tarFile), { image, what: 'test tree', sizeBytes: 64 << 20, log });
    expect(fs.statSync(image).size).toBe(64 << 20);
    await expect(convertTarStream(fs.createReadStream(tarFile), { image: path.join(dir, 'small.ext4'), what: 'test tree', sizeBytes: 1 << 20, log })).rejects.toThrow(/--size 1048576 bytes is smaller than the \d+ bytes the content needs/);
  });

  test.each<[string, Parameters<typeof rawTar>[0], RegExp]>([
    ['.. in a name', [{ path: 'etc/', type: 'Directory', mode: 0o755 }, { path: '../escape', data: 'x' }], /entry "\.\.\/escape" climbs out of the root/],
    ['a nested ..', [{ path: 'a/../../escape', data: 'x' }], /climbs out of the root/],
    ['a hard link out of the root', [{ path: 'h', type: 'Link', linkpath: '../../etc/shadow' }], /hard link "h" target .* climbs out/],
    ['a hard link out of the root, absolute', [{ path: 'h', type: 'Link', linkpath: '/../etc/shadow' }], /hard link "h" target .* climbs out/],
    ['a whiteout', [{ path: 'etc/.wh.passwd', data: '' }], /whiteout "etc\/\.wh\.passwd"/],
  ])('refuses %s with one clear line, and nothing is stored', async (_n, entries, want) => {
    const root = path.join(work, `store-${Math.random().toString(36).slice(2)}`);
    const store = new DirectoryStorage({ rootfsRoot: root, kernelRoot: path.join(root, '.k'), createRoots: true });
    const err = await store
      .writeImage('evil/tar:1', async (s) => {
        await convertTarStream(Readable.from([rawTar(entries)]), { image: s.rootfsPath, what: 'the test archive', log });
        return { type: 'rootfs', source: { kind: 'test', ref: 'x' }, parents: [], config: {} };
      })
      .then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/^unsafe entry in the test archive: /);
    expect((err as Error).message).toMatch(want);
    expect(fs.readdirSync(path.join(root, '.staging'))).toEqual([]);
    expect(await store.listImages()).toEqual([]);
    expect(fs.existsSync('/escape')).toBe(false);
  });

  test('absolute names and paths through the archive\'s own symlinks land inside the image, never on the host', async () => {
    const dir = path.join(work, 'c5');
    fs.mkdirSync(dir);
    const image = path.join(dir, 'x.ext4');
    const name = `fb-convert-${process.pid}`;
    await convertTarStream(Readable.from([rawTar([
      { path: `/etc/${name}`, data: 'abs' },
      { path: 'lib', type: 'SymbolicLink', linkpath: '/etc' },
      { path: `lib/${name}-2`, data: 'through' },
      { path: 'up', type: 'SymbolicLink', linkpath: '../..' },
      { path: `up/tmp/${name}`, data: 'up' },
    ])]), { image, what: 'the test archive', freeBytes: 0, log });
    const t = await ext4Tree(image);
    expect(t[`/etc/${name}`]).toMatchObject({ type: 'file', size: 3 });
    expect(t[`/etc/${name}-2`]).toMatchObject({ type: 'file', size: 7 });
    expect(t[`/tmp/${name}`]).toMatchObject({ type: 'file', size: 2 });
    expect(t['/lib']).toMatchObject({ type: 'symlink', link: '/etc' });
    for (const p of [`/etc/${name}`, `/etc/${name}-2`, `/tmp/${name}`]) expect(fs.existsSync(p)).toBe(false);
  });

  test('a stream that is not a tar is one line, and no image is left', async () => {
    const dir = path.join(work, 'c3');
    fs.mkdirSync(dir);
    await expect(convertTarStream(Readable.from([Buffer.alloc(2048, 'x')]), { image: path.join(dir, 'x.ext4'), what: 'junk', log })).rejects.toThrow(/^junk is not a valid tar stream \(bad header checksum at byte 0\)$/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  test('the docker-export shaped stream of a big tree converts in one pass (no spooling)', async () => {
    const dir = path.join(work, 'c4');
    fs.mkdirSync(dir);
    const tar = spawn('tar', ['-c', '--numeric-owner', '-C', '/usr/share/zoneinfo', '.'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const r = await convertTarStream(tar.stdout, { image: path.join(dir, 'big.ext4'), what: '/usr/share/zoneinfo', log });
    expect(r.stats.entries).toBeGreaterThan(500);
    execFileSync('e2fsck', ['-fn', path.join(dir, 'big.ext4')]);
  });

  test('a Docker export of 50,000+ entries converts to the tree Docker exports (types, modes, owners, sizes, contents, links)', async () => {
    const dir = path.join(work, 'c50k');
    const tree = path.join(dir, 'tree');
    fs.mkdirSync(tree, { recursive: true });
    // 250 directories of 205 entries: files of varied sizes, modes and owners, symlinks, hard links.
    execFileSync('sh', ['-c', `for d in $(seq 1 250); do mkdir -p t/$d; done
      for d in $(seq 1 250); do (cd t/$d && for f in $(seq 1 200); do printf "$d/$f" > f$f; done
        chmod 0600 f1 && chmod 4755 f2 && chown $d:$((d % 7)) f3 && ln -s f4 s1 && ln -s /t/$d/f5 s2 && ln f6 h1 && mkdir e && : > e/empty); done`], { cwd: tree });
    const ref = `fbtest/convert-50k:${process.pid}`;
    execFileSync('sh', ['-c', `tar -c --numeric-owner -C "${tree}" . | ${DOCKER} import - ${ref}`], { stdio: 'ignore' });
    fs.rmSync(tree, { recursive: true, force: true });
    try {
      const want = await dockerExportTree(ref);
      expect(Object.keys(want).length).toBeGreaterThan(50_000);
      const cid = execFileSync(DOCKER, ['create', ref, '/x'], { encoding: 'utf8' }).trim();
      const image = path.join(dir, 'rootfs.ext4');
      try {
        const exp = spawn(DOCKER, ['export', cid], { stdio: ['ignore', 'pipe', 'inherit'] });
        await convertTarStream(exp.stdout, { image, what: `the export of ${ref}`, log });
      } finally {
        execFileSync(DOCKER, ['rm', '-f', cid], { stdio: 'ignore' });
      }
      execFileSync('e2fsck', ['-fn', image]);
      const got = await ext4Tree(image);
      expect(got).toEqual(want);
    } finally {
      execFileSync(DOCKER, ['rmi', ref], { stdio: 'ignore' });
    }
  }, 20 * 60_000);

  test('conversion as an unprivileged user equals root\'s: owners, setuid bits, device nodes, capabilities', async () => {
    // A docker export of the test base image with devices, a FIFO, owners and setuid bits added.
    const dir = path.join(work, 'nonroot');
    fs.mkdirSync(dir, { mode: 0o755 });
    fs.chmodSync(work, 0o755);
    const ref = `fbtest/nonroot-src:${process.pid}`;
    const ctx = path.join(dir, 'ctx');
    fs.mkdirSync(ctx);
    fs.writeFileSync(path.join(ctx, 'Dockerfile'), `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN mknod /srv/null c 1 3 && mknod /srv/sda b 8 0 && mkfifo /srv/fifo && chown 1234:5678 /srv/fifo && cp /bin/true /srv/suid && chmod 6755 /srv/suid\n`);
    execFileSync(DOCKER, ['build', '-q', '-t', ref, ctx], { env: { ...process.env, DOCKER_BUILDKIT: '0' }, stdio: 'pipe' });
    const exported = path.join(dir, 'export.tar');
    const cid = execFileSync(DOCKER, ['create', ref, '/x'], { encoding: 'utf8' }).trim();
    try {
      execFileSync(DOCKER, ['export', '-o', exported, cid]);
    } finally {
      execFileSync(DOCKER, ['rm', '-f', cid], { stdio: 'ignore' });
      execFileSync(DOCKER, ['rmi', ref], { stdio: 'ignore' });
    }
    fs.chmodSync(exported, 0o644);
    const asRoot = path.join(dir, 'root.ext4');
    await convertTarStream(fs.createReadStream(exported), { image: asRoot, what: 'the export', freeBytes: 0, log });
    const out = path.join(dir, 'nobody');
    fs.mkdirSync(out);
    fs.chownSync(out, 65534, 65534);
    const script = `import * as fs from 'node:fs'; const { convertTarStream } = await import(${JSON.stringify(path.join(REPO, 'lib/rootfs/convert.js'))}); const { MemoryLogger } = await import(${JSON.stringify(path.join(REPO, 'lib/util/logger.js'))});
      if (process.getuid() !== 65534) throw new Error('not unprivileged');
      await convertTarStream(fs.createReadStream(process.argv[1]), { image: process.argv[2], what: 'the export', freeBytes: 0, log: new MemoryLogger() });`;
    execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script, exported, path.join(out, 'rootfs.ext4')], { cwd: out, stdio: 'pipe' });
    expect(fs.statSync(path.join(out, 'rootfs.ext4')).uid).toBe(65534);
    const mine = await ext4Tree(path.join(out, 'rootfs.ext4'), { xattrs: true });
    const roots = await ext4Tree(asRoot, { xattrs: true });
    expect(mine).toEqual(roots);
    expect(mine['/srv/null']).toMatchObject({ type: 'char', rdev: '1:3' });
    expect(mine['/srv/sda']).toMatchObject({ type: 'block', rdev: '8:0' });
    expect(mine['/srv/fifo']).toMatchObject({ type: 'fifo', uid: 1234, gid: 5678 });
    expect(mine['/srv/suid']).toMatchObject({ mode: '6755', uid: 0 });
    expect(Object.keys(mine).length).toBeGreaterThan(3000);
    execFileSync('e2fsck', ['-fn', path.join(out, 'rootfs.ext4')]);
  }, 5 * 60_000);
});
