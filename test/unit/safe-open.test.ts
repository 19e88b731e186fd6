import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DirectoryStorage } from '../../src/store/directory.js';
import { entryFileNoFollow } from '../../src/store/entry.js';
import { UserError } from '../../src/util/errors.js';
import { UnsafeFileError, actingUid, copyChecked, openChecked, openDirChecked, readChecked, type CheckedOpen } from '../../src/util/safe-open.js';

/**
 * Root reading another user's store (firebuild-priv, FIREBUILD_ACTING_UID): the checked open on real files.
 * Owners other than root need chown, so these run as root (as the suite does on its machine).
 */
const USER = 64000;
const OTHER = 64001;
const asRoot = process.getuid?.() === 0 ? test : test.skip;

let root: string;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'safe-open-'));
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

const opts = (over: Partial<CheckedOpen> = {}): CheckedOpen => ({ what: 'the rootfs', trust: { uid: USER }, maxBytes: 1 << 20, ...over });

/** A user's file: written, then given to USER. */
function userFile(p: string, content = 'hello\n', uid = USER): string {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  fs.chownSync(p, uid, uid);
  return p;
}

/** A file only root may read (the /etc/shadow stand-in). */
function secret(): string {
  const p = path.join(root, 'secret');
  fs.writeFileSync(p, 'root only\n', { mode: 0o600 });
  return p;
}

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(UnsafeFileError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  return msg;
}

describe('openChecked', () => {
  asRoot('a regular file of the acting user (or of root) with one link is read and copied through its descriptor', async () => {
    const f = userFile(path.join(root, 'store', 'rootfs.ext4'), 'image bytes\n');
    expect(await readChecked(f, opts())).toBe('image bytes\n');
    const rootsFile = path.join(root, 'store', 'metadata.json');
    fs.writeFileSync(rootsFile, '{}');
    expect(await readChecked(rootsFile, opts())).toBe('{}');

    const checked = await openChecked(f, opts());
    try {
      expect(checked.size).toBe(12);
      // Replacing the name after the check changes nothing: the copy comes from the descriptor.
      fs.rmSync(f);
      fs.symlinkSync(secret(), f);
      const dest = path.join(root, 'copy');
      await copyChecked(checked, dest);
      expect(fs.readFileSync(dest, 'utf8')).toBe('image bytes\n');
    } finally {
      await checked.close();
    }
  });

  asRoot('a symlink to a root-only file is refused, naming the file', async () => {
    const link = path.join(root, 'rootfs.ext4');
    fs.symlinkSync(secret(), link);
    fs.lchownSync(link, USER, USER);
    expect(await refusal(readChecked(link, opts()))).toBe(`the rootfs ${link} is a symbolic link: refusing to read it as root on behalf of uid ${USER}`);
  });

  asRoot('a symlinked directory anywhere in the path is refused', async () => {
    const real = path.join(root, 'real');
    userFile(path.join(real, 'rootfs.ext4'));
    const link = path.join(root, 'store');
    fs.symlinkSync(real, link);
    const msg = await refusal(readChecked(path.join(link, 'rootfs.ext4'), opts()));
    expect(msg).toContain(`(at ${link}) is a symbolic link`);
    // Deeper: a symlink two levels up.
    const deep = path.join(link, 'a', 'b');
    fs.mkdirSync(path.join(real, 'a', 'b'), { recursive: true });
    userFile(path.join(real, 'a', 'b', 'f'));
    expect(await refusal(readChecked(path.join(deep, 'f'), opts()))).toContain(`(at ${link}) is a symbolic link`);
  });

  asRoot('a FIFO is refused without hanging', async () => {
    const fifo = path.join(root, 'rootfs.ext4');
    execFileSync('mkfifo', [fifo]);
    fs.chownSync(fifo, USER, USER);
    expect(await refusal(readChecked(fifo, opts()))).toContain('is a FIFO');
  }, 5000);

  asRoot("another user's file, or a file in another user's directory, is refused", async () => {
    const f = userFile(path.join(root, 'rootfs.ext4'), 'x', OTHER);
    expect(await refusal(readChecked(f, opts()))).toContain(`is owned by uid ${OTHER}, not uid ${USER} or root`);
    const dir = path.join(root, 'theirs');
    fs.mkdirSync(dir);
    fs.chownSync(dir, OTHER, OTHER);
    const g = userFile(path.join(dir, 'rootfs.ext4'));
    expect(await refusal(readChecked(g, opts()))).toContain(`(at ${dir}) is owned by uid ${OTHER}`);
  });

  asRoot('a hard link is refused (to a file of root, or a second name of the user\'s own)', async () => {
    const s = secret();
    const hard = path.join(root, 'rootfs.ext4');
    fs.linkSync(s, hard);
    expect(await refusal(readChecked(hard, opts()))).toContain('has 2 hard links');
    const own = userFile(path.join(root, 'a'));
    fs.linkSync(own, path.join(root, 'b'));
    expect(await refusal(readChecked(own, opts()))).toContain('has 2 hard links');
  });

  asRoot('a file larger than the limit (a huge sparse file) is refused before a byte is read', async () => {
    const f = userFile(path.join(root, 'rootfs.ext4'), '');
    fs.truncateSync(f, 1024 ** 4);
    expect(await refusal(openChecked(f, opts()))).toContain(`is ${1024 ** 4} bytes, over the ${1 << 20} bytes`);
  });

  asRoot('a directory or a missing file is refused', async () => {
    const d = path.join(root, 'rootfs.ext4');
    fs.mkdirSync(d);
    expect(await refusal(readChecked(d, opts()))).toContain('is a directory');
    expect(await refusal(readChecked(path.join(root, 'nope'), opts()))).toContain('does not exist');
  });

  asRoot("a root-only tree (the run cache, the jails) refuses the user's directory and one others may write", async () => {
    const mine = path.join(root, 'run');
    fs.mkdirSync(mine, { mode: 0o700 });
    await (await openDirChecked(mine, 'run-cache', { uid: USER, rootOnly: true })).close();
    fs.chownSync(mine, USER, USER);
    expect(await refusal(openDirChecked(mine, 'run-cache', { uid: USER, rootOnly: true }))).toContain('is owned by uid 64000, not root');
    fs.chownSync(mine, 0, 0);
    fs.chmodSync(mine, 0o777);
    expect(await refusal(openDirChecked(mine, 'run-cache', { uid: USER, rootOnly: true }))).toContain('is writable by others (mode 777)');
    fs.chmodSync(mine, 0o1777); // sticky, as /tmp: nobody renames what they do not own
    await (await openDirChecked(mine, 'run-cache', { uid: USER, rootOnly: true })).close();
  });
});

describe('the acting uid', () => {
  test('unset is not acting; a uid is; anything else set is an error, never "not acting"', () => {
    expect(actingUid({})).toBeUndefined();
    expect(actingUid({ FIREBUILD_ACTING_UID: '1001' })).toBe(1001);
    expect(actingUid({ FIREBUILD_ACTING_UID: '0' })).toBe(0);
    for (const bad of ['', 'runner', '-1', '1001 ', '99999999999']) {
      expect(() => actingUid({ FIREBUILD_ACTING_UID: bad })).toThrow(UserError);
    }
  });
});

describe('the store read for another user', () => {
  /** A stored entry in the switchable layout: <entry>/.c-<hex>/<files>, .current, and the stable links. */
  function entry(dir: string, files: Record<string, string>): string {
    const c = path.join(dir, '.c-0a1b2c');
    fs.mkdirSync(c, { recursive: true });
    for (const [n, text] of Object.entries(files)) {
      userFile(path.join(c, n), text);
      fs.symlinkSync(`.current/${n}`, path.join(dir, n));
    }
    fs.symlinkSync('.c-0a1b2c', path.join(dir, '.current'));
    execFileSync('chown', ['-R', '-h', `${USER}:${USER}`, dir]);
    return dir;
  }

  asRoot('.current is read, never followed, and must name a content directory of the entry', async () => {
    const e = entry(path.join(root, 'k'), { vmlinux: 'k' });
    expect(await entryFileNoFollow(e, 'vmlinux', { uid: USER })).toBe(path.join(e, '.c-0a1b2c', 'vmlinux'));
    fs.rmSync(path.join(e, '.current'));
    fs.symlinkSync('/root', path.join(e, '.current'));
    expect(await refusal(entryFileNoFollow(e, 'vmlinux', { uid: USER }))).toContain(".current points to '/root', not a content directory");
  });

  asRoot('an image whose metadata is a symlink is refused in one line naming it (not "corrupt"); the store is never written', async () => {
    const rootfsRoot = path.join(root, 'rootfs');
    const kernelRoot = path.join(root, 'kernels');
    fs.mkdirSync(kernelRoot);
    const e = entry(path.join(rootfsRoot, 'acme', 'app', '1'), { 'rootfs.ext4': 'x', 'metadata.json': '{}' });
    const meta = path.join(e, '.c-0a1b2c', 'metadata.json');
    fs.rmSync(meta);
    fs.symlinkSync(secret(), meta);
    execFileSync('chown', ['-R', '-h', `${USER}:${USER}`, rootfsRoot, kernelRoot]);
    const store = new DirectoryStorage({ rootfsRoot, kernelRoot, actingUid: USER });
    expect(await refusal(store.getImage('acme/app:1'))).toBe(`image metadata ${meta} is a symbolic link: refusing to read it as root on behalf of uid ${USER}`);
    const listed = await store.listImages();
    expect(listed.map((i) => i.error)).toEqual([`image metadata ${meta} is a symbolic link: refusing to read it as root on behalf of uid ${USER}`]);
    await expect(store.removeImage('acme/app:1')).rejects.toThrow(/root only reads it/);
    expect(fs.existsSync(e)).toBe(true);
  });
});
