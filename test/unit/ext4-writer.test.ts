import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Ext4Reader } from '../../src/rootfs/debugfs.js';
import type { TreeEntry } from '../../src/rootfs/debugfs.js';
import { Ext4Writer } from '../../src/rootfs/ext4-writer.js';
import type { FinishOptions, NodeMeta, WriteResult } from '../../src/rootfs/ext4-writer.js';
import { UserError } from '../../src/util/errors.js';
import { exec } from '../../src/util/exec.js';

/**
 * The userspace ext4 writer against real e2fsprogs: every image passes `e2fsck -fn`, and the tree read
 * back through debugfs (types, modes, owners, sizes, content, link targets, device numbers, xattrs, hard
 * links) is the one written.
 */
const T = { sec: 1700000000, nsec: 123456789 };
const meta = (mode: number, o: Partial<NodeMeta> = {}): NodeMeta => ({ mode, uid: 0, gid: 0, mtime: T, ...o });
async function* chunks(b: Buffer, step = 65536): AsyncGenerator<Buffer> { for (let i = 0; i < b.length; i += step) yield b.subarray(i, i + step); }
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let dir: string;
let n = 0;
beforeAll(async () => { dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'ext4-writer-')); });
afterAll(async () => { await fsp.rm(dir, { recursive: true, force: true }); });

async function build(fn: (w: Ext4Writer) => Promise<void> | void, o?: FinishOptions): Promise<{ img: string; r: WriteResult }> {
  const img = path.join(dir, `i${n++}.ext4`);
  const w = await Ext4Writer.create(img);
  try {
    await fn(w);
  } catch (e) {
    await w.abort();
    throw e;
  }
  const r = await w.finish(o);
  return { img, r };
}

async function fsck(img: string): Promise<void> {
  const r = await exec('e2fsck', ['-fn', img], { allowFailure: true });
  if (r.code !== 0) throw new Error(`e2fsck -fn exit ${r.code}:\n${r.stdout}\n${r.stderr}`);
}

async function debugfs(img: string, cmd: string): Promise<string> {
  return (await exec('debugfs', ['-R', cmd, img])).stdout;
}

const byPath = (es: TreeEntry[]): Map<string, TreeEntry> => new Map(es.map((e) => [e.path, e]));

/** VFS-format POSIX ACL (version 2): user::rwx user:1000:rw- group::r-x mask::rwx other::r--. */
function vfsAcl(): Buffer {
  const es: [number, number, number][] = [[1, 7, 0xffffffff], [2, 6, 1000], [4, 5, 0xffffffff], [0x10, 7, 0xffffffff], [0x20, 4, 0xffffffff]];
  const b = Buffer.alloc(4 + es.length * 8);
  b.writeUInt32LE(2, 0);
  es.forEach(([t, p, id], i) => { b.writeUInt16LE(t, 4 + i * 8); b.writeUInt16LE(p, 6 + i * 8); b.writeUInt32LE(id, 8 + i * 8); });
  return b;
}

describe('Ext4Writer', () => {
  test('an empty image is e2fsck-clean and has lost+found as mke2fs makes it', async () => {
    const { img, r } = await build(() => undefined);
    await fsck(img);
    expect(await new Ext4Reader(img).list()).toEqual([]);
    const lf = await debugfs(img, 'stat /lost+found');
    expect(lf).toMatch(/^Inode: 11\s+Type: directory\s+Mode:\s+0700/);
    expect(lf).toMatch(/Size: 16384/);
    const h = (await exec('dumpe2fs', ['-h', img])).stdout;
    expect(h).toMatch(/Filesystem volume name:\s+rootfs/);
    expect(h).toMatch(/Filesystem features:\s+ext_attr dir_index filetype extent flex_bg sparse_super large_file huge_file dir_nlink extra_isize/);
    expect(h).toMatch(/Inode size:\s+256/);
    expect(h).toMatch(/Maximum mount count:\s+-1/);
    expect(h).toMatch(/Default directory hash:\s+half_md4/);
    expect(r.inodes).toBe(11);
    expect((await fsp.stat(img)).size).toBe(r.imageBytes);
  });

  test('types, modes, owners, content, links, devices and xattrs read back as written', async () => {
    const big = Buffer.alloc(300000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff;
    const caps = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const largeX = Buffer.alloc(3000, 0x61);
    const long = 'x/'.repeat(2047) + 'y'; // 4095 bytes
    const { img } = await build(async (w) => {
      w.addDir('/a/b/c', meta(0o750, { uid: 5, gid: 6 }));
      w.addDir('/tmp', meta(0o1777));
      w.addDir('/sg', meta(0o2775, { gid: 100 }));
      await w.addFile('/a/b/c/data', meta(0o644), big.length, chunks(big, 1000));
      await w.addFile('/usr/bin/su', meta(0o4755, { uid: 70000, gid: 65537 }), 5, chunks(Buffer.from('su!\n\n')));
      await w.addFile('/empty', meta(0o600), 0, chunks(Buffer.alloc(0)));
      await w.addFile('/h1', meta(0o644), 3, chunks(Buffer.from('hl\n')));
      w.addHardlink('/h2', '/h1');
      w.addHardlink('/a/h3', 'h1');
      w.remove('/h2');
      w.addSymlink('/fast', '/usr/bin/su', meta(0o777));
      w.addSymlink('/slow', long, meta(0o777));
      w.addSymlink('/s255', 'z'.repeat(255), meta(0o777));
      w.addSpecial('/dev/null', 'char', meta(0o666), { major: 1, minor: 3 });
      w.addSpecial('/dev/nvme', 'block', meta(0o660, { gid: 6 }), { major: 259, minor: 70000 });
      w.addSpecial('/fifo', 'fifo', meta(0o644));
      w.addSpecial('/sock', 'socket', meta(0o755));
      await w.addFile('/ping', meta(0o755, { xattrs: new Map([['security.capability', caps], ['user.note', Buffer.from('hi')]]) }), 4, chunks(Buffer.from('ping')));
      await w.addFile('/bigx', meta(0o644, { xattrs: new Map([['user.big', largeX], ['trusted.t', Buffer.from('1')]]) }), 1, chunks(Buffer.from('b')));
      w.addDir('/acl', meta(0o775, { xattrs: new Map([['system.posix_acl_access', vfsAcl()], ['system.posix_acl_default', vfsAcl()]]) }));
    });
    await fsck(img);
    const t = byPath(await new Ext4Reader(img).tree({ hashes: true, xattrs: true }));
    const pick = (p: string): Partial<TreeEntry> => {
      const e = t.get(p);
      if (!e) throw new Error(`${p} missing`);
      const { ino: _ino, path: _p, ...rest } = e;
      return rest;
    };
    expect(pick('/a/b/c')).toMatchObject({ type: 'dir', mode: 0o750, uid: 5, gid: 6 });
    expect(pick('/a/b')).toMatchObject({ type: 'dir', mode: 0o755, uid: 0, gid: 0 });
    expect(pick('/tmp')).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(pick('/sg')).toMatchObject({ type: 'dir', mode: 0o2775, gid: 100 });
    expect(pick('/a/b/c/data')).toMatchObject({ type: 'file', size: big.length, sha256: sha(big) });
    expect(pick('/usr/bin/su')).toMatchObject({ type: 'file', mode: 0o4755, uid: 70000, gid: 65537, sha256: sha(Buffer.from('su!\n\n')) });
    expect(pick('/empty')).toMatchObject({ type: 'file', size: 0, mode: 0o600 });
    expect(t.has('/h2')).toBe(false);
    expect(t.get('/h1')?.ino).toBe(t.get('/a/h3')?.ino);
    expect(await debugfs(img, 'stat /h1')).toMatch(/Links: 2\s/);
    expect(pick('/fast')).toMatchObject({ type: 'symlink', linkTarget: '/usr/bin/su' });
    expect(pick('/slow')).toMatchObject({ type: 'symlink', linkTarget: long, size: 4095 });
    expect(pick('/s255')).toMatchObject({ type: 'symlink', linkTarget: 'z'.repeat(255) });
    expect(await debugfs(img, 'stat /fast')).toMatch(/Fast link dest: "\/usr\/bin\/su"/);
    expect(pick('/dev/null')).toMatchObject({ type: 'char', rdev: '1:3', mode: 0o666 });
    expect(pick('/dev/nvme')).toMatchObject({ type: 'block', rdev: '259:70000', gid: 6 });
    expect(pick('/fifo')).toMatchObject({ type: 'fifo' });
    expect(pick('/sock')).toMatchObject({ type: 'socket', mode: 0o755 });
    expect(pick('/ping').xattrs).toEqual({ 'security.capability': caps.toString('hex'), 'user.note': '"hi"' });
    expect(await debugfs(img, 'stat /ping')).toMatch(/File ACL: 0\s/); // in the inode
    expect(pick('/bigx').xattrs?.['trusted.t']).toBe('"1"');
    const out = path.join(dir, 'bigx.val');
    await debugfs(img, `ea_get -f ${out} /bigx user.big`);
    expect(await fsp.readFile(out)).toEqual(largeX);
    expect(await debugfs(img, 'stat /bigx')).not.toMatch(/File ACL: 0\s/); // an xattr block
    // Read back (Ext4Reader gives ACLs in the VFS format, as getxattr does): what was written.
    const acl = pick('/acl').xattrs ?? {};
    expect(acl['system.posix_acl_access']).toBe(vfsAcl().toString('hex'));
    expect(acl['system.posix_acl_default']).toBe(vfsAcl().toString('hex'));
    // On disk, ext4's own ACL format (debugfs's ea_list shows it raw): version 1, 4-byte entries but for
    // user:1000 (8 bytes).
    const disk = '01000000' + '01000700' + '02000600e8030000' + '04000500' + '10000700' + '20000400';
    const raw = (await debugfs(img, 'ea_list /acl')).replace(/\s/g, '');
    expect(raw).toContain(`system.posix_acl_access(28)=${disk}`);
    expect(raw).toContain(`system.posix_acl_default(28)=${disk}`);
    const st = await debugfs(img, 'stat /a/b/c/data');
    expect(st).toMatch(new RegExp(`mtime: 0x${T.sec.toString(16)}:${((T.nsec << 2) >>> 0).toString(16).padStart(8, '0')}`));
  });

  test('times before 1970 and after 2038 keep their epoch bits and nanoseconds', async () => {
    const { img } = await build((w) => {
      w.addDir('/old', meta(0o755, { mtime: { sec: -86400, nsec: 5 } }));
      w.addDir('/new', meta(0o755, { mtime: { sec: 2 ** 32 + 100, nsec: 999999999 } }));
    });
    await fsck(img);
    expect(await debugfs(img, 'stat /old')).toMatch(/mtime: 0xfffeae80:00000014 -- Wed Dec 31 00:00:00 1969/);
    expect(await debugfs(img, 'stat /new')).toMatch(new RegExp(`mtime: 0x00000064:${(((999999999 << 2) | 1) >>> 0).toString(16)} -- .* 2106`));
  });

  test('zero blocks become holes: a sparse file allocates only its data', async () => {
    const size = 4 * 1024 * 1024 * 1024 + 100; // over 4 GiB: i_size_high, large_file
    async function* sparse(): AsyncGenerator<Buffer> {
      let left = size;
      let i = 0;
      while (left > 0) {
        const b = Buffer.alloc(Math.min(1 << 20, left));
        if (i++ % 1024 === 0) b.fill(1, 0, Math.min(4096, b.length));
        left -= b.length;
        yield b;
      }
    }
    const { img } = await build(async (w) => { await w.addFile('/sparse', meta(0o644), size, sparse()); });
    await fsck(img);
    const st = await debugfs(img, 'stat /sparse');
    expect(st).toMatch(/Blockcount: 48\s/); // 5 data blocks and the extent leaf (5 extents)
    expect(st).toMatch(new RegExp(`Size: ${size}\\s`));
    const du = (await exec('du', ['-B1', img])).stdout;
    expect(Number(du.split('\t')[0])).toBeLessThan(4 * 1024 * 1024);
  });

  test('a file over 128 MiB spans block groups with many extents and reads back whole', async () => {
    const size = 150 * 1024 * 1024 + 12345;
    const hash = createHash('sha256');
    async function* data(): AsyncGenerator<Buffer> {
      for (let off = 0, i = 0; off < size; i++) {
        const b = Buffer.alloc(Math.min(1 << 20, size - off), (i % 251) + 1);
        b.writeUInt32LE(i, 0);
        off += b.length;
        hash.update(b);
        yield b;
      }
    }
    const { img } = await build(async (w) => { await w.addFile('/big', meta(0o644), size, data()); });
    await fsck(img);
    const st = await debugfs(img, 'stat /big');
    expect(st).toMatch(new RegExp(`Size: ${size}\\s`));
    expect((st.match(/\(\d+-\d+\):/g) ?? []).length).toBeGreaterThan(1);
    const out = path.join(dir, 'big.out');
    await debugfs(img, `dump /big ${out}`);
    expect(createHash('sha256').update(await fsp.readFile(out)).digest('hex')).toBe(hash.digest('hex'));
    await fsp.rm(out);
  });

  test('50,000 entries in one directory and spread over many are e2fsck-clean', async () => {
    const { img, r } = await build(async (w) => {
      for (let i = 0; i < 50000; i++) await w.addFile(`/flat/file-with-a-longish-name-${i}`, meta(0o644), 2, chunks(Buffer.from(`${i % 10}\n`)));
      for (let i = 0; i < 50000; i++) {
        if (i % 10 === 0) w.addDir(`/tree/d${i % 1000}/e${i}`, meta(0o755));
        else w.addSymlink(`/tree/d${i % 1000}/l${i}`, `../x${i}`, meta(0o777));
      }
    });
    await fsck(img);
    expect(r.entries).toBeGreaterThan(100000);
    const flat = await new Ext4Reader(img).list('/flat', { recursive: false });
    expect(flat.length).toBe(50000);
    const d7 = await new Ext4Reader(img).list('/tree/d7', { recursive: false });
    expect(d7.length).toBe(50);
    expect(await debugfs(img, 'stat /tree')).toMatch(/Links: 1002\s/);
  });

  test('a file of 1,500 extents gets a two-level extent tree', async () => {
    const blocks = 3000; // data and zero blocks alternating: 1,500 extents, more than one leaf level holds
    const data = Buffer.alloc(blocks * 4096);
    for (let i = 0; i < blocks; i += 2) data.fill((i % 200) + 1, i * 4096, (i + 1) * 4096);
    const { img } = await build(async (w) => { await w.addFile('/frag', meta(0o644), data.length, chunks(data, 10000)); });
    await fsck(img);
    expect(await debugfs(img, 'stat /frag')).toMatch(/\(ETB1\):/);
    const out = path.join(dir, 'frag.out');
    await debugfs(img, `dump /frag ${out}`);
    expect(sha(await fsp.readFile(out))).toBe(sha(data));
  });

  test('removed and replaced files leave no content in the image', async () => {
    const secret = (s: string): Buffer => Buffer.from(`${s}-${'S'.repeat(5000)}`);
    const { img } = await build(async (w) => {
      await w.addFile('/etc/shadow-old', meta(0o600), secret('whited-out').length, chunks(secret('whited-out')));
      await w.addFile('/etc/replaced', meta(0o600), secret('replaced').length, chunks(secret('replaced')));
      await w.addFile('/etc/kept', meta(0o600), secret('kept-content').length, chunks(secret('kept-content')));
      await w.addFile('/opt/linked', meta(0o600), secret('hard-linked').length, chunks(secret('hard-linked')));
      w.addHardlink('/opt/other-name', '/opt/linked');
      w.beginLayer();
      w.remove('/etc/shadow-old');
      await w.addFile('/etc/replaced', meta(0o600), 3, chunks(Buffer.from('new')));
      w.remove('/opt/linked'); // still named /opt/other-name: kept
    });
    await fsck(img);
    const raw = await fsp.readFile(img);
    expect(raw.includes('whited-out-SSS')).toBe(false);
    expect(raw.includes('replaced-SSS')).toBe(false);
    expect(raw.includes('kept-content-SSS')).toBe(true);
    expect(raw.includes('hard-linked-SSS')).toBe(true);
  });

  test('a directory with more than 65,000 subdirectories has one link (dir_nlink), one with 64,998 the exact count', async () => {
    const { img } = await build((w) => {
      for (let i = 0; i < 65000; i++) w.addDir(`/many/${i}`, meta(0o755));
      for (let i = 0; i < 64998; i++) w.addDir(`/edge/${i}`, meta(0o755));
    });
    await fsck(img);
    expect(await debugfs(img, 'stat /many')).toMatch(/Links: 1\s/);
    expect(await debugfs(img, 'stat /edge')).toMatch(/Links: 65000\s/);
  });

  test('whiteouts, opaque directories and layers follow Docker\'s rules', async () => {
    const { img } = await build(async (w) => {
      w.addDir('/etc/app', meta(0o755));
      await w.addFile('/etc/app/old.conf', meta(0o644), 1, chunks(Buffer.from('o')));
      w.addDir('/etc/app/sub', meta(0o755));
      await w.addFile('/etc/app/sub/deep', meta(0o644), 1, chunks(Buffer.from('d')));
      await w.addFile('/etc/keep', meta(0o644), 1, chunks(Buffer.from('k')));
      await w.addFile('/etc/gone', meta(0o644), 1, chunks(Buffer.from('g')));
      w.addHardlink('/etc/gone-link', '/etc/gone');
      w.addDir('/var/lib/x', meta(0o755));
      w.beginLayer();
      await w.addFile('/etc/app/new.conf', meta(0o644), 1, chunks(Buffer.from('n')));
      w.clearDir('/etc/app');
      w.remove('/etc/gone');
      w.remove('/var/lib');
      w.remove('/not/there');
      w.addDir('/etc/keep', meta(0o700)); // a directory over a file
      await w.addFile('/etc/keep/inner', meta(0o644), 1, chunks(Buffer.from('i')));
      await w.addFile('/var', meta(0o644), 1, chunks(Buffer.from('v'))); // a file over a directory: the subtree goes
    });
    await fsck(img);
    const paths = (await new Ext4Reader(img).list()).map((e) => `${e.path}:${e.type}`);
    expect(paths).toEqual(['/etc:dir', '/etc/app:dir', '/etc/app/new.conf:file', '/etc/gone-link:file', '/etc/keep:dir', '/etc/keep/inner:file', '/var:file']);
    expect(await debugfs(img, 'stat /etc/gone-link')).toMatch(/Links: 1\s/);
  });

  test('parents resolve through symlinks inside the image and never leave it', async () => {
    const { img } = await build(async (w) => {
      w.addDir('/usr/lib', meta(0o755));
      w.addSymlink('/lib', 'usr/lib', meta(0o777));
      await w.addFile('/lib/x', meta(0o644), 1, chunks(Buffer.from('x')));
      w.addSymlink('/a', '/b', meta(0o777));
      await w.addFile('/a/y', meta(0o644), 1, chunks(Buffer.from('y')));
      w.addSymlink('/usr/up', '../../../../../etc', meta(0o777));
      await w.addFile('/usr/up/z', meta(0o644), 1, chunks(Buffer.from('z')));
      w.addSymlink('/loop1', 'loop2', meta(0o777));
      w.addSymlink('/loop2', 'loop1', meta(0o777));
      w.addHardlink('/lib/x-link', '/lib/x');
    });
    await fsck(img);
    const t = byPath(await new Ext4Reader(img).list());
    expect(t.get('/usr/lib/x')?.type).toBe('file');
    expect(t.get('/b/y')?.type).toBe('file');
    expect(t.get('/etc/z')?.type).toBe('file');
    expect(t.get('/usr/lib/x-link')?.ino).toBe(t.get('/usr/lib/x')?.ino);
    expect(t.get('/lib')?.type).toBe('symlink');
    expect([...t.keys()].filter((p) => !/^\/(usr|lib|a|b|etc|loop1|loop2)(\/|$)/.test(p))).toEqual([]);
  });

  test('in a layer, a path under a symlink an earlier layer made gets a directory there (overlay2), a same-layer symlink is followed', async () => {
    const { img } = await build(async (w) => {
      w.beginLayer();
      w.addDir('/usr/lib', meta(0o755));
      w.addSymlink('/lib', '/usr/lib', meta(0o777));
      await w.addFile('/lib/same', meta(0o644), 1, chunks(Buffer.from('s')));
      w.beginLayer();
      await w.addFile('/lib/x', meta(0o644), 1, chunks(Buffer.from('x')));
      w.remove('/lib/same');
    });
    await fsck(img);
    const t = byPath(await new Ext4Reader(img).list());
    expect(t.get('/usr/lib/same')?.type).toBe('file');
    expect(t.get('/lib')?.type).toBe('dir');
    expect(t.get('/lib/x')?.type).toBe('file');
    expect(t.get('/usr/lib/x')).toBeUndefined();
  });

  test('bad names and links are one-line user errors', async () => {
    const img = path.join(dir, 'bad.ext4');
    const w = await Ext4Writer.create(img);
    expect(() => w.addDir('/a/../b', meta(0o755))).toThrow(/'\.\.' component/);
    expect(() => w.addDir(`/${'n'.repeat(256)}`, meta(0o755))).toThrow(/longer than ext4's 255 bytes/);
    expect(() => w.addHardlink('/h', '/missing')).toThrow(/not in the image/);
    w.addDir('/d', meta(0o755));
    expect(() => w.addHardlink('/h', '/d')).toThrow(/a directory/);
    expect(() => w.addSymlink('/s', 'x'.repeat(4096), meta(0o777))).toThrow(UserError);
    w.addSymlink('/loop1', 'loop2', meta(0o777));
    w.addSymlink('/loop2', 'loop1', meta(0o777));
    await expect(w.addFile('/loop1/f', meta(0o644), 1, chunks(Buffer.from('f')))).rejects.toThrow(/too many levels of symbolic links/);
    await expect(w.addFile('/short', meta(0o644), 10, chunks(Buffer.from('f')))).rejects.toThrow(/ended after 1 of its 10 bytes/);
    const huge = new Map([['user.a', Buffer.alloc(5000)]]);
    await expect(w.addFile('/xattr-heavy', meta(0o644, { xattrs: huge }), 0, chunks(Buffer.alloc(0)))).rejects.toThrow(/extended attributes of "\/xattr-heavy"/);
    await w.abort();
    await expect(fsp.stat(img)).rejects.toThrow(/ENOENT/);
  });

  test('sizes: free space, an exact size, a too-small size; inodes to spare', async () => {
    const a = await build(async (w) => { await w.addFile('/f', meta(0o644), 100000, chunks(Buffer.alloc(100000, 1))); }, { freeBytes: 64 << 20 });
    await fsck(a.img);
    expect(a.r.imageBytes - a.r.usedBytes).toBeGreaterThanOrEqual(64 << 20);
    const free = (await exec('dumpe2fs', ['-h', a.img])).stdout;
    expect(Number(/Free inodes:\s+(\d+)/.exec(free)?.[1])).toBeGreaterThanOrEqual((64 << 20) / 16384);
    const b = await build(() => undefined, { sizeBytes: 300 << 20 });
    await fsck(b.img);
    expect(b.r.imageBytes).toBe(300 << 20);
    expect((await fsp.stat(b.img)).size).toBe(300 << 20);
    await expect(build(async (w) => { await w.addFile('/f', meta(0o644), 1 << 20, chunks(Buffer.alloc(1 << 20, 1))); }, { sizeBytes: 65536 }))
      .rejects.toThrow(/^--size 65536 bytes is smaller than the \d+ bytes the content needs: give a larger --size or leave it out$/);
    const c = await build(() => undefined, { extraInodes: 70000 });
    await fsck(c.img);
    expect(Number(/Inode count:\s+(\d+)/.exec((await exec('dumpe2fs', ['-h', c.img])).stdout)?.[1])).toBeGreaterThanOrEqual(70011);
  });

  test('a journal on request: e2fsck-clean with a jbd2 superblock in inode 8', async () => {
    const { img } = await build(async (w) => { w.addDir('/x', meta(0o755)); }, { journal: true, freeBytes: 200 << 20 });
    await fsck(img);
    const h = (await exec('dumpe2fs', ['-h', img])).stdout;
    expect(h).toMatch(/has_journal/);
    expect(h).toMatch(/Total journal size:\s+16M/);
    expect(await debugfs(img, 'logdump')).toMatch(/Journal starts at block 0, transaction 1/) // an empty journal, as mke2fs leaves it;
  });

  test('resize2fs grows and shrinks a written image', async () => {
    const { img } = await build(async (w) => {
      for (let i = 0; i < 500; i++) await w.addFile(`/d${i % 7}/f${i}`, meta(0o644), 5000, chunks(Buffer.alloc(5000, i % 255 + 1)));
    }, { freeBytes: 16 << 20 });
    const before = await new Ext4Reader(img).tree({ hashes: true });
    await exec('resize2fs', [img, `${(((await fsp.stat(img)).size + (64 << 20)) / 4096)}`]);
    await fsck(img);
    await exec('resize2fs', ['-M', img]);
    await fsck(img);
    await exec('resize2fs', [img, '200M']);
    await fsck(img);
    expect(await new Ext4Reader(img).tree({ hashes: true })).toEqual(before);
  });

  // Mounting a small tmpfs needs root (as the other disk-full tests do).
  (process.getuid?.() === 0 ? test : test.skip)('a full disk is one line naming the image, and abort leaves no file', async () => {
    const small = await fsp.mkdtemp(path.join(os.tmpdir(), 'ext4-writer-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', small]);
    try {
      const img = path.join(small, 'full.ext4');
      const w = await Ext4Writer.create(img);
      const data = Buffer.alloc(16 << 20, 1);
      const err = await w.addFile('/f', meta(0o644), data.length, chunks(data, 1 << 20)).then(() => w.finish()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toBe(`out of disk space writing ${img}: free some space or point the store (rootfs-storage-root) at a larger file system`);
      await w.abort();
      expect(await fsp.readdir(small)).toEqual([]);
    } finally {
      execFileSync('umount', [small]);
      await fsp.rm(small, { recursive: true, force: true });
    }
  });
});
