import { describe, expect, test, beforeEach, afterEach } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DirectoryStorage } from '../../src/store/directory.js';
import { withLock } from '../../src/util/lock.js';
import { UserError } from '../../src/util/errors.js';
import { REPO, runCli, snapshot, tempDir } from '../helpers/cli.js';

const WRITER = path.join(REPO, 'test', 'helpers', 'store-writer.mjs');

function startWriter(args: string[]): { child: ChildProcess; line: Promise<string>; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [WRITER, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
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
    await expect(store.getImage('acme/bad:1')).rejects.toThrow(new RegExp(`corrupt image metadata ${bad.metadataPath.replace(/[.]/g, '\\.')}: not valid JSON`));
    fs.writeFileSync(bad.metadataPath, JSON.stringify({ schemaVersion: 1, tag: 'acme/bad:1' }));
    await expect(store.getImage('acme/bad:1')).rejects.toThrow(/corrupt image metadata .*type/);
  });

  test('a process killed with SIGKILL mid-write leaves no tag, the store still lists cleanly, and the tag can be written again', async () => {
    const w = startWriter([path.join(root, 'rootfs'), 'acme/crash:1', 'pause']);
    expect(await w.line).toBe('WRITING');
    expect(fs.readdirSync(path.join(root, 'rootfs', '.staging'))).toHaveLength(1); // the half-written image
    w.child.kill('SIGKILL');
    await w.exit;
    expect(await store.hasImage('acme/crash:1')).toBe(false);
    expect(fs.existsSync(path.join(root, 'rootfs', 'acme'))).toBe(false);
    const ls = await runCli(['image', 'ls', '--json', '--storage-provider-property-string', `rootfs-storage-root=${path.join(root, 'rootfs')}`, '--storage-provider-property-string', `kernel-storage-root=${root}`]);
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([]);
    // The next write sweeps the dead writer's staging directory.
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
    expect(snapshot(path.join(root, 'rootfs')).filter((p) => p.startsWith('acme/'))).toHaveLength(4);
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
