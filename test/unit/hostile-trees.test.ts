import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Ext4Writer } from '../../src/rootfs/ext4-writer.js';
import type { NodeMeta } from '../../src/rootfs/ext4-writer.js';
import { exec } from '../../src/util/exec.js';

/**
 * Trees far deeper than the JS stack: an archive nests 30,000+ directories with a few dozen entries, each
 * name under tar's limits, by paths through symlinks it made (`s1 -> a/a/.../a`, `s2 -> s1/a/.../a`, ...).
 * Replacing such a tree (a file over its top directory) or emptying it (an opaque directory) must work:
 * no stack overflow, and the image is e2fsck-clean.
 */
const T = { sec: 1700000000, nsec: 0 };
const meta = (mode: number): NodeMeta => ({ mode, uid: 0, gid: 0, mtime: T });
async function* one(b: Buffer): AsyncGenerator<Buffer> { yield b; }

let dir: string;
beforeAll(async () => { dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'hostile-trees-')); });
afterAll(async () => { await fsp.rm(dir, { recursive: true, force: true }); });

const SEG = Array(2000).fill('a').join('/');
const HOPS = 15; // 30,000 levels

/** /a/a/.../a, HOPS * 2000 deep, made through symlinks s1..sHOPS; returns the deepest path. */
async function deepTree(w: Ext4Writer): Promise<string> {
  await w.addFile(`${SEG}/f`, meta(0o644), 1, one(Buffer.from('x')));
  w.addSymlink('s1', SEG, meta(0o777));
  for (let k = 2; k <= HOPS; k++) {
    await w.addFile(`s${k - 1}/${SEG}/f`, meta(0o644), 1, one(Buffer.from('x')));
    w.addSymlink(`s${k}`, `s${k - 1}/${SEG}`, meta(0o777));
  }
  return `s${HOPS}/f`;
}

async function fsck(img: string): Promise<string> {
  const r = await exec('e2fsck', ['-fn', img], { allowFailure: true });
  return `exit ${r.code}`;
}

describe('a tree deeper than the JS stack', () => {
  test('is written, then replaced by a file: no stack overflow, e2fsck-clean', async () => {
    const img = path.join(dir, 'replace.ext4');
    const w = await Ext4Writer.create(img);
    await deepTree(w);
    await w.addFile('a', meta(0o644), 3, one(Buffer.from('top')));
    const r = await w.finish();
    expect(r.inodes).toBeLessThan(100); // the whole deep tree went
    expect(await fsck(img)).toBe('exit 0');
  });

  test('in a layer, emptied by an opaque directory: no stack overflow, e2fsck-clean', async () => {
    const img = path.join(dir, 'opaque.ext4');
    const w = await Ext4Writer.create(img);
    w.beginLayer();
    await deepTree(w);
    w.clearDir('a'); // the same layer's entries stay: walked all the way down
    w.beginLayer();
    w.clearDir('a'); // a lower layer's: they go
    const r = await w.finish();
    expect(r.inodes).toBeLessThan(100);
    expect(await fsck(img)).toBe('exit 0');
  });
});
