import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseListLine, tarCreate, tarExtract, tarList } from '../../src/rootfs/gnu-tar.js';
import { UserError } from '../../src/util/errors.js';

// The one GNU tar wrapper: its listing parsed with names as tar prints them, and any non-zero exit one
// UserError naming the archive.

describe('parseListLine', () => {
  test.each([
    ['-rw-r--r-- 0/0               2 2026-12-03 22:56:25 d/with space', { type: '-', name: 'd/with space', size: 2 }],
    ['drwxr-xr-x 0/0               0 2026-12-03 22:56:25 d/', { type: 'd', name: 'd/', size: 0 }],
    ['hrw-r--r-- 0/0               0 2026-12-03 22:56:25 d/h link to d/with space', { type: 'h', name: 'd/h link to d/with space', size: 0 }],
    ['lrwxrwxrwx 0/0               0 2026-12-03 22:56:25 d/l -> x', { type: 'l', name: 'd/l -> x', size: 0 }],
    ['crw-r--r-- 0/0             1,3 2026-12-03 22:56:25 dev/null', { type: 'c', name: 'dev/null' }],
  ])('%s', (line, want) => {
    expect(parseListLine(line)).toEqual(want);
  });
});

describe('GNU tar on real archives', () => {
  let work: string;
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-gnutar-'));
    fs.mkdirSync(path.join(work, 'src'));
    fs.writeFileSync(path.join(work, 'src', 'a b.ext4'), 'x');
    // A sparse file: 8 MiB, one byte written.
    const fd = fs.openSync(path.join(work, 'src', 'sparse'), 'w');
    fs.writeSync(fd, 'y', 8 << 20);
    fs.closeSync(fd);
  });
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('create, list and extract keep names with blanks and holes', async () => {
    const archive = path.join(work, 'a.tar.zst');
    await tarCreate(archive, { dir: path.join(work, 'src'), names: ['a b.ext4', 'sparse'], compression: 'zstd', sparse: true });
    expect(await tarList(archive, { compression: 'zstd' })).toEqual([{ type: '-', name: 'a b.ext4', size: 1 }, { type: '-', name: 'sparse', size: (8 << 20) + 1 }]);
    const out = path.join(work, 'out');
    fs.mkdirSync(out);
    await tarExtract(archive, { dir: out, compression: 'zstd', sparse: true });
    expect(fs.readFileSync(path.join(out, 'a b.ext4'), 'utf8')).toBe('x');
    const st = fs.statSync(path.join(out, 'sparse'));
    expect(st.size).toBe((8 << 20) + 1);
    expect(st.blocks * 512).toBeLessThan(1 << 20);
  });

  test('a corrupt archive is one UserError naming it and what tar said', async () => {
    const bad = path.join(work, 'bad.tar.zst');
    fs.writeFileSync(bad, Buffer.from('28b52ffd0000deadbeef', 'hex'));
    const err = await tarList(bad, { compression: 'zstd' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(new RegExp(`^GNU tar could not list ${bad}: .+`));
  });

  test('a missing member is an error, not a partial archive', async () => {
    await expect(tarCreate(path.join(work, 'c.tar'), { dir: path.join(work, 'src'), names: ['nope'] })).rejects.toThrow(/GNU tar could not create .*nope/);
  });
});
