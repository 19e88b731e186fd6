import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { withCacheEntryDir } from '../../src/actions/common.js';

/**
 * A cache entry's directory has the same path in every job (@actions/cache hashes the paths into the
 * cache version), so two jobs of one user on one host share it. Each use empties it first: without a
 * lock, a second job emptied the files the first was still archiving or restoring.
 */
let tmp: string;
beforeAll(async () => {
  // A /tmp of the test's own (sticky, world-writable, as /tmp): other test files never see it.
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'cache-entry-dir-'));
  await fsp.chmod(tmp, 0o1777);
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

const until = async (cond: () => boolean): Promise<void> => {
  while (!cond()) await new Promise((r) => setTimeout(r, 10));
};

describe('withCacheEntryDir', () => {
  test('a second user of the same key waits: it never empties the files the first is still using', async () => {
    const events: string[] = [];
    let firstIn = false;
    const first = withCacheEntryDir('firebuild-kernel-1-x86_64-same', async (dir) => {
      await fsp.mkdir(dir);
      await fsp.writeFile(path.join(dir, 'vmlinux'), 'packaged');
      firstIn = true;
      // Long enough for the second to have started and, without the lock, emptied the directory.
      await new Promise((r) => setTimeout(r, 500));
      events.push(`first done, its file ${fs.existsSync(path.join(dir, 'vmlinux')) ? 'intact' : 'gone'}`);
    }, tmp);
    await until(() => firstIn);
    const second = withCacheEntryDir('firebuild-kernel-1-x86_64-same', async (dir) => {
      events.push(`second in, ${fs.existsSync(dir) ? 'a leftover' : 'an empty entry'}`);
    }, tmp);
    await Promise.all([first, second]);
    expect(events).toEqual(['first done, its file intact', 'second in, an empty entry']);
    // Nothing is left: no entry, no lock.
    expect(fs.readdirSync(path.join(tmp, `firebuild-${process.geteuid?.() ?? 0}`, 'cache'))).toEqual([]);
  });

  test('other keys do not wait for each other', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let firstIn = false;
    const first = withCacheEntryDir('key-a', async () => {
      firstIn = true;
      await held;
    }, tmp);
    await until(() => firstIn);
    await expect(withCacheEntryDir('key-b', async (dir) => path.basename(dir), tmp)).resolves.toBe('key-b');
    release();
    await first;
  });
});
