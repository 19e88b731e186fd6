import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkExt4Image, Ext4Image, HOLE_ALLOWANCE } from '../../src/rootfs/ext4-read.js';
import { imageTar } from '../../src/rootfs/tar-write.js';
import { UserError } from '../../src/util/errors.js';
import { mkfsFromDir } from '../helpers/ext4-craft.js';

/**
 * A sparse file reads as zeros: one of 1 TiB in a 16 MiB image (a stage's `truncate -s 1T`, or an
 * artifact: e2fsck finds it clean) would stream a terabyte into COPY --from's scratch files or into
 * `docker import`. What is read out of one image, each inode once, is bounded by its size plus
 * HOLE_ALLOWANCE: a one-line UserError before the first byte.
 */
let dir: string;
beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ext4-read-sparse-')); });
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function sparseImage(name: string, files: Record<string, number>, links: Record<string, string> = {}): string {
  const tree = path.join(dir, `${name}-tree`);
  fs.mkdirSync(tree);
  for (const [f, size] of Object.entries(files)) execFileSync('truncate', ['-s', String(size), path.join(tree, f)]);
  for (const [l, t] of Object.entries(links)) fs.linkSync(path.join(tree, t), path.join(tree, l));
  const image = path.join(dir, `${name}.img`);
  mkfsFromDir(tree, image, { sizeMiB: 16 });
  return image;
}

async function firstChunk(img: Ext4Image, ino: number, as: string): Promise<number> {
  for await (const c of img.readFile(ino, as)) return c.length;
  return 0;
}

describe('content read out of an image is bounded', () => {
  test('a 1 TiB sparse file passes e2fsck but is refused before a byte is streamed into a tar', async () => {
    const image = sparseImage('tib', { big: 2 ** 40, small: 10 });
    await checkExt4Image(image, 'the sparse image'); // e2fsck -fn finds nothing wrong with it
    const img = await Ext4Image.open(image, 'the sparse image');
    let streamed = 0;
    const err = await (async () => {
      for await (const c of imageTar(img)) {
        streamed += c.length;
        if (streamed > 16 * 1024 ** 2 + HOLE_ALLOWANCE) throw new Error(`streamed ${streamed} bytes out of a 16 MiB image`);
      }
    })().then(() => undefined, (e: unknown) => e);
    await img.close();
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/^the ext4 image the sparse image, at "\/big": its files hold more than \d+ bytes, its own size plus 4 GiB of holes \(this one: 1099511627776 bytes\): refusing/);
    expect(streamed).toBeLessThan(1024 ** 2);
  });

  test('many sparse files under the bound each are refused once their sum passes it; a hard link counts once', async () => {
    const part = Math.floor(HOLE_ALLOWANCE / 2);
    const image = sparseImage('sum', { a: part, b: part, c: part }, { a2: 'a' });
    const img = await Ext4Image.open(image, 'the sparse image');
    try {
      const ino = async (p: string): Promise<number> => (await img.stat(p))!.ino;
      expect(await firstChunk(img, await ino('/a'), '/a')).toBe(1024 ** 2);
      expect(await firstChunk(img, await ino('/a2'), '/a2')).toBe(1024 ** 2); // the same inode: not counted again
      expect(await firstChunk(img, await ino('/b'), '/b')).toBe(1024 ** 2);
      await expect(firstChunk(img, await ino('/c'), '/c')).rejects.toThrow(/^the ext4 image the sparse image, at "\/c": its files hold more than/);
    } finally {
      await img.close();
    }
  });
});
