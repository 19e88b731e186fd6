import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../helpers/cli.js';
import { lockFile, pruneCacheVolumes, volumeFiles, cacheVolumesDir } from '../../src/engine/vm/cache-volumes.js';

/**
 * The locks of RUN --mount=type=cache volumes (no VM needed): writers exclude each other and readers,
 * readers share, a waiter gives up after its timeout in one line, a build SIGKILLed while it holds a
 * lock leaves the cache unlocked (the kernel drops the flock with its process), and `cache prune` never
 * removes a lock file a waiting build is queued on.
 */
const HOLDER = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'cache-lock-holder.mjs');
let work: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  work = await tempDir('firebuild-cachelocks-');
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(work, { recursive: true, force: true });
});

/** A process (the built lib/) holding the lock until killed; resolves once it holds it. */
async function holder(file: string, kind: 'shared' | 'exclusive'): Promise<ChildProcess> {
  const c = spawn(process.execPath, [HOLDER, file, kind], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(c);
  await new Promise<void>((resolve, reject) => {
    c.stdout!.on('data', (d: Buffer) => d.toString().includes('HELD') && resolve());
    c.on('exit', (code) => reject(new Error(`the lock holder exited with ${code}`)));
  });
  return c;
}

const tryLock = (file: string, shared: boolean): ReturnType<typeof lockFile> => lockFile(file, { shared, wait: false, timeoutMs: 0, what: 'cache test' });

describe('cache volume locks', () => {
  test('writers exclude each other and readers; readers share; a waiter times out in one line', async () => {
    const file = path.join(work, 'a.lock');
    const w = await tryLock(file, false);
    expect(w).toBeDefined();
    expect(await tryLock(file, false)).toBeUndefined();
    expect(await tryLock(file, true)).toBeUndefined();
    await expect(lockFile(file, { shared: false, wait: true, timeoutMs: 1000, what: 'cache c1' })).rejects.toThrow('cache c1 stayed locked by another build for 1 s: wait for it, or use sharing=private');
    await w!();
    const r1 = await tryLock(file, true);
    const r2 = await tryLock(file, true);
    expect(r1).toBeDefined();
    expect(r2).toBeDefined();
    expect(await tryLock(file, false)).toBeUndefined();
    await r1!();
    await r2!();
    const again = await tryLock(file, false);
    expect(again).toBeDefined();
    await again!();
  }, 60_000);

  test('a waiting writer gets the lock when the holder releases it', async () => {
    const file = path.join(work, 'b.lock');
    const first = (await tryLock(file, false))!;
    const waiting = lockFile(file, { shared: false, wait: true, timeoutMs: 20_000, what: 'cache b' });
    await new Promise((r) => setTimeout(r, 500));
    await first();
    const second = await waiting;
    expect(second).toBeDefined();
    await second!();
  }, 60_000);

  test('a build SIGKILLed while it holds a cache lock leaves the cache unlocked', async () => {
    const file = path.join(work, 'c.lock');
    const c = await holder(file, 'exclusive');
    expect(await tryLock(file, true)).toBeUndefined();
    const exited = new Promise((r) => c.on('exit', r));
    c.kill('SIGKILL');
    await exited;
    let got: Awaited<ReturnType<typeof lockFile>>;
    const until = Date.now() + 10_000;
    while (!(got = await tryLock(file, false)) && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    expect(got).toBeDefined();
    await got!();
  }, 60_000);

  test('prune skips a volume a build holds and keeps every lock file, so a queued build waits on the same lock', async () => {
    const cacheDir = path.join(work, 'cache');
    const dir = cacheVolumesDir(cacheDir);
    fs.mkdirSync(dir, { recursive: true });
    for (const id of ['held', 'free']) {
      const f = volumeFiles(dir, id);
      fs.writeFileSync(f.img, 'x');
      fs.writeFileSync(f.meta, JSON.stringify({ id, created: '2026-01-01T00:00:00Z', lastUsed: '2026-01-01T00:00:00Z' }));
    }
    const held = volumeFiles(dir, 'held');
    const c = await holder(held.lock, 'exclusive');
    // A second build queues on the held volume's lock.
    const queued = lockFile(held.lock, { shared: false, wait: true, timeoutMs: 20_000, what: 'cache held' });
    expect(await pruneCacheVolumes(cacheDir)).toEqual({ removed: ['free'], busy: ['held'] });
    expect(fs.existsSync(volumeFiles(dir, 'free').img)).toBe(false);
    expect(fs.existsSync(volumeFiles(dir, 'free').lock)).toBe(true);
    expect(fs.existsSync(held.img)).toBe(true);
    // The holder ends; the queued build gets the lock, and a third build now finds it taken (one lock, not two).
    c.kill('SIGKILL');
    const q = await queued;
    expect(q).toBeDefined();
    expect(await tryLock(held.lock, false)).toBeUndefined();
    await q!();
  }, 60_000);
});
