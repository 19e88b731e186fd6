import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkExt4Image, Ext4Image } from '../../src/rootfs/ext4-read.js';
import { UserError } from '../../src/util/errors.js';
import { duplicateNameImage, hostileNameImage, mkfsFromDir, richTree, richXattrs } from '../helpers/ext4-craft.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ext4-read-test-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('Ext4Image', () => {
  test('a name with ../ and two entries of one name are refused, by the walk and by the check', async () => {
    const hostile = path.join(dir, 'hostile.img');
    hostileNameImage(hostile, dir);
    const dup = path.join(dir, 'dup.img');
    duplicateNameImage(dup, dir, '/tmp/x-target');
    for (const [image, why] of [[hostile, /\.\.\/\.\.\/tmp\/x".*name with '\/'/], [dup, /"\/d\/x": two entries of this name/]] as const) {
      const img = await Ext4Image.open(image, 'the crafted image');
      const walked: string[] = [];
      await expect((async () => {
        for await (const e of img.walk()) walked.push(e.path);
      })()).rejects.toThrow(why);
      await img.close();
      await expect(checkExt4Image(image, 'the crafted image')).rejects.toThrow(UserError);
      await expect(checkExt4Image(image, 'the crafted image')).rejects.toThrow(/^the ext4 image the crafted image.*refusing/);
    }
  });

  test('200 random byte flips never crash or hang the reader: each image reads or is a UserError', async () => {
    const tree = path.join(dir, 'small');
    richTree(tree, { bigDir: 300 });
    fs.rmSync(path.join(tree, 'data/sparse'));
    const image = path.join(dir, 'small.img');
    mkfsFromDir(tree, image, { sizeMiB: 4, features: '^metadata_csum' });
    richXattrs(image, dir);
    const clean = fs.readFileSync(image);
    // Where metadata lives: every 4 KiB block that is not all zeros (flips into unused zeros prove little).
    const used: number[] = [];
    for (let b = 0; b < clean.length / 4096; b++) if (clean.subarray(b * 4096, (b + 1) * 4096).some((x) => x !== 0)) used.push(b);
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const outcomes = { read: 0, refused: 0 };
    const fuzzed = path.join(dir, 'fuzzed.img');
    for (let i = 0; i < 200; i++) {
      const buf = Buffer.from(clean);
      for (let k = 0; k < 1 + rand(4); k++) {
        const at = used[rand(used.length)]! * 4096 + rand(4096);
        buf[at] = buf[at]! ^ (1 << rand(8));
      }
      fs.writeFileSync(fuzzed, buf);
      const started = Date.now();
      try {
        const img = await Ext4Image.open(fuzzed, 'fuzzed');
        try {
          for await (const e of img.walk()) if (e.type === 'file') for await (const c of img.readFile(e.ino)) void c;
        } finally {
          await img.close();
        }
        outcomes.read++;
      } catch (err) {
        if (!(err instanceof UserError)) throw new Error(`flip ${i}: ${(err as Error).stack}`, { cause: err });
        expect((err as Error).message).not.toContain('\n');
        outcomes.refused++;
      }
      expect(Date.now() - started).toBeLessThan(10000);
    }
    expect(outcomes.read + outcomes.refused).toBe(200);
    expect(outcomes.refused).toBeGreaterThan(0);
  });
});
