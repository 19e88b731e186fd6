import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { Step } from '../../src/dockerfile/plan-schema.js';
import { applyCopy, applyWorkdir, mtimeCommands, type Owner } from '../../src/engine/vm-fs.js';
import { Ext4Image, type ImageEntry } from '../../src/rootfs/ext4-read.js';
import { LocalContext } from '../../src/source/context.js';
import { Downloads } from '../../src/source/downloads.js';
import { lastModified } from '../../src/source/http.js';
import type { Resource } from '../../src/source/resource.js';
import { downloadLimits } from '../../src/util/download.js';
import { UserError } from '../../src/util/errors.js';
import { mkfsFromDir } from '../helpers/ext4-craft.js';
import { rawTar } from '../helpers/trees.js';

// The vm engine's COPY, ADD and WORKDIR on real ext4 images (mkfs.ext4 -d, written by debugfs, read
// back in-process), checked against what BuildKit's copy does (tonistiigi/fsutil copy, continuity's
// RootPath, solver/llbsolver/file/unpack.go): destinations through the image's symlinks (merged /usr,
// /etc/localtime), kept mtimes, ADD of a compressed file that holds no tar, and crafted links that point
// out of the image or loop.

let work: string;
let base: string;
let ctx: string;
let n = 0;
const ROOT: Owner = { uid: 0, gid: 0 };
const T2001 = new Date('2001-02-03T04:05:06.789Z');
const T1999 = new Date('1999-09-09T09:09:09Z');

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-vmfs-'));
  // A Debian 12 style tree: /bin, /sbin, /lib links into /usr, /var/run -> /run, /etc/localtime -> a zone file.
  const b = path.join(work, 'base');
  const w = (p: string, data: string): void => {
    fs.mkdirSync(path.dirname(path.join(b, p)), { recursive: true });
    fs.writeFileSync(path.join(b, p), data);
  };
  w('usr/bin/true', 'true\n');
  w('usr/sbin/init', 'init\n');
  w('usr/lib/os-release', 'ID=debian\n');
  w('usr/bin/python3.11', 'python\n');
  w('usr/share/zoneinfo/Etc/UTC', 'UTC0\n');
  w('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
  fs.mkdirSync(path.join(b, 'run'));
  fs.mkdirSync(path.join(b, 'var'));
  fs.mkdirSync(path.join(b, 'tmp'));
  fs.symlinkSync('usr/bin', path.join(b, 'bin'));
  fs.symlinkSync('usr/sbin', path.join(b, 'sbin'));
  fs.symlinkSync('usr/lib', path.join(b, 'lib'));
  fs.symlinkSync('/run', path.join(b, 'var/run'));
  fs.symlinkSync('/usr/share/zoneinfo/Etc/UTC', path.join(b, 'etc/localtime'));
  fs.symlinkSync('../usr/lib/os-release', path.join(b, 'etc/os-release'));
  fs.symlinkSync('python3.11', path.join(b, 'usr/bin/python3'));
  fs.symlinkSync('/opt/nowhere/file', path.join(b, 'etc/dangling'));
  // Crafted: links that climb past the root (relative and absolute), loops, a chain longer than the limit.
  const escapeTo = path.join(work, 'escaped');
  fs.symlinkSync(`${'../'.repeat(12)}${escapeTo.slice(1)}`, path.join(b, 'escape'));
  fs.symlinkSync(`/../../..${escapeTo}`, path.join(b, 'absescape'));
  fs.symlinkSync('loop2', path.join(b, 'loop1'));
  fs.symlinkSync('/loop1', path.join(b, 'loop2'));
  fs.symlinkSync('./self/sub', path.join(b, 'self'));
  for (let i = 0; i < 45; i++) fs.symlinkSync(i === 44 ? '/tmp' : `chain${i + 1}`, path.join(b, `chain${i}`));
  base = path.join(work, 'base.ext4');
  mkfsFromDir(b, base, { sizeMiB: 16 });
  ctx = path.join(work, 'ctx');
  fs.mkdirSync(path.join(ctx, 'tree', 'sub'), { recursive: true });
  fs.writeFileSync(path.join(ctx, 'a.txt'), 'a\n');
  fs.writeFileSync(path.join(ctx, 'tz'), 'CET-1\n');
  fs.writeFileSync(path.join(ctx, 'tree', 'sub', 'x'), 'x\n');
  fs.symlinkSync('sub/x', path.join(ctx, 'tree', 'link'));
  fs.utimesSync(path.join(ctx, 'a.txt'), T2001, T2001);
  fs.utimesSync(path.join(ctx, 'tree', 'sub', 'x'), T1999, T1999);
  fs.utimesSync(path.join(ctx, 'tree', 'sub'), T2001, T2001);
  fs.lutimesSync(path.join(ctx, 'tree', 'link'), T1999, T1999);
  fs.utimesSync(path.join(ctx, 'tree'), T1999, T1999);
  // A gzip of a plain file, an xz of a plain file, an empty tar, and a real tar.gz (its entries with their own mtimes).
  fs.writeFileSync(path.join(ctx, 'notes.txt.gz'), zlib.gzipSync('just text, no tar\n'));
  fs.writeFileSync(path.join(ctx, 'data.bin.xz'), execFileSync('xz', ['-c'], { input: Buffer.from('binary-ish\n'.repeat(100)) }));
  fs.writeFileSync(path.join(ctx, 'empty.tar'), Buffer.alloc(1024));
  const tar = rawTar([{ path: 'pkg/mod.py', data: 'print(1)\n' }]);
  tar.write('00000000007', 136 + 0, 'latin1'); // mtime 7 (seconds) in the first header: rawTar writes 0
  fixChecksum(tar, 0);
  fs.writeFileSync(path.join(ctx, 'pkg.tar.gz'), zlib.gzipSync(tar));
  // A tar whose first entry reads and whose second header is broken.
  const broken = rawTar([{ path: 'one', data: 'one\n' }, { path: 'two', data: 'two\n' }]);
  broken[1024 + 100] = (broken[1024 + 100] as number) ^ 0x01;
  fs.writeFileSync(path.join(ctx, 'broken.tar.gz'), zlib.gzipSync(broken));
  fs.utimesSync(path.join(ctx, 'notes.txt.gz'), T1999, T1999);
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function fixChecksum(tar: Buffer, at: number): void {
  tar.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = at; i < at + 512; i++) sum += tar[i] as number;
  tar.write(sum.toString(8).padStart(6, '0') + '\0 ', at + 148, 8, 'latin1');
}

/** A fresh copy of the base image. */
function image(): string {
  const p = path.join(work, `img${n++}.ext4`);
  fs.copyFileSync(base, p);
  return p;
}

const step = (keyword: string, dest: string, resources: Resource[], extra: Partial<Step> = {}): Step => ({
  file: 'Dockerfile', line: 3, keyword, original: `${keyword} ... ${dest}`, sources: resources.map((r) => r.source), dest, resources, ...extra,
});
const file = (p: string): Resource => ({ source: p, kind: 'file', path: p });
const dir = (p: string): Resource => ({ source: p, kind: 'dir', path: p });

async function copy(img: string, s: Step, o: { fromImage?: string; downloads?: Downloads } = {}): Promise<void> {
  const scratch = path.join(work, `scratch${n++}`);
  fs.mkdirSync(scratch);
  await applyCopy(img, { step: s, dest: s.dest!, context: new LocalContext(ctx, []), owner: ROOT, chowned: false, scratch, ...o });
}

async function entries(img: string, paths: string[]): Promise<Record<string, ImageEntry | undefined>> {
  const i = await Ext4Image.open(img);
  try {
    const out: Record<string, ImageEntry | undefined> = {};
    for (const p of paths) out[p] = await i.entryAt(p);
    return out;
  } finally {
    await i.close();
  }
}

async function content(img: string, p: string): Promise<string> {
  const i = await Ext4Image.open(img);
  try {
    return (await i.readSmall(p))?.toString() ?? '<none>';
  } finally {
    await i.close();
  }
}

const sec = (d: Date): number => Math.floor(d.getTime() / 1000);

describe('COPY, ADD and WORKDIR through the image\'s symlinks, as BuildKit resolves them (inside the image\'s root)', () => {
  test('merged /usr: COPY a file to /bin/a-tool, a directory to /lib/app/, ADD into /sbin/, WORKDIR /var/run/app land in /usr and /run; the links stay links', async () => {
    const img = image();
    await copy(img, step('COPY', '/bin/a-tool', [file('a.txt')]));
    await copy(img, step('COPY', '/lib/app/', [dir('tree')]));
    await copy(img, step('ADD', '/sbin/', [file('pkg.tar.gz')]));
    await applyWorkdir(img, '/var/run/app/sub', { uid: 7, gid: 8 }, { file: 'Dockerfile', line: 5 });
    const e = await entries(img, ['/bin', '/lib', '/sbin', '/var/run', '/usr/bin/a-tool', '/usr/lib/app/sub/x', '/usr/lib/app/link', '/usr/sbin/pkg/mod.py', '/run/app', '/run/app/sub']);
    expect(e['/bin']).toMatchObject({ type: 'symlink', linkTarget: 'usr/bin' });
    expect(e['/lib']).toMatchObject({ type: 'symlink', linkTarget: 'usr/lib' });
    expect(e['/sbin']).toMatchObject({ type: 'symlink' });
    expect(e['/var/run']).toMatchObject({ type: 'symlink', linkTarget: '/run' });
    expect(e['/usr/bin/a-tool']).toMatchObject({ type: 'file', mode: 0o644, uid: 0 });
    expect(await content(img, '/usr/bin/a-tool')).toBe('a\n');
    expect(e['/usr/lib/app/sub/x']).toMatchObject({ type: 'file' });
    expect(e['/usr/lib/app/link']).toMatchObject({ type: 'symlink', linkTarget: 'sub/x' });
    expect(e['/usr/sbin/pkg/mod.py']).toMatchObject({ type: 'file' });
    expect(e['/run/app']).toMatchObject({ type: 'dir', mode: 0o755, uid: 7, gid: 8 });
    expect(e['/run/app/sub']).toMatchObject({ type: 'dir', uid: 7, gid: 8 });
    execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' });
  });

  test('COPY tz /etc/localtime writes through the link (its target gets the file, the link stays), as BuildKit; a dangling link gets its target made', async () => {
    const img = image();
    await copy(img, step('COPY', '/etc/localtime', [file('tz')]));
    await copy(img, step('COPY', '/etc/dangling', [file('a.txt')]));
    const e = await entries(img, ['/etc/localtime', '/usr/share/zoneinfo/Etc/UTC', '/etc/dangling', '/opt/nowhere/file']);
    expect(e['/etc/localtime']).toMatchObject({ type: 'symlink', linkTarget: '/usr/share/zoneinfo/Etc/UTC' });
    expect(e['/usr/share/zoneinfo/Etc/UTC']).toMatchObject({ type: 'file', mode: 0o644 });
    expect(await content(img, '/usr/share/zoneinfo/Etc/UTC')).toBe('CET-1\n');
    expect(e['/etc/dangling']).toMatchObject({ type: 'symlink' });
    expect(await content(img, '/opt/nowhere/file')).toBe('a\n');
  });

  test('links that climb past the root stay inside the image; the host is never written', async () => {
    const img = image();
    await copy(img, step('COPY', '/escape/f', [file('a.txt')]));
    await copy(img, step('COPY', '/absescape/', [file('tz')]));
    await applyWorkdir(img, '/escape/wd', ROOT, { file: 'Dockerfile', line: 5 });
    const inside = path.join(work, 'escaped'); // the links name this host path; in the image it is under /
    const e = await entries(img, [`${inside}/f`, `${inside}/tz`, `${inside}/wd`]);
    expect(e[`${inside}/f`]).toMatchObject({ type: 'file' });
    expect(e[`${inside}/tz`]).toMatchObject({ type: 'file' });
    expect(e[`${inside}/wd`]).toMatchObject({ type: 'dir' });
    expect(fs.existsSync(inside)).toBe(false);
    execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' });
  });

  test.each([
    ['a loop', '/loop1/f'],
    ['a link into itself', '/self/f'],
    ['a chain of 45 links', '/chain0/f'],
  ])('%s is one line, at once, and nothing is written', async (_n, dest) => {
    const img = image();
    const before = fs.readFileSync(img);
    const t0 = Date.now();
    for (const run of [() => copy(img, step('COPY', dest, [file('a.txt')])), () => applyWorkdir(img, dest, ROOT, { file: 'Dockerfile', line: 5 })]) {
      const err = await run().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(UserError);
      expect((err as UserError).message).toMatch(new RegExp(`^(COPY|WORKDIR) ${dest}: the destination cannot be resolved in the image \\(.*more than 40 symlinks on the way \\(a symlink loop\\?\\)\\): fix the symlinks`));
      expect((err as UserError).message).not.toContain('\n');
      expect((err as UserError).line).toBeDefined();
    }
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(fs.readFileSync(img).equals(before)).toBe(true);
  });

  test('a destination through a file, or a directory destination that is a file: one line naming it', async () => {
    const img = image();
    const err = (p: Promise<unknown>): Promise<string> => p.then(() => 'no error', (e: unknown) => (e instanceof UserError ? e.message : String(e)));
    expect(await err(copy(img, step('COPY', '/etc/passwd/x', [file('a.txt')])))).toBe('COPY /etc/passwd/x: /etc/passwd is a file in the image, not a directory: choose another destination or remove it in an earlier RUN');
    expect(await err(copy(img, step('COPY', '/bin/true/x', [file('a.txt')])))).toBe('COPY /bin/true/x: /usr/bin/true (through symlinks) is a file in the image, not a directory: choose another destination or remove it in an earlier RUN');
    expect(await err(copy(img, step('COPY', '/etc/localtime/', [file('a.txt')])))).toBe('COPY /etc/localtime/: /usr/share/zoneinfo/Etc/UTC (through symlinks) is a file in the image, not a directory: choose another destination or remove it in an earlier RUN');
    expect(await err(applyWorkdir(img, '/etc/passwd', ROOT, { file: 'Dockerfile', line: 5 }))).toBe('WORKDIR /etc/passwd: /etc/passwd is a file in the image, not a directory: choose another WORKDIR or remove it in an earlier RUN');
  });
});

describe('mtimes are kept, as BuildKit keeps them', () => {
  test('COPY from the context: files, directories and symlinks keep theirs, to the nanosecond', async () => {
    const img = image();
    await copy(img, step('COPY', '/srv/a.txt', [file('a.txt')]));
    await copy(img, step('COPY', '/srv/tree', [dir('tree')]));
    const e = await entries(img, ['/srv/a.txt', '/srv/tree', '/srv/tree/sub', '/srv/tree/sub/x', '/srv/tree/link']);
    expect(e['/srv/a.txt']?.mtime).toEqual({ sec: sec(T2001), nsec: 789_000_000 });
    expect(e['/srv/tree']?.mtime.sec).toBe(sec(T1999));
    expect(e['/srv/tree/sub']?.mtime.sec).toBe(sec(T2001));
    expect(e['/srv/tree/sub/x']?.mtime.sec).toBe(sec(T1999));
    expect(e['/srv/tree/link']?.mtime.sec).toBe(sec(T1999));
  });

  test('COPY --from another image keeps its entries\' mtimes; a symlinked file source keeps the name it was asked by', async () => {
    const src = image();
    await copy(src, step('COPY', '/out/a.txt', [file('a.txt')]));
    const img = image();
    await copy(img, step('COPY', '/from/', [{ source: '/out/a.txt', kind: 'stage', path: '/out/a.txt', stage: 0 }]), { fromImage: src });
    await copy(img, step('COPY', '/from/', [{ source: '/etc/os-release', kind: 'stage', path: '/etc/os-release', stage: 0 }]), { fromImage: src });
    await copy(img, step('COPY', '/from/', [{ source: '/bin/python3', kind: 'stage', path: '/bin/python3', stage: 0 }]), { fromImage: src });
    await copy(img, step('COPY', '/fromdir', [{ source: '/out', kind: 'stage', path: '/out', stage: 0 }]), { fromImage: src });
    const e = await entries(img, ['/from/a.txt', '/from/os-release', '/fromdir/a.txt', '/from/python3', '/from/python3.11']);
    expect(e['/from/a.txt']?.mtime).toEqual({ sec: sec(T2001), nsec: 789_000_000 });
    expect(e['/fromdir/a.txt']?.mtime.sec).toBe(sec(T2001));
    expect(e['/from/os-release']).toMatchObject({ type: 'file' });
    expect(await content(img, '/from/os-release')).toBe('ID=debian\n');
    // Followed through /bin -> usr/bin and python3 -> python3.11, named as asked (fsutil: filepath.Base(src)).
    expect(e['/from/python3']).toMatchObject({ type: 'file' });
    expect(await content(img, '/from/python3')).toBe('python\n');
    expect(e['/from/python3.11']).toBeUndefined();
  });

  test('ADD of an archive keeps its entries\' mtimes', async () => {
    const img = image();
    await copy(img, step('ADD', '/opt/', [file('pkg.tar.gz')]));
    const e = await entries(img, ['/opt/pkg/mod.py']);
    expect(e['/opt/pkg/mod.py']?.mtime).toEqual({ sec: 7, nsec: 0 });
  });

  test('ADD of a URL: the Last-Modified time, else the epoch (BuildKit\'s http source)', async () => {
    const srv = http.createServer((req, res) => {
      res.writeHead(200, req.url === '/dated.txt' ? { 'last-modified': 'Tue, 01 Sep 2026 10:00:00 GMT' } : {});
      res.end(`served ${req.url}\n`);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const url = (p: string): string => `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}${p}`;
    const downloads = new Downloads(downloadLimits(), true);
    try {
      const img = image();
      for (const p of ['/dated.txt', '/undated.txt']) {
        const d = await downloads.get(url(p));
        await copy(img, step('ADD', '/dl/', [{ source: url(p), kind: 'url', url: url(p), sha256: d.sha256 }]), { downloads });
      }
      const e = await entries(img, ['/dl/dated.txt', '/dl/undated.txt']);
      expect(e['/dl/dated.txt']).toMatchObject({ mode: 0o600, mtime: { sec: Date.UTC(2026, 8, 1, 10) / 1000, nsec: 0 } });
      expect(e['/dl/undated.txt']?.mtime).toEqual({ sec: 0, nsec: 0 });
    } finally {
      await downloads.dispose();
      srv.close();
    }
    expect(lastModified('Tue, 01 Sep 2026 10:00:00 GMT').getTime()).toBe(Date.UTC(2026, 8, 1, 10));
    expect(lastModified('not a date').getTime()).toBe(0);
    expect(lastModified(null).getTime()).toBe(0);
  });

  test('debugfs commands for a time: the epoch bits past 2038 and the nanoseconds in mtime_extra', () => {
    expect(mtimeCommands('/a', { sec: 1, nsec: 5 })).toEqual(['sif "/a" mtime @1', 'sif "/a" mtime_extra 20']);
    expect(mtimeCommands('/a', { sec: 2 ** 31, nsec: 0 })).toEqual([`sif "/a" mtime @${2 ** 31}`, 'sif "/a" mtime_extra 1']);
    expect(mtimeCommands('/a', { sec: -5, nsec: 0 })).toEqual(['sif "/a" mtime @-5', 'sif "/a" mtime_extra 0']);
  });
});

describe('ADD of a local file decides as BuildKit: unpacked when it reads as a tar archive, copied as it is otherwise', () => {
  test('a .gz and an .xz of plain data, and a tar with no entry, are copied unchanged (name, content, mtime); a tar.gz is unpacked', async () => {
    const img = image();
    await copy(img, step('ADD', '/opt/', [file('notes.txt.gz')]));
    await copy(img, step('ADD', '/opt/data.bin.xz', [file('data.bin.xz')]));
    await copy(img, step('ADD', '/opt/', [file('empty.tar')]));
    await copy(img, step('ADD', '/opt/unpacked', [file('pkg.tar.gz')]));
    const e = await entries(img, ['/opt/notes.txt.gz', '/opt/data.bin.xz', '/opt/empty.tar', '/opt/unpacked/pkg/mod.py', '/opt/pkg.tar.gz']);
    expect(e['/opt/notes.txt.gz']).toMatchObject({ type: 'file', mode: 0o644, mtime: { sec: sec(T1999), nsec: 0 } });
    const i = await Ext4Image.open(img);
    try {
      expect((await i.readSmall('/opt/notes.txt.gz'))!.equals(fs.readFileSync(path.join(ctx, 'notes.txt.gz')))).toBe(true);
      expect((await i.readSmall('/opt/data.bin.xz'))!.equals(fs.readFileSync(path.join(ctx, 'data.bin.xz')))).toBe(true);
      expect((await i.readSmall('/opt/empty.tar'))!.equals(Buffer.alloc(1024))).toBe(true);
    } finally {
      await i.close();
    }
    expect(e['/opt/unpacked/pkg/mod.py']).toMatchObject({ type: 'file' });
    expect(e['/opt/pkg.tar.gz']).toBeUndefined();
  });

  test('an archive broken after its first entry is one line saying why it was unpacked and how to add it as it is', async () => {
    const img = image();
    const err = await copy(img, step('ADD', '/opt/', [file('broken.tar.gz')])).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toMatch(/^ADD: the archive broken\.tar\.gz is not a valid tar stream \(bad header checksum at byte 1024\): ADD unpacks broken\.tar\.gz because it starts as a tar archive; re-create it, or COPY it to add the file as it is$/);
    expect((err as UserError).line).toBe(3);
  });
});
