import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkExt4Image, Ext4Image } from '../../src/rootfs/ext4-read.js';
import { tempDir } from '../helpers/cli.js';
import { comparable, debugfsTree, readerTree } from '../helpers/debugfs-tree.js';
import { mkfsFromDir, richTree, richXattrs } from '../helpers/ext4-craft.js';

/**
 * The in-process ext4 reader against debugfs (the listing the product used before): the same types,
 * modes, owners, sizes, contents, link targets, device numbers and xattrs, on the test base image and on
 * images made with mkfs.ext4 -d from a tree with every file type, in several on-disk formats.
 */
let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('Ext4Image equals debugfs', () => {
  const variants: [string, number, Parameters<typeof mkfsFromDir>[2]][] = [
    ['ext4, metadata_csum, 64bit, extents, 5000-entry htree dir', 5000, { sizeMiB: 160 }],
    ['ext4 without metadata_csum and 64bit, 128-byte inodes, 1 KiB blocks, htree', 1000, { sizeMiB: 160, features: '^metadata_csum,^64bit', inodeSize: 128, blockSize: 1024 }],
    ['ext2 (legacy block maps, no extents)', 300, { sizeMiB: 160, type: 'ext2' }],
    ['ext3 (journal, block maps)', 300, { sizeMiB: 160, type: 'ext3' }],
  ];
  test.each(variants)('walk equals the debugfs listing: %s', async (_name, bigDir, o) => {
    const tree = path.join(dir, `tree-${o?.type ?? 'ext4'}-${o?.blockSize ?? 4096}`);
    const image = `${tree}.img`;
    richTree(tree, { bigDir });
    mkfsFromDir(tree, image, o);
    richXattrs(image, dir);
    const ref = debugfsTree(image);
    const mine = await readerTree(image);
    comparable(ref, mine);
    expect(mine.length).toBeGreaterThan(bigDir);
    expect(mine).toEqual(ref);
    const su = mine.find((e) => e.path === '/usr/bin/su-like');
    expect(su).toMatchObject({ mode: 0o4755, xattrs: { 'security.capability': '0100000200200000000000000000000000000000' } });
    expect(mine.find((e) => e.path === '/dev/big')?.rdev).toBe('259:70000');
    expect(mine.filter((e) => e.ino === mine.find((x) => x.path === '/data/one')!.ino).map((e) => e.path)).toEqual(['/data/one', '/data/three', '/data/two']);
    const img = await Ext4Image.open(image);
    try {
      const big = await img.stat('/dev/null');
      expect(big?.xattrs.get('user.big')).toEqual(Buffer.alloc(900, 0x61));
      expect((await img.stat('/data/fast-link', { follow: true }))?.path).toBe('/data/one');
      expect((await img.readSmall('/etc/passwd'))?.toString()).toContain('alice:x:1000');
    } finally {
      await img.close();
    }
    await checkExt4Image(image, 'the test image');
    fs.rmSync(tree, { recursive: true, force: true });
    fs.rmSync(image, { force: true });
  });

  test("the reader's walk equals the debugfs listing on the test base image", async () => {
    const tree = path.join(dir, 'base-tree');
    fs.mkdirSync(tree);
    execFileSync('tar', ['-x', '-f', process.env.FIREBUILD_TEST_BASE_TAR!, '-C', tree, '--numeric-owner', '--xattrs', '--xattrs-include=*']);
    const image = path.join(dir, 'base.ext4');
    mkfsFromDir(tree, image, { sizeMiB: 512 });
    fs.rmSync(tree, { recursive: true, force: true });
    const ref = debugfsTree(image);
    const mine = await readerTree(image);
    comparable(ref, mine);
    expect(mine.length).toBeGreaterThan(1000);
    expect(mine).toEqual(ref);
  });
});
