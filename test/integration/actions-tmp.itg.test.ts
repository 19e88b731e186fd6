/**
 * Issue 12, item 8: the actions keep no files under predictable shared names. A symlink planted where the
 * old code kept cache entries (`<tmpdir>/firebuild-actions-cache`) or where the new code keeps its private
 * directory (`<tmpdir>/firebuild-<uid>`) is never followed: the victim directory it points at is untouched.
 * The action runs as the runner runs it (dist bundle, STATE_* for the post step, the local cache stand-in),
 * with TMPDIR pointing at a sticky world-writable directory of the test's own (a /tmp of its own).
 */
import { describe, expect, test, beforeAll, afterAll } from '@jest/globals';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DirectoryStorage } from '../../src/store/directory.js';
import { snapshot, tempDir } from '../helpers/cli.js';
import { annotations, runPost } from '../helpers/runner.js';
import { startResultsService, type ResultsService } from '../helpers/results-service.js';

const UID = process.geteuid?.() ?? 0;
let work: string;
let results: ResultsService;

beforeAll(async () => {
  work = await tempDir('firebuild-actions-tmp-');
  results = await startResultsService();
});
afterAll(async () => {
  results.close();
  await fsp.rm(work, { recursive: true, force: true });
});

/** A store holding kernel `k1` (any file will do for packaging), and the setup post step's state to save it. */
async function storeWithKernel(name: string, key: string): Promise<Record<string, string>> {
  const home = path.join(work, name);
  const props = { 'rootfs-storage-root': path.join(home, 'rootfs'), 'kernel-storage-root': path.join(home, 'kernels') };
  const store = new DirectoryStorage({ rootfsRoot: props['rootfs-storage-root'], kernelRoot: props['kernel-storage-root'], createRoots: true });
  const vmlinux = path.join(work, `${name}-vmlinux`);
  await fsp.writeFile(vmlinux, Buffer.alloc(4096, 7));
  await store.importKernel('k1', vmlinux);
  return { 'cache-saves': JSON.stringify([{ kind: 'kernel', name: 'k1', key, home: props }]) };
}

/** A /tmp of the test's own (mode 1777, as /tmp), and a victim directory holding a file. */
async function tmpAndVictim(name: string, key: string): Promise<{ tmp: string; victim: string }> {
  const tmp = path.join(work, `${name}-tmp`);
  await fsp.mkdir(tmp);
  await fsp.chmod(tmp, 0o1777);
  const victim = path.join(work, `${name}-victim`);
  await fsp.mkdir(path.join(victim, key), { recursive: true });
  await fsp.writeFile(path.join(victim, key, 'precious'), 'keep me');
  await fsp.writeFile(path.join(victim, 'precious'), 'keep me too');
  return { tmp, victim };
}

describe('the actions keep no files under predictable shared names', () => {
  test('a symlink planted at the old cache path (<tmpdir>/firebuild-actions-cache) is not followed by the setup post step: the victim is untouched and the entry is saved', async () => {
    const key = 'firebuild-kernel-1-x86_64-plantold';
    const state = await storeWithKernel('old', key);
    const { tmp, victim } = await tmpAndVictim('old', key);
    await fsp.symlink(victim, path.join(tmp, 'firebuild-actions-cache'));
    const before = snapshot(victim);
    const post = await runPost('setup/post/index.js', state, { ...results.env, TMPDIR: tmp });
    expect(post.code).toBe(0);
    expect(snapshot(victim)).toEqual(before);
    expect(fs.readFileSync(path.join(victim, key, 'precious'), 'utf8')).toBe('keep me');
    expect(annotations(post.stdout, 'warning')).toEqual([]);
    // Saved through the private directory, which is the user's own and closed to everyone else.
    expect([...results.caches.values()].some((e) => e.key === key && e.finalized)).toBe(true);
    const priv = fs.lstatSync(path.join(tmp, `firebuild-${UID}`));
    expect({ dir: priv.isDirectory(), uid: priv.uid, mode: priv.mode & 0o777 }).toEqual({ dir: true, uid: UID, mode: 0o700 });
    // The packaged files existed only while the post step saved them.
    expect(fs.readdirSync(path.join(tmp, `firebuild-${UID}`, 'cache'))).toEqual([]);
  });

  test.each([
    ['a symlink to the victim', async (p: string, victim: string) => fsp.symlink(victim, p)],
    ['a directory others can write', async (p: string) => { await fsp.mkdir(p); await fsp.chmod(p, 0o777); }],
    ['a directory of another user', async (p: string) => { await fsp.mkdir(p, { mode: 0o700 }); await fsp.chown(p, 65534, 65534); }],
  ])('the private directory <tmpdir>/firebuild-<uid> already there as %s: refused with a warning naming it, nothing written through it', async (what, plant) => {
    const name = `new${what.length}`;
    const key = `firebuild-kernel-1-x86_64-${name}`;
    const state = await storeWithKernel(name, key);
    const { tmp, victim } = await tmpAndVictim(name, key);
    const priv = path.join(tmp, `firebuild-${UID}`);
    await plant(priv, victim);
    const before = snapshot(victim);
    const privBefore = snapshot(priv);
    const post = await runPost('setup/post/index.js', state, { ...results.env, TMPDIR: tmp });
    expect(post.code).toBe(0); // the post step never fails the job
    const warnings = annotations(post.stdout, 'warning');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`could not save ${key}: the actions temp directory ${priv}`);
    expect(snapshot(victim)).toEqual(before);
    expect(snapshot(priv)).toEqual(privBefore);
    expect([...results.caches.values()].some((e) => e.key === key)).toBe(false);
  });
});
