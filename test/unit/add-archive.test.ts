import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { placeArchive } from '../../src/engine/add-archive.js';
import { UserError } from '../../src/util/errors.js';
import { Header } from 'tar';
import { rawTar } from '../helpers/trees.js';

// `ADD <local archive>` of the vm engine, read in-process: the placements it gives (what debugfs then
// writes into the image) and what it leaves on the host: only content files named by firebuild, mode
// 0600, regular, root-owned; never a name, mode, owner, link or device node from the archive.

let work: string;
let n = 0;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-addarchive-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** A fresh scratch dir and the archive written as `name` (raw bytes). */
function setup(name: string, bytes: Buffer): { file: string; scratch: string } {
  const dir = path.join(work, `t${n++}`);
  const scratch = path.join(dir, 'scratch');
  fs.mkdirSync(scratch, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, bytes);
  return { file, scratch };
}

/** Every host entry under `dir`: name, type and mode as lstat gives them. */
function hostEntries(dir: string): { name: string; file: boolean; mode: number; uid: number }[] {
  return fs.readdirSync(dir).map((name) => {
    const st = fs.lstatSync(path.join(dir, name));
    return { name, file: st.isFile(), mode: st.mode & 0o7777, uid: st.uid };
  });
}

const HOSTILE = rawTar([
  { path: 'suid', data: '#!/bin/sh\n', mode: 0o4755, uid: 0, gid: 0 },
  { path: 'sgid-dir', type: 'Directory', mode: 0o2775, uid: 7, gid: 8 },
  { path: 'null', type: 'CharacterDevice', mode: 0o666, devmaj: 1, devmin: 3 },
  { path: 'disk', type: 'BlockDevice', mode: 0o660, devmaj: 8, devmin: 0, gid: 6 },
  { path: 'fifo', type: 'FIFO', mode: 0o644 },
  { path: 'evil', type: 'SymbolicLink', linkpath: '/etc' },
  { path: '/abs/y', data: 'absolute\n', uid: 1234, gid: 2345 },
  { path: './a/hard-target', data: 'shared\n', mode: 0o640 },
  { path: 'a/hard', type: 'Link', linkpath: '/a/hard-target' },
]);

describe('placeArchive', () => {
  test('a hostile archive becomes placements only: setuid file, devices, FIFO, symlink, absolute name, hard link; the host holds only 0600 content files', async () => {
    const { file, scratch } = setup('h.tar', HOSTILE);
    const p = (await placeArchive(file, '/opt/x', path.join(scratch, 'add0-'), 'the archive h.tar', undefined))!;
    const by = Object.fromEntries(p.map((x) => [x.dest, x]));
    expect(p.map((x) => x.dest)).toEqual(['/opt/x/a', '/opt/x/a/hard', '/opt/x/a/hard-target', '/opt/x/abs', '/opt/x/abs/y', '/opt/x/disk', '/opt/x/evil', '/opt/x/fifo', '/opt/x/null', '/opt/x/sgid-dir', '/opt/x/suid']);
    expect(by['/opt/x/suid']).toMatchObject({ type: 'file', mode: 0o4755, owner: { uid: 0, gid: 0 } });
    expect(fs.readFileSync(by['/opt/x/suid']!.host!, 'utf8')).toBe('#!/bin/sh\n');
    expect(by['/opt/x/sgid-dir']).toMatchObject({ type: 'dir', mode: 0o2775, owner: { uid: 7, gid: 8 } });
    expect(by['/opt/x/null']).toMatchObject({ type: 'char', rdev: [1, 3], mode: 0o666 });
    expect(by['/opt/x/disk']).toMatchObject({ type: 'block', rdev: [8, 0], owner: { uid: 0, gid: 6 } });
    expect(by['/opt/x/fifo']).toMatchObject({ type: 'fifo' });
    expect(by['/opt/x/evil']).toMatchObject({ type: 'symlink', linkTarget: '/etc' });
    expect(by['/opt/x/abs']).toMatchObject({ type: 'dir', mode: 0o755, owner: { uid: 0, gid: 0 } });
    expect(by['/opt/x/abs/y']).toMatchObject({ type: 'file', owner: { uid: 1234, gid: 2345 } });
    // The first name in walk order carries the content; the other is a link to it.
    expect(by['/opt/x/a/hard']).toMatchObject({ type: 'file', mode: 0o640 });
    expect(by['/opt/x/a/hard-target']).toMatchObject({ type: 'hardlink', linkTo: '/opt/x/a/hard' });
    const host = hostEntries(scratch);
    expect(host.map((h) => h.name).sort()).toEqual(['add0-0', 'add0-1', 'add0-2']);
    for (const h of host) expect(h).toMatchObject({ file: true, mode: 0o600, uid: process.getuid!() });
  });

  test('later entries replace earlier ones; a directory over a directory keeps its children; a file over a directory drops them; xattrs and --chmod', async () => {
    const tar = Buffer.concat([
      rawTar([
        { path: 'd', type: 'Directory', mode: 0o700 },
        { path: 'd/kept', data: 'k' },
        { path: 'f', data: 'first' },
        { path: 'g', type: 'Directory' },
        { path: 'g/gone', data: 'x' },
      ]).subarray(0, -1024),
      rawTar([{ path: 'd', type: 'Directory', mode: 0o751, uid: 3 }, { path: 'f', data: 'second' }, { path: 'g', data: 'now a file' }]),
    ]);
    const { file, scratch } = setup('r.tar', tar);
    const p = (await placeArchive(file, '/', path.join(scratch, 'add0-'), 'the archive r.tar', undefined))!;
    expect(p.map((x) => [x.dest, x.type])).toEqual([['/d', 'dir'], ['/d/kept', 'file'], ['/f', 'file'], ['/g', 'file']]);
    expect(p[0]).toMatchObject({ mode: 0o751, owner: { uid: 3, gid: 0 } });
    expect(fs.readFileSync(p[2]!.host!, 'utf8')).toBe('second');
    const forced = (await placeArchive(file, '/', path.join(scratch, 'add1-'), 'the archive r.tar', 0o600))!;
    expect(forced.filter((x) => x.type !== 'symlink').map((x) => x.mode)).toEqual([0o600, 0o600, 0o600, 0o600]);

    // A pax xattr (binary value) is staged in a private file and placed on the entry.
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const rec = (k: string, v: Buffer): Buffer => {
      const body = Buffer.concat([Buffer.from(` ${k}=`), v, Buffer.from('\n')]);
      let len = body.length + 2;
      if (String(len).length + body.length !== len) len = body.length + String(len + 1).length;
      return Buffer.concat([Buffer.from(String(len)), body]);
    };
    const pax = rec('SCHILY.xattr.security.capability', cap);
    const head = Buffer.alloc(512);
    new Header({ path: 'PaxHeader/cap', type: 'ExtendedHeader', size: pax.length, mode: 0o644, uid: 0, gid: 0, mtime: new Date(0) }).encode(head, 0);
    const fixed = Buffer.concat([head, pax, Buffer.alloc((512 - (pax.length % 512)) % 512), rawTar([{ path: 'cap', data: 'bin' }])]);
    const c = setup('x.tar', fixed);
    const [capEntry] = (await placeArchive(c.file, '/', path.join(c.scratch, 'add0-'), 'the archive x.tar', undefined))!;
    expect(capEntry).toMatchObject({ dest: '/cap', type: 'file' });
    expect(capEntry!.xattrs?.[0]?.[0]).toBe('security.capability');
    expect(fs.readFileSync(capEntry!.xattrs![0]![1])).toEqual(cap);
  });

  test.each<[string, Parameters<typeof rawTar>[0], RegExp]>([
    ['.. in a name', [{ path: '../escape', data: 'x' }], /^unsafe entry in the archive e\.tar: entry "\.\.\/escape" climbs out of the root with \.\.; refusing to add it$/],
    ['a nested ..', [{ path: 'a/../../escape', data: 'x' }], /entry "a\/\.\.\/\.\.\/escape" climbs out of the root/],
    ['a path through a symlink the archive made', [{ path: 'evil', type: 'SymbolicLink', linkpath: '/etc' }, { path: 'evil/x', data: 'x' }], /entry "evil\/x" goes through the symlink "evil"/],
    ['a hard link out of the root', [{ path: 'h', type: 'Link', linkpath: '../../etc/shadow' }], /hard link "h" target "\.\.\/\.\.\/etc\/shadow" climbs out/],
    ['a hard link to something not in the archive', [{ path: 'h', type: 'Link', linkpath: '/etc/shadow' }], /hard link "h" points at "\/etc\/shadow", which is not an earlier entry of the archive/],
    ['a hard link to a directory', [{ path: 'd', type: 'Directory' }, { path: 'h', type: 'Link', linkpath: 'd' }], /hard link "h" points at the directory "d"/],
    ['an entry under a file', [{ path: 'f', data: 'x' }, { path: 'f/y', data: 'y' }], /entry "f\/y" is under "f", which the archive made a file/],
  ])('refuses %s with one line naming the entry', async (_n, entries, want) => {
    const { file, scratch } = setup('e.tar', rawTar(entries));
    const err = await placeArchive(file, '/', path.join(scratch, 'add0-'), 'the archive e.tar', undefined).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(want);
    expect((err as Error).message).not.toContain('\n');
  });

  test('gzip (in-process), bzip2, xz and zstd (filter processes) give the same placements; an archive corrupt or truncated after its first entry is one line', async () => {
    // Incompressible content: half of each compressed stream still decodes past the first entry.
    const tar = rawTar([{ path: 't/one', data: 'one\n', uid: 5 }, { path: 't/big', data: randomBytes(300_000).toString('base64') }]);
    const want = (await placeArchive(setup('p.tar', tar).file, '/o', path.join(work, 'plain-'), 'the archive p.tar', undefined))!.map((x) => ({ ...x, host: x.host ? fs.readFileSync(x.host, 'utf8') : undefined }));
    expect(want.map((x) => x.dest)).toEqual(['/o/t', '/o/t/big', '/o/t/one']);
    for (const [name, compress] of [
      ['gzip', (b: Buffer) => zlib.gzipSync(b)],
      ['bzip2', (b: Buffer) => execFileSync('bzip2', ['-c', '-1'], { input: b })],
      ['xz', (b: Buffer) => execFileSync('xz', ['-c'], { input: b })],
      ['zstd', (b: Buffer) => execFileSync('zstd', ['-c', '-q'], { input: b })],
    ] as const) {
      const whole = compress(tar);
      const { file, scratch } = setup(`a.tar.${name}`, whole);
      const got = (await placeArchive(file, '/o', path.join(scratch, 'add0-'), `the archive a.tar.${name}`, undefined))!;
      expect(got.map((x) => ({ ...x, host: x.host ? fs.readFileSync(x.host, 'utf8') : undefined }))).toEqual(want);
      const cut = setup(`cut.tar.${name}`, whole.subarray(0, Math.floor(whole.length / 2)));
      const err = await placeArchive(cut.file, '/o', path.join(cut.scratch, 'add0-'), `the archive cut.tar.${name}`, undefined).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toMatch(new RegExp(`^the archive cut\\.tar\\.${name} is not a valid ${name} (archive|stream)`));
      const flipped = Buffer.from(whole);
      flipped[flipped.length - 6] = (flipped[flipped.length - 6] as number) ^ 0xff; // a checksum or a trailer byte
      const bad = setup(`bad.tar.${name}`, flipped);
      await expect(placeArchive(bad.file, '/o', path.join(bad.scratch, 'add0-'), `the archive bad.tar.${name}`, undefined)).rejects.toThrow(new RegExp(`the archive bad\\.tar\\.${name} is not a valid`));
    }
  });
});
