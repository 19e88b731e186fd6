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
import { tempDir } from '../helpers/cli.js';
import { ext4Tree, rawTar, tarTree } from '../helpers/trees.js';

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
    const r = await convertTarStream(fs.createReadStream(tarFile), { workDir: dir, image, what: 'test tree', freeBytes: 8 << 20, log });
    expect(r.stats).toMatchObject({ hardlinks: 1, symlinks: 3, devices: 3 });
    const want = await tarTree(fs.createReadStream(tarFile));
    const got = await ext4Tree(image);
    expect(got).toEqual(want);
    expect(got['/usr/bin/suid']?.mode).toBe('4755');
    expect(got['/srv/deep/hard2']?.links).toEqual(['/srv/deep/hard2', '/srv/hard1']);
    const ping = (await new Ext4Reader(image).tree({ xattrs: true })).find((e) => e.path === '/usr/bin/ping');
    expect(ping?.xattrs?.['security.capability']).toBe(CAP_NET_RAW);
    execFileSync('e2fsck', ['-fn', image]); // throws unless clean
    expect(fs.existsSync(path.join(dir, 'tree'))).toBe(false);
    // Sparse: a 50 MiB hole allocates nothing, and free space costs nothing.
    expect(r.imageAllocated).toBeLessThan(r.contentAllocated * 1.1 + (1 << 20));
    expect(r.imageBytes).toBe(r.minBytes + (8 << 20));
  });

  test('--size gives an exact size, and a size too small is a clear error', async () => {
    const dir = path.join(work, 'c2');
    fs.mkdirSync(dir);
    const image = path.join(dir, 'rootfs.ext4');
    await convertTarStream(fs.createReadStream(tarFile), { workDir: dir, image, what: 'test tree', sizeBytes: 64 << 20, log });
    expect(fs.statSync(image).size).toBe(64 << 20);
    await expect(convertTarStream(fs.createReadStream(tarFile), { workDir: dir, image: path.join(dir, 'small.ext4'), what: 'test tree', sizeBytes: 1 << 20, log })).rejects.toThrow(/--size 1048576 bytes is smaller than the \d+ bytes the content needs/);
  });

  test.each<[string, Parameters<typeof rawTar>[0], RegExp]>([
    ['.. in a name', [{ path: 'etc/', type: 'Directory', mode: 0o755 }, { path: '../escape', data: 'x' }], /entry "\.\.\/escape" climbs out of the root/],
    ['a nested ..', [{ path: 'a/../../escape', data: 'x' }], /climbs out of the root/],
    ['an absolute name', [{ path: '/etc/passwd', data: 'x' }], /entry "\/etc\/passwd" is absolute/],
    ['an absolute link used as a path', [{ path: 'lib', type: 'SymbolicLink', linkpath: '/etc' }, { path: 'lib/passwd', data: 'owned' }], /entry "lib\/passwd" goes through the symlink "lib"/],
    ['a relative link used as a path', [{ path: 'up', type: 'SymbolicLink', linkpath: '../..' }, { path: 'up/x', data: 'x' }], /goes through the symlink "up"/],
    ['a hard link out of the root', [{ path: 'h', type: 'Link', linkpath: '../../etc/shadow' }], /hard link "h" target .* climbs out/],
    ['a whiteout', [{ path: 'etc/.wh.passwd', data: '' }], /whiteout "etc\/\.wh\.passwd"/],
  ])('refuses %s with one clear line, and nothing is stored', async (_n, entries, want) => {
    const root = path.join(work, `store-${Math.random().toString(36).slice(2)}`);
    const store = new DirectoryStorage({ rootfsRoot: root, kernelRoot: path.join(root, '.k'), createRoots: true });
    const err = await store
      .writeImage('evil/tar:1', async (s) => {
        await convertTarStream(Readable.from([rawTar(entries)]), { workDir: s.dir, image: s.rootfsPath, what: 'the test archive', log });
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

  test('a stream that is not a tar is an error', async () => {
    const dir = path.join(work, 'c3');
    fs.mkdirSync(dir);
    await expect(convertTarStream(Readable.from([Buffer.alloc(2048, 'x')]), { workDir: dir, image: path.join(dir, 'x.ext4'), what: 'junk', log })).rejects.toThrow();
  });

  test('the docker-export shaped stream of a big tree converts in one pass (no spooling)', async () => {
    const dir = path.join(work, 'c4');
    fs.mkdirSync(dir);
    const tar = spawn('tar', ['-c', '--numeric-owner', '-C', '/usr/share/zoneinfo', '.'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const r = await convertTarStream(tar.stdout, { workDir: dir, image: path.join(dir, 'big.ext4'), what: '/usr/share/zoneinfo', log });
    expect(r.stats.entries).toBeGreaterThan(500);
    execFileSync('e2fsck', ['-fn', path.join(dir, 'big.ext4')]);
  });
});
