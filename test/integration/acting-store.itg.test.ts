import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lines, runCli, snapshot, tempDir } from '../helpers/cli.js';
import { importTestKernel, killAll, killVmmProcessesUnder, vmmProcessesUnder } from '../helpers/vm.js';

/**
 * Root running firebuild for the runner user (firebuild-priv: FIREBUILD_ACTING_UID, a root profile whose
 * storage roots are the user's store). The user owns the store, so it can swap a stored file for a symlink
 * to a root-only file and read root's copy back from the VM: every such swap is one line, exit 2, and no
 * VM state; the same image untampered boots (QEMU, TCG: one boot).
 */
const USER = 64000;
let work: string;
let store: string;
let rootfs: string;
let secret: string;
let env: NodeJS.ProcessEnv;
const runCache = (): string => path.join(work, 'root-run');
const errorLines = (s: string): string[] => lines(s).filter((l) => l.startsWith('error:'));
const run = (): Promise<{ code: number; stdout: string; stderr: string }> =>
  runCli(['run', '--profile-conf-dir', path.join(work, 'priv'), '--profile', 'privileged', '--from', 'tests/acting:1', '--backend', 'qemu', '--accel', 'tcg', '--network', 'none'], { env });

/** The stored file `name` of an entry (its current content directory). */
function stored(entry: string, name: string): string {
  return path.join(entry, fs.readlinkSync(path.join(entry, '.current')), name);
}

beforeAll(async () => {
  work = await tempDir();
  // The user's store, written as root, then handed to the user (as the runner user's own builds leave it).
  store = path.join(work, 'home', 'runner', '.local', 'share', 'firebuild');
  const build = { FIREBUILD_HOME: store };
  expect(await importTestKernel(build)).toBe(0);
  const dir = path.join(work, 'image');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'Dockerfile'), 'FROM debian:bookworm-slim\nCMD ["sh", "-c", "echo acting-store-ok"]\n');
  const b = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'tests/acting:1', '--free-space', '16M'], { env: build });
  expect({ code: b.code, stderr: b.code ? b.stderr : '' }).toEqual({ code: 0, stderr: '' });
  execFileSync('chown', ['-R', '-h', `${USER}:${USER}`, path.join(work, 'home')]);
  rootfs = stored(path.join(store, 'rootfs', 'tests', 'acting', '1'), 'rootfs.ext4');

  // Root's side, as runner-setup --privileged-vms writes it: a root profile naming the user's store, root's run cache.
  fs.mkdirSync(runCache(), { mode: 0o700 });
  fs.mkdirSync(path.join(work, 'jail'), { mode: 0o700 });
  fs.mkdirSync(path.join(work, 'priv'), { mode: 0o700 });
  fs.writeFileSync(path.join(work, 'priv', 'privileged.json'), JSON.stringify({
    'schema-version': 1,
    name: 'privileged',
    'chroot-base': path.join(work, 'jail'),
    'run-cache': runCache(),
    'storage-provider': 'directory',
    'storage-provider-property-string': { 'rootfs-storage-root': path.join(store, 'rootfs'), 'kernel-storage-root': path.join(store, 'kernels') },
  }));
  secret = path.join(work, 'secret');
  fs.writeFileSync(secret, 'root only\n', { mode: 0o600 });
  env = { FIREBUILD_HOME: path.join(work, 'root-home'), FIREBUILD_ACTING_UID: String(USER) };
}, 300_000);

afterAll(async () => {
  await killAll(runCache(), env);
  killVmmProcessesUnder(work);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('root reading the runner user\'s store (FIREBUILD_ACTING_UID)', () => {
  test('a rootfs, kernel or content directory swapped for a link to a root-only file is refused in one line, exit 2, nothing left; untampered, the image boots', async () => {
    const kernel = stored(path.join(store, 'kernels', 'default'), 'vmlinux');
    const saved = path.join(work, 'saved');
    const before = snapshot(store);
    /** Tamper as the user would, run as root, undo. */
    const cases: [string, () => () => void, RegExp][] = [
      ['rootfs -> a root-only file', () => {
        fs.renameSync(rootfs, saved);
        fs.symlinkSync(secret, rootfs);
        fs.lchownSync(rootfs, USER, USER);
        return () => {
          fs.rmSync(rootfs);
          fs.renameSync(saved, rootfs);
        };
      }, new RegExp(`^error: the rootfs of image tests/acting:1 ${rootfs} is a symbolic link: refusing to read it as root on behalf of uid ${USER}$`)],
      ['rootfs a FIFO', () => {
        fs.renameSync(rootfs, saved);
        execFileSync('mkfifo', [rootfs]);
        fs.chownSync(rootfs, USER, USER);
        return () => {
          fs.rmSync(rootfs);
          fs.renameSync(saved, rootfs);
        };
      }, /^error: the rootfs of image tests\/acting:1 \S+ is a FIFO: refusing/],
      ['the kernel a hard link to a root-only file', () => {
        fs.renameSync(kernel, saved);
        fs.linkSync(secret, kernel);
        return () => {
          fs.rmSync(kernel);
          fs.renameSync(saved, kernel);
        };
      }, /^error: the vmlinux of kernel default \S+ has 2 hard links \(a stored file has one\): refusing/],
      ['the content directory a symlink to a directory of root\'s', () => {
        const content = path.dirname(rootfs);
        fs.renameSync(content, saved);
        fs.mkdirSync(path.join(work, 'roots'), { mode: 0o700 });
        fs.copyFileSync(path.join(saved, 'metadata.json'), path.join(work, 'roots', 'metadata.json'));
        fs.symlinkSync(path.join(work, 'roots'), content);
        fs.lchownSync(content, USER, USER);
        return () => {
          fs.rmSync(content);
          fs.rmSync(path.join(work, 'roots'), { recursive: true });
          fs.renameSync(saved, content);
        };
      }, /^error: image metadata \S+ \(at \S+\) is a symbolic link: refusing/],
    ];
    for (const [what, tamper, want] of cases) {
      const undo = tamper();
      try {
        const r = await run();
        expect([what, r.code, errorLines(r.stderr)]).toEqual([what, 2, [expect.stringMatching(want)]]);
        expect(r.stdout).toBe('');
        expect([what, fs.readdirSync(runCache()), vmmProcessesUnder(work)]).toEqual([what, [], []]);
      } finally {
        undo();
      }
    }
    expect(snapshot(store)).toEqual(before);

    // Untampered: the same image boots, its disk and kernel copied by root through the checked descriptors.
    const ok = await run();
    expect({ code: ok.code, errors: errorLines(ok.stderr) }).toEqual({ code: 0, errors: [] });
    expect(ok.stdout).toContain('acting-store-ok');
    expect(fs.readdirSync(runCache())).toEqual([]);
    expect(snapshot(store)).toEqual(before);
  }, 300_000);
});
