import { describe, expect, test, beforeEach, afterEach } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DirectoryStorage } from '../../src/store/directory.js';
import lockfile from 'proper-lockfile';
import { lockIsFresh, withLock } from '../../src/util/lock.js';
import { UserError } from '../../src/util/errors.js';
import { REPO, runCli, snapshot, tempDir } from '../helpers/cli.js';

const WRITER = path.join(REPO, 'test', 'helpers', 'store-writer.mjs');

function startWriter(args: string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; line: Promise<string>; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [WRITER, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  let buf = '';
  const line = new Promise<string>((resolve) => {
    child.stdout?.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) resolve(buf.split('\n')[0] ?? '');
    });
    child.on('close', () => resolve(buf.split('\n')[0] ?? ''));
  });
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, line, exit };
}

async function writeTest(store: DirectoryStorage, tag: string, content = 'x', overwrite = false) {
  return store.writeImage(tag, async (s) => {
    await fsp.writeFile(s.rootfsPath, content);
    return { type: 'rootfs', source: { kind: 'test', ref: content }, parents: ['_/debian:12'], config: { env: ['A=1'] } };
  }, { overwrite });
}

let root: string;
let store: DirectoryStorage;
beforeEach(async () => {
  root = await tempDir();
  store = new DirectoryStorage({ rootfsRoot: path.join(root, 'rootfs'), kernelRoot: path.join(root, 'kernels'), createRoots: true, lockStaleMs: 2000 });
});
afterEach(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

describe('directory store', () => {
  test('writes <root>/<org>/<name>/<version>/{rootfs.ext4,metadata.json} with digests', async () => {
    const img = await writeTest(store, 'acme/web:1.2-rc1', 'hello');
    expect(img.dir).toBe(path.join(root, 'rootfs', 'acme', 'web', '1.2-rc1'));
    expect(fs.readFileSync(img.rootfsPath, 'utf8')).toBe('hello');
    const meta = JSON.parse(fs.readFileSync(img.metadataPath, 'utf8'));
    expect(meta).toMatchObject({ schemaVersion: 1, tag: 'acme/web:1.2-rc1', type: 'rootfs', parents: ['_/debian:12'] });
    expect(meta.rootfs.sha256).toBe(createHash('sha256').update('hello').digest('hex'));
    expect(meta.config).toMatchObject({ env: ['A=1'], entrypoint: null, cmd: null, workingDir: '' });
    expect((await store.getImage('acme/web:1.2-rc1')).metadata.rootfs.apparentSize).toBe(5);
    const list = await store.listImages();
    expect(list.map((e) => e.tag)).toEqual(['acme/web:1.2-rc1']);
    // Nothing is left in the staging area.
    expect(fs.readdirSync(path.join(root, 'rootfs', '.staging'))).toEqual([]);
  });

  test('an existing tag is refused unless overwrite, and overwrite replaces it whole', async () => {
    await writeTest(store, 'acme/web:1', 'one');
    await expect(writeTest(store, 'acme/web:1', 'two')).rejects.toThrow(/already exists.*--overwrite/);
    expect(fs.readFileSync((await store.getImage('acme/web:1')).rootfsPath, 'utf8')).toBe('one');
    await writeTest(store, 'acme/web:1', 'two', true);
    expect(fs.readFileSync((await store.getImage('acme/web:1')).rootfsPath, 'utf8')).toBe('two');
  });

  test('a failing writer leaves no tag and no staging directory', async () => {
    await expect(store.writeImage('acme/web:1', async () => { throw new Error('build failed'); })).rejects.toThrow('build failed');
    expect(await store.hasImage('acme/web:1')).toBe(false);
    expect(fs.readdirSync(path.join(root, 'rootfs', '.staging'))).toEqual([]);
    expect(fs.existsSync(path.join(root, 'rootfs', 'acme'))).toBe(false);
  });

  test('rm removes the tag and its empty parents', async () => {
    await writeTest(store, 'acme/web:1');
    await writeTest(store, 'acme/api:1');
    await store.removeImage('acme/web:1');
    expect(fs.existsSync(path.join(root, 'rootfs', 'acme', 'web'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'rootfs', 'acme', 'api', '1'))).toBe(true);
    await expect(store.removeImage('acme/web:1')).rejects.toThrow(UserError);
  });

  test('a corrupt metadata.json: ls lists the rest and marks it; get names the file', async () => {
    await writeTest(store, 'acme/good:1');
    const bad = await writeTest(store, 'acme/bad:1');
    fs.writeFileSync(bad.metadataPath, '{"schemaVersion": 1, "tag": ');
    const list = await store.listImages();
    expect(list.map((e) => [e.tag, Boolean(e.error)])).toEqual([['acme/bad:1', true], ['acme/good:1', false]]);
    await expect(store.getImage('acme/bad:1')).rejects.toThrow(new RegExp(`stored image acme/bad:1 is corrupt: image metadata ${bad.metadataPath.replace(/[.]/g, '\\.')}: not valid JSON`));
    fs.writeFileSync(bad.metadataPath, JSON.stringify({ schemaVersion: 1, tag: 'acme/bad:1' }));
    await expect(store.getImage('acme/bad:1')).rejects.toThrow(/stored image acme\/bad:1 is corrupt: image metadata .*type.*: remove it with 'firebuild image rm acme\/bad:1'/);
  });

  test('a process killed with SIGKILL mid-write leaves no tag, the store still lists cleanly, and the tag can be written again', async () => {
    const w = startWriter([path.join(root, 'rootfs'), 'acme/crash:1', 'pause']);
    expect(await w.line).toBe('WRITING');
    w.child.kill('SIGKILL');
    await w.exit;
    // The half-written image and its writer's lock, judged stale only once the lock is not refreshed (2 s here).
    expect(fs.readdirSync(path.join(root, 'rootfs', '.staging')).map((n) => n.replace(/^w-\w+/, 'w-X')).sort()).toEqual(['w-X', 'w-X.lock']);
    await new Promise((r) => setTimeout(r, 2500));
    expect(await store.hasImage('acme/crash:1')).toBe(false);
    expect(fs.existsSync(path.join(root, 'rootfs', 'acme'))).toBe(false);
    const ls = await runCli(['image', 'ls', '--json', '--storage-provider-property-string', `rootfs-storage-root=${path.join(root, 'rootfs')}`, '--storage-provider-property-string', `kernel-storage-root=${root}`]);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([]);
    // The next write sweeps the dead writer's staging directory once its lock has gone stale. proper-lockfile
    // may have set the lock's mtime up to a second ahead (it rounds up where it probed a coarse mtime), so
    // wait for the lock itself to read as stale rather than for a fixed time (the deadline is the test's).
    const staging = path.join(root, 'rootfs', '.staging', fs.readdirSync(path.join(root, 'rootfs', '.staging')).find((n) => !n.endsWith('.lock'))!);
    while (await lockIsFresh(staging, 2000)) await new Promise((r) => setTimeout(r, 100));
    await writeTest(store, 'acme/crash:1', 'again');
    expect(fs.readdirSync(path.join(root, 'rootfs', '.staging'))).toEqual([]);
    expect(fs.readFileSync((await store.getImage('acme/crash:1')).rootfsPath, 'utf8')).toBe('again');
  });

  test('concurrent writers of the same tag serialize: with overwrite both commit whole images', async () => {
    const a = startWriter([path.join(root, 'rootfs'), 'acme/race:1', 'write', 'a', '--overwrite']);
    const b = startWriter([path.join(root, 'rootfs'), 'acme/race:1', 'write', 'b', '--overwrite']);
    expect(await a.exit).toBe(0);
    expect(await b.exit).toBe(0);
    const img = await store.getImage('acme/race:1');
    const data = fs.readFileSync(img.rootfsPath);
    expect(createHash('sha256').update(data).digest('hex')).toBe(img.metadata.rootfs.sha256);
    expect(new Set(data.toString('latin1')).size).toBe(1); // all a's or all b's, never mixed
    // One content directory, the .current link and the two stable names: nothing left of the other writer.
    expect(snapshot(path.join(root, 'rootfs')).filter((p) => p.startsWith('acme/'))).toHaveLength(8);
  });

  test('concurrent writers of the same tag without overwrite: exactly one wins', async () => {
    const a = startWriter([path.join(root, 'rootfs'), 'acme/race:2', 'write', 'a']);
    const b = startWriter([path.join(root, 'rootfs'), 'acme/race:2', 'write', 'b']);
    const [la, lb] = await Promise.all([a.line, b.line]);
    const results = [la, lb].map((l) => l.split(' ')[0]).sort();
    expect(results).toEqual(['DONE', 'ERROR']);
    expect([la, lb].find((l) => l.startsWith('ERROR'))).toMatch(/already exists/);
  });

  test('a lock held by a killed process goes stale and is taken over', async () => {
    const w = startWriter([path.join(root, 'rootfs'), 'x/y:1', 'lock']);
    expect(await w.line).toBe('LOCKED');
    w.child.kill('SIGKILL');
    await w.exit;
    const t0 = Date.now();
    const got = await withLock(path.join(root, 'rootfs', '.locks', 'test'), async () => 'mine', { staleMs: 2000, waitMs: 30000 });
    expect(got).toBe('mine');
    expect(Date.now() - t0).toBeLessThan(30000);
  });
});

/** Make a tag look as an older firebuild wrote it: plain rootfs.ext4 and metadata.json in the version directory. */
function toLegacyLayout(dir: string): void {
  for (const f of ['rootfs.ext4', 'metadata.json']) {
    const data = fs.readFileSync(path.join(dir, f));
    fs.rmSync(path.join(dir, f));
    fs.writeFileSync(path.join(dir, f), data);
  }
  for (const n of fs.readdirSync(dir)) if (n.startsWith('.')) fs.rmSync(path.join(dir, n), { recursive: true });
}

/** The tag resolves to one whole image: metadata and rootfs agree, through the store and through the plain names older readers use. */
async function wholeImage(s: DirectoryStorage, tag: string, dir: string): Promise<string> {
  const img = await s.getImage(tag);
  const data = fs.readFileSync(img.rootfsPath);
  expect(createHash('sha256').update(data).digest('hex')).toBe(img.metadata.rootfs.sha256);
  const fill = img.metadata.source.ref;
  expect(new Set(data.toString('latin1'))).toEqual(new Set([fill]));
  expect(JSON.parse(fs.readFileSync(path.join(dir, 'metadata.json'), 'utf8')).source.ref).toBe(fill);
  expect(fs.readFileSync(path.join(dir, 'rootfs.ext4')).equals(data)).toBe(true);
  return fill;
}

describe('--overwrite is atomic (issue 12, item 9)', () => {
  // Every point inside an overwrite where the old code or a naive switch could lose the tag; `switched` is after the one rename.
  const cases: [string, string, string][] = [
    ['new layout', 'content-in', 'a'],
    ['new layout', 'switched', 'b'],
    ['legacy layout', 'legacy-linked', 'a'],
    ['legacy layout', 'legacy-current', 'a'],
    ['legacy layout', 'legacy-file', 'a'],
    ['legacy layout', 'content-in', 'a'],
    ['legacy layout', 'switched', 'b'],
  ];
  test.each(cases)('%s: a writer killed (SIGKILL) at %s leaves the tag whole (%s), and the next overwrite cleans up', async (layout, point, expected) => {
    const rootfs = path.join(root, 'rootfs');
    const a = startWriter([rootfs, 'acme/swap:1', 'write', 'a']);
    expect(await a.exit).toBe(0);
    const dir = path.join(rootfs, 'acme', 'swap', '1');
    if (layout === 'legacy layout') toLegacyLayout(dir);
    expect(await wholeImage(store, 'acme/swap:1', dir)).toBe('a');
    const b = startWriter([rootfs, 'acme/swap:1', 'write', 'b', '--overwrite'], { FIREBUILD_TEST_STORE_HOOK: point });
    expect(await b.line).toBe(`AT ${point}`);
    b.child.kill('SIGKILL');
    await b.exit;
    expect(await wholeImage(store, 'acme/swap:1', dir)).toBe(expected);
    expect((await store.listImages()).map((e) => [e.tag, e.error])).toEqual([['acme/swap:1', undefined]]);
    // The killed writer's tag lock goes stale (2 s); the next overwrite takes it and removes what was left.
    await writeTest(store, 'acme/swap:1', 'c', true);
    expect(await wholeImage(store, 'acme/swap:1', dir)).toBe('c');
    expect(fs.readdirSync(dir).sort()).toEqual(['.current', fs.readlinkSync(path.join(dir, '.current')), 'metadata.json', 'rootfs.ext4'].sort());
  });

  test('a kernel overwrite switches the same way: the id resolves to the new kernel and initrd, one content directory left', async () => {
    const k1 = path.join(root, 'k1');
    fs.writeFileSync(k1, Buffer.alloc(8192, 1));
    await store.importKernel('k', k1);
    const before = await store.getKernel('k');
    expect(fs.readFileSync(before.vmlinuxPath).equals(fs.readFileSync(k1))).toBe(true);
    const k2 = path.join(root, 'k2');
    fs.writeFileSync(k2, Buffer.alloc(8192, 2));
    await store.importKernel('k', k2, { overwrite: true, initrd: k1 });
    const after = await store.getKernel('k');
    expect(fs.readFileSync(after.vmlinuxPath).equals(fs.readFileSync(k2))).toBe(true);
    expect(after.metadata.vmlinux.sha256).toBe(createHash('sha256').update(fs.readFileSync(k2)).digest('hex'));
    expect(fs.readFileSync(after.initrdPath!).equals(fs.readFileSync(k1))).toBe(true);
    expect(fs.readdirSync(after.dir).filter((n) => n.startsWith('.c-'))).toHaveLength(1);
  });
});

describe('staging liveness is the writer\'s lock, not its PID (issue 12, item 9)', () => {
  test('a staging directory named for a dead PID but with a fresh lock (a writer in another PID namespace) is not swept; once its lock is stale it is', async () => {
    const stagingRoot = path.join(root, 'rootfs', '.staging');
    fs.mkdirSync(stagingRoot, { recursive: true, mode: 0o700 });
    // The old code's name: <pid>-<random>, a PID that does not exist here.
    const other = path.join(stagingRoot, '4194000-0123456789ab');
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, 'rootfs.ext4'), 'half written');
    const old = new Date(Date.now() - 3600_000);
    fs.utimesSync(other, old, old);
    const release = await lockfile.lock(other, { realpath: false, stale: 2000, update: 1000 });
    try {
      await writeTest(store, 'acme/live:1', 'x'); // sweeps the staging area first
      expect(fs.readFileSync(path.join(other, 'rootfs.ext4'), 'utf8')).toBe('half written');
    } finally {
      await release();
    }
    // The writer is gone and its lock not refreshed: the next write sweeps the directory and the lock.
    fs.mkdirSync(`${other}.lock`);
    fs.utimesSync(`${other}.lock`, old, old);
    await writeTest(store, 'acme/live:2', 'y');
    expect(fs.existsSync(other)).toBe(false);
    expect(fs.readdirSync(stagingRoot)).toEqual([]);
  });

  test('a live writer in another process keeps its staging directory through other writers\' sweeps', async () => {
    const w = startWriter([path.join(root, 'rootfs'), 'acme/slow:1', 'pause']);
    expect(await w.line).toBe('WRITING');
    try {
      const staged = fs.readdirSync(path.join(root, 'rootfs', '.staging')).filter((n) => !n.endsWith('.lock'));
      expect(staged).toHaveLength(1);
      const dir = path.join(root, 'rootfs', '.staging', staged[0]!);
      const old = new Date(Date.now() - 3600_000);
      fs.utimesSync(dir, old, old); // only the lock says it is alive
      await new Promise((r) => setTimeout(r, 3000)); // longer than the stale time: the writer keeps refreshing
      await writeTest(store, 'acme/other:1', 'z');
      expect(fs.statSync(path.join(dir, 'rootfs.ext4')).size).toBe(4 << 20);
    } finally {
      w.child.kill('SIGKILL');
      await w.exit;
    }
  });
});
