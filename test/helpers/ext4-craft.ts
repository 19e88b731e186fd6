import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * ext4 images for the reader's tests, made with the real tools: mkfs.ext4 -d from a host tree, xattrs
 * set with debugfs, and hostile images made by patching directory-entry bytes of a clean image (a name
 * with '../', two entries of one name). Test-only: these trees are the tests' own, never an image's.
 */
export function mkfsFromDir(dir: string, image: string, o: { sizeMiB?: number; features?: string; blockSize?: number; type?: string; inodeSize?: number } = {}): void {
  fs.rmSync(image, { force: true });
  execFileSync(`mkfs.${o.type ?? 'ext4'}`, [
    '-q', '-F', '-b', String(o.blockSize ?? 4096), '-I', String(o.inodeSize ?? 256), ...(o.features ? ['-O', o.features] : []),
    '-d', dir, image, `${o.sizeMiB ?? 64}M`,
  ], { stdio: 'pipe' });
}

/** debugfs -w commands against an image (test-only crafting). */
export function debugfsWrite(image: string, cmds: string[]): void {
  execFileSync('debugfs', ['-w', '-f', '-', image], { input: cmds.join('\n') + '\n', stdio: 'pipe' });
}

/**
 * A tree with every file type: files (setuid, setgid, sticky dir, odd owners), hard links, a big sparse
 * file, fast and slow symlinks, char and block devices (old and new device numbers), a FIFO, deep
 * directories and a directory of `bigDir` entries (htree).
 */
export function richTree(dir: string, o: { bigDir?: number } = {}): void {
  const w = (p: string, data: string | Buffer, mode = 0o644): void => {
    fs.mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    fs.writeFileSync(path.join(dir, p), data);
    fs.chmodSync(path.join(dir, p), mode);
  };
  w('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n');
  w('usr/bin/su-like', Buffer.alloc(70000, 7), 0o4755);
  w('usr/bin/sg-like', 'sg', 0o2711);
  fs.chownSync(path.join(dir, 'usr/bin/sg-like'), 1000, 4242);
  w('data/one', 'hard\n');
  fs.linkSync(path.join(dir, 'data/one'), path.join(dir, 'data/two'));
  fs.linkSync(path.join(dir, 'data/one'), path.join(dir, 'data/three'));
  const fd = fs.openSync(path.join(dir, 'data/sparse'), 'w');
  fs.writeSync(fd, Buffer.from('head'), 0, 4, 0);
  fs.writeSync(fd, Buffer.from("middle"), 0, 6, 40 * 1024 * 1024 + 123);
  fs.ftruncateSync(fd, 96 * 1024 * 1024);
  fs.closeSync(fd);
  w('data/empty', '');
  fs.symlinkSync('one', path.join(dir, 'data/fast-link'));
  fs.symlinkSync('/' + 'long-target/'.repeat(20) + 'end', path.join(dir, 'data/slow-link'));
  fs.mkdirSync(path.join(dir, 'dev'));
  execFileSync('mknod', [path.join(dir, 'dev/null'), 'c', '1', '3']);
  execFileSync('mknod', [path.join(dir, 'dev/big'), 'b', '259', '70000']);
  execFileSync('mknod', [path.join(dir, 'dev/fifo'), 'p']);
  fs.mkdirSync(path.join(dir, 'tmp'), { mode: 0o1777 });
  fs.chmodSync(path.join(dir, 'tmp'), 0o1777);
  let deep = dir;
  for (let i = 0; i < 40; i++) deep = path.join(deep, `d${i}`);
  fs.mkdirSync(deep, { recursive: true });
  fs.writeFileSync(path.join(deep, 'bottom'), 'deep\n');
  fs.mkdirSync(path.join(dir, 'many'));
  for (let i = 0; i < (o.bigDir ?? 5000); i++) fs.writeFileSync(path.join(dir, 'many', `entry-with-a-long-name-${i}`), String(i));
}

/** Extended attributes on a rich tree's image: user, security.capability (binary), trusted, an ACL, a big one (external block). */
export function richXattrs(image: string, scratch: string): void {
  const cap = path.join(scratch, 'cap');
  fs.writeFileSync(cap, Buffer.from('0100000200200000000000000000000000000000', 'hex'));
  const acl = path.join(scratch, 'acl');
  const e = (tag: number, perm: number, id = 0xffffffff): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt16LE(tag, 0);
    b.writeUInt16LE(perm, 2);
    b.writeUInt32LE(id, 4);
    return b;
  };
  fs.writeFileSync(acl, Buffer.concat([Buffer.from([2, 0, 0, 0]), e(1, 7), e(2, 5, 1000), e(4, 5), e(0x10, 5), e(0x20, 4)]));
  const big = path.join(scratch, 'big');
  fs.writeFileSync(big, Buffer.alloc(900, 0x61));
  debugfsWrite(image, [
    `ea_set -f ${cap} /usr/bin/su-like security.capability`,
    'ea_set /data/one user.note hello',
    'ea_set /usr/bin/sg-like trusted.t value',
    `ea_set -f ${acl} /data/empty system.posix_acl_access`,
    `ea_set -f ${big} /dev/null user.big`,
  ]);
}

function patchOnce(image: string, from: Buffer, to: Buffer): void {
  const buf = fs.readFileSync(image);
  const at = buf.indexOf(from);
  if (at < 0 || buf.indexOf(from, at + 1) >= 0) throw new Error(`the bytes ${from.toString('latin1')} are not unique in ${image}`);
  to.copy(buf, at);
  fs.writeFileSync(image, buf);
}

/**
 * An image whose root holds an entry named `../../../../tmp/<leaf>` with enough `../` to reach / from any
 * scratch directory (patched over a setuid file `AAA…` of the same length). Returns the name.
 */
export function hostileNameImage(image: string, scratch: string, leaf = 'x'): string {
  const name = `${'../'.repeat(16)}tmp/${leaf}`;
  const dir = fs.mkdtempSync(path.join(scratch, 'hostile-name-tree-'));
  fs.mkdirSync(dir, { recursive: true });
  const placeholder = 'A'.repeat(Buffer.byteLength(name));
  fs.writeFileSync(path.join(dir, placeholder), 'written through a hostile name\n');
  fs.chmodSync(path.join(dir, placeholder), 0o4755);
  fs.mkdirSync(path.join(dir, 'etc'));
  fs.writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  mkfsFromDir(dir, image, { sizeMiB: 8, features: '^metadata_csum' });
  fs.rmSync(dir, { recursive: true, force: true });
  patchOnce(image, Buffer.from(placeholder), Buffer.from(name));
  return name;
}

/**
 * An image with a directory `/d` holding `x` (a symlink to `target`) and `x` again (a setuid file, first
 * made as `y` and renamed by patching its directory entry): copied out by name, the file lands on the link.
 */
export function duplicateNameImage(image: string, scratch: string, target: string): void {
  const dir = fs.mkdtempSync(path.join(scratch, 'dup-name-tree-'));
  fs.mkdirSync(path.join(dir, 'd'), { recursive: true });
  fs.symlinkSync(target, path.join(dir, 'd/x'));
  fs.writeFileSync(path.join(dir, 'd/y'), 'written through a duplicate name\n');
  fs.chmodSync(path.join(dir, 'd/y'), 0o4755);
  fs.mkdirSync(path.join(dir, 'etc'));
  fs.writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  mkfsFromDir(dir, image, { sizeMiB: 8, features: '^metadata_csum' });
  fs.rmSync(dir, { recursive: true, force: true });
  // Directory entries of /d: name_len 1, file type 7 (symlink) 'x', and name_len 1, type 1 (regular) 'y'.
  const buf = fs.readFileSync(image);
  const hits: number[] = [];
  for (let i = buf.indexOf(Buffer.from([1, 1, 0x79])); i >= 0; i = buf.indexOf(Buffer.from([1, 1, 0x79]), i + 1)) {
    const near = buf.subarray(Math.max(0, i - 64), i + 64);
    if (near.includes(Buffer.from([1, 7, 0x78])) && buf.readUInt32LE(i - 6) !== 0) hits.push(i);
  }
  if (hits.length !== 1) throw new Error(`found ${hits.length} candidate entries for d/y in ${image}`);
  buf[hits[0]! + 2] = 0x78;
  fs.writeFileSync(image, buf);
}

/**
 * Put an ext4 file into a store under `tag` directly (DirectoryStorage, as the build commands write it),
 * bypassing every check an image from outside gets: a hostile image as a build or an attacker's push has it.
 */
export async function storeRawImage(home: string, tag: string, ext4: string): Promise<void> {
  const { DirectoryStorage } = await import('../../src/store/directory.js');
  const store = new DirectoryStorage({ rootfsRoot: path.join(home, 'rootfs'), kernelRoot: path.join(home, 'kernels'), createRoots: true });
  await store.writeImage(tag, async (s) => {
    fs.copyFileSync(ext4, s.rootfsPath);
    return { type: 'rootfs', source: { kind: 'test', ref: 'crafted' }, parents: [], config: {} };
  }, { overwrite: true });
}
