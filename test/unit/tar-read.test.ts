import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { readTar, type TarEntry } from '../../src/rootfs/tar-read.js';
import { UserError } from '../../src/util/errors.js';

// Archives made by real GNU tar, node-tar and Docker from a tree made with real tools (mknod, setcap,
// binary xattrs, nanosecond times): every entry read back must equal what lstat and getxattr say.

let work: string;
let src: string;
const BIN = Buffer.from([0xff, 0x00, 0xfe, 0x80, 0x0a, 0x3d, 0x20]); // NUL, high bytes, newline, '=', space
const LONG = 'd'.repeat(120) + '/' + 'n'.repeat(150);
const sh = (cmd: string, cwd = src): string => execFileSync('sh', ['-c', cmd], { cwd, encoding: 'utf8' });

interface Got { e: TarEntry; sha256?: string; bytes: number }

async function readAll(stream: Readable, what = 'the test archive', consume = true): Promise<Map<string, Got>> {
  const out = new Map<string, Got>();
  for await (const e of readTar(stream, what)) {
    const g: Got = { e, bytes: 0 };
    if (consume && e.type === 'file') {
      const h = createHash('sha256');
      for await (const c of e.body) {
        h.update(c);
        g.bytes += c.length;
      }
      g.sha256 = h.digest('hex');
    }
    out.set(e.path.replace(/^\.\//, ''), g);
  }
  return out;
}

const tarOf = (args: string[]): Readable => spawn('tar', args, { cwd: src, stdio: ['ignore', 'pipe', 'inherit'] }).stdout;
const fileHash = (p: string): string => createHash('sha256').update(fs.readFileSync(p)).digest('hex');

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'tar-read-'));
  src = path.join(work, 'src');
  fs.mkdirSync(src);
  sh(`mkdir -p etc usr/bin dev srv '${path.dirname(LONG)}'
      printf 'root:x:0:0::/root:/bin/sh\\n' > etc/passwd
      printf 'owned' > srv/owned && chown 1234:5678 srv/owned && chmod 0640 srv/owned
      printf 'long' > '${LONG}'
      cp /bin/true usr/bin/suid && chmod 4755 usr/bin/suid
      cp /bin/true usr/bin/ping && setcap cap_net_raw+ep usr/bin/ping
      printf 'one' > srv/hard1 && ln srv/hard1 srv/hard2
      ln -s /etc/passwd srv/abs-link && ln -s '${'t'.repeat(200)}' srv/long-link
      mknod dev/null c 1 3 && mknod dev/sda b 8 0 && mknod dev/big c 300 70000 && mkfifo srv/fifo
      head -c 1000000 /dev/urandom > srv/big.bin
      touch -h -d '2023-01-02 03:04:05.123456789' srv/owned srv/abs-link`);
  execFileSync('python3', ['-c', `import os; os.setxattr('${src}/srv/owned', 'user.bin', bytes.fromhex('${BIN.toString('hex')}'))`]);
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** Every entry equals the source tree's lstat. */
function expectTree(got: Map<string, Got>, o: { ns: boolean; xattrs: boolean }): void {
  const paths = sh('find . -mindepth 1').trim().split('\n').map((p) => p.slice(2));
  expect([...got.keys()].filter((p) => p !== '.' && p !== '').sort()).toEqual([...paths].sort());
  const order = [...got.keys()].map((p) => p.replace(/^\.\//, ''));
  paths.sort((a, b) => order.indexOf(a) - order.indexOf(b)); // the archive's order: a hard link's target comes first
  const inodes = new Map<bigint, string>();
  for (const p of paths) {
    const st = fs.lstatSync(path.join(src, p), { bigint: true });
    const { e, sha256 } = got.get(p) as Got;
    expect({ p, mode: e.mode, uid: e.uid, gid: e.gid }).toEqual({ p, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid) });
    if (!st.isDirectory()) {
      expect({ p, sec: e.mtime.sec }).toEqual({ p, sec: Number(st.mtimeNs / 1_000_000_000n) });
      if (o.ns) expect({ p, nsec: e.mtime.nsec }).toEqual({ p, nsec: Number(st.mtimeNs % 1_000_000_000n) });
    }
    if (st.isSymbolicLink()) expect(e).toMatchObject({ type: 'symlink', linkTarget: fs.readlinkSync(path.join(src, p)) });
    else if (st.isDirectory()) expect(e.type).toBe('dir');
    else if (st.isFIFO()) expect(e.type).toBe('fifo');
    else if (st.isCharacterDevice() || st.isBlockDevice()) {
      const r = st.rdev; // glibc's encoding of major and minor
      const rdev = { major: Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn)), minor: Number((r & 0xffn) | ((r >> 12n) & 0xfff00n)) };
      expect(e).toMatchObject({ type: st.isCharacterDevice() ? 'char' : 'block', rdev });
    } else if (st.nlink > 1n && inodes.has(st.ino)) {
      expect(e).toMatchObject({ type: 'hardlink', linkTarget: expect.stringMatching(new RegExp(`(^|/)${inodes.get(st.ino)}$`)) });
    } else {
      inodes.set(st.ino, p);
      expect({ p, type: e.type, size: e.size, sha256 }).toEqual({ p, type: 'file', size: Number(st.size), sha256: fileHash(path.join(src, p)) });
    }
  }
  if (o.xattrs) {
    expect(got.get('srv/owned')?.e.xattrs.get('user.bin')).toEqual(BIN);
    const cap = execFileSync('python3', ['-c', `import os,sys; sys.stdout.write(os.getxattr('${src}/usr/bin/ping', 'security.capability').hex())`], { encoding: 'utf8' });
    expect(got.get('usr/bin/ping')?.e.xattrs.get('security.capability')?.toString('hex')).toBe(cap);
  }
}

describe('readTar on archives real tools make', () => {
  test('GNU tar --format=pax --xattrs: binary xattrs, nanosecond times, devices, links, long names', async () => {
    const got = await readAll(tarOf(['-c', '--format=pax', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-f', '-', '.']));
    expectTree(got, { ns: true, xattrs: true });
    expect(got.get('srv/owned')?.e.mtime).toEqual({ sec: 1672628645, nsec: 123456789 });
  });

  test('GNU tar --format=gnu: L/K long names and links, base-256 numbers, device numbers', async () => {
    fs.writeFileSync(path.join(src, 'bigid'), 'x');
    fs.chownSync(path.join(src, 'bigid'), 3_000_000, 4_000_000); // over 0o7777777: base-256 in GNU format
    try {
      const got = await readAll(tarOf(['-c', '--format=gnu', '--numeric-owner', '-f', '-', '.']));
      expectTree(got, { ns: false, xattrs: false });
      expect(got.get('bigid')?.e).toMatchObject({ uid: 3_000_000, gid: 4_000_000 });
      expect(got.get(LONG)?.e.type).toBe('file');
    } finally {
      fs.rmSync(path.join(src, 'bigid'));
    }
  });

  test('GNU tar --format=ustar (prefix field) and node-tar', async () => {
    const ustar = await readAll(tarOf(['-c', '--format=ustar', '--numeric-owner', '-f', '-', 'etc', 'usr', 'dev', 'srv/owned', 'srv/fifo']));
    expect(ustar.get('srv/owned')?.e).toMatchObject({ uid: 1234, gid: 5678, mode: 0o640, size: 5 });
    expect(ustar.get('dev/sda')?.e).toMatchObject({ type: 'block', rdev: { major: 8, minor: 0 } });
    // node-tar in a process of its own (in Jest's module sandbox it writes a Date where a pax time goes);
    // no FIFOs or devices, which it does not archive (a FIFO ends its archive early, without the end marker).
    const args = ['etc', 'usr', 'srv/big.bin', 'srv/abs-link', path.dirname(LONG)];
    const node = await readAll(spawn(process.execPath, ['-e', `require('tar').c({ cwd: process.argv[1], portable: false }, process.argv.slice(2)).pipe(process.stdout)`, src, ...args], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] }).stdout);
    for (const p of ['etc/passwd', 'srv/big.bin', LONG]) expect(node.get(p)?.sha256).toBe(fileHash(path.join(src, p)));
    expect(node.get('srv/abs-link')?.e).toMatchObject({ type: 'symlink', linkTarget: '/etc/passwd' });
    expect(node.get('usr/bin/suid')?.e.mode).toBe(0o4755);
  });

  test('docker export of a small container', async () => {
    const docker = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
    const img = `tar-read-test:${process.pid}`;
    execFileSync('sh', ['-c', `tar -c --xattrs --xattrs-include='*' --numeric-owner -C '${src}' etc usr dev srv/owned srv/abs-link | ${docker} import - ${img}`], { stdio: 'pipe' });
    const cid = execFileSync(docker, ['create', img, '/x'], { encoding: 'utf8' }).trim();
    try {
      const got = await readAll(spawn(docker, ['export', cid], { stdio: ['ignore', 'pipe', 'inherit'] }).stdout);
      expect(got.get('etc/passwd')?.sha256).toBe(fileHash(path.join(src, 'etc/passwd')));
      expect(got.get('usr/bin/suid')?.e).toMatchObject({ mode: 0o4755, type: 'file' });
      expect(got.get('srv/owned')?.e).toMatchObject({ uid: 1234, gid: 5678 });
      expect(got.get('srv/abs-link')?.e).toMatchObject({ type: 'symlink', linkTarget: '/etc/passwd' });
      expect(got.get('dev/sda')?.e).toMatchObject({ type: 'block', rdev: { major: 8, minor: 0 } });
      expect(got.get('usr/bin/ping')?.e.xattrs.get('security.capability')).toBeDefined();
    } finally {
      execFileSync(docker, ['rm', '-f', cid], { stdio: 'ignore' });
      execFileSync(docker, ['rmi', img], { stdio: 'ignore' });
    }
  }, 60_000);

  test.each([['gnu'], ['pax']])('GNU tar --sparse --format=%s: refused, naming the entry', async (format) => {
    const dir = fs.mkdtempSync(path.join(work, 'sparse-'));
    execFileSync('truncate', ['-s', '10M', path.join(dir, 'hole.img')]);
    fs.appendFileSync(path.join(dir, 'hole.img'), 'end');
    const err = await readAll(spawn('tar', ['-c', '--sparse', `--format=${format}`, '-f', '-', 'hole.img'], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] }).stdout).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/^the test archive has an entry firebuild cannot convert: ".*hole\.img" is a GNU sparse file/);
  });

  test('bodies left unread are skipped', async () => {
    const got = await readAll(tarOf(['-c', '--format=pax', '-f', '-', '.']), 'x', false);
    expect(got.get('srv/big.bin')?.e.size).toBe(1_000_000);
    expect(got.has('usr/bin/ping')).toBe(true);
  });
});

/** One raw header block (checksum computed), for archives no honest tool makes. */
function header(name: string, type: string, size: number, extra: (h: Buffer) => void = () => undefined): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(size.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write(type, 156);
  h.write('ustar\x0000', 257, 'latin1');
  extra(h);
  h.fill(' ', 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}
const body = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
const paxRecord = (k: string, v: Buffer | string): Buffer => {
  const kv = Buffer.concat([Buffer.from(` ${k}=`), Buffer.from(v), Buffer.from('\n')]);
  let n = kv.length + 1;
  while (String(n).length + kv.length !== n) n++;
  return Buffer.concat([Buffer.from(String(n)), kv]);
};
const END = Buffer.alloc(1024);

async function failure(parts: Buffer[]): Promise<Error> {
  return readAll(Readable.from(parts.length ? [Buffer.concat(parts)] : []), 'the test archive').then(() => {
    throw new Error('no error');
  }, (e: Error) => e);
}

describe('readTar on crafted archives', () => {
  test('LIBARCHIVE.xattr (base64), SCHILY device numbers, global headers, fractional and negative times', async () => {
    const g = Buffer.concat([paxRecord('uid', '77'), paxRecord('mtime', '-1.25')]);
    const x = Buffer.concat([paxRecord('LIBARCHIVE.xattr.user.a%3Db', BIN.toString('base64')), paxRecord('SCHILY.devmajor', '259'), paxRecord('SCHILY.devminor', '1048575'), paxRecord('atime', '5.5')]);
    const got = await readAll(Readable.from([Buffer.concat([header('pax_global', 'g', g.length), body(g), header('x', 'x', x.length), body(x), header('dev/nvme', '3', 0), header('f', '0', 0), END])]));
    expect(got.get('dev/nvme')?.e).toMatchObject({ type: 'char', uid: 77, rdev: { major: 259, minor: 1048575 }, mtime: { sec: -2, nsec: 750_000_000 }, atime: { sec: 5, nsec: 500_000_000 } });
    expect(got.get('dev/nvme')?.e.xattrs.get('user.a=b')).toEqual(BIN);
    expect(got.get('f')?.e).toMatchObject({ uid: 77, xattrs: new Map() }); // global stays, local does not
  });

  test('contiguous files (type 7) are files; a chunked stream reads the same as one buffer', async () => {
    const data = Buffer.from('contiguous data');
    const whole = Buffer.concat([header('c', '7', data.length), body(data), END]);
    const bytes = [...whole].map((b) => Buffer.from([b])); // one byte per chunk
    const got = await readAll(Readable.from(bytes));
    expect(got.get('c')?.e.type).toBe('file');
    expect(got.get('c')?.sha256).toBe(createHash('sha256').update(data).digest('hex'));
  });

  test.each<[string, () => Buffer[], RegExp]>([
    ['a truncated body', () => [header('f', '0', 2000), Buffer.alloc(600)], /^the test archive is not a valid tar stream \(it ends inside the entry "f"\)$/],
    ['a truncated header', () => [header('f', '0', 0), Buffer.alloc(100)], /^the test archive is not a valid tar stream \(it ends without the end-of-archive marker\)$/],
    ['no end-of-archive marker', () => [header('f', '0', 0)], /is not a valid tar stream \(it ends without the end-of-archive marker\)/],
    ['an empty stream', () => [], /is not a valid tar stream \(it is empty\)/],
    ['junk', () => [Buffer.alloc(2048, 'x')], /is not a valid tar stream \(bad header checksum at byte 0\)/],
    ['a corrupt second header', () => { const h = header('g', '0', 0); h[0] = 0x41; return [header('f', '0', 0), h, END]; }, /bad header checksum at byte 512/],
    ['a GNU sparse entry', () => [header('sparse.img', 'S', 0), END], /^the test archive has an entry firebuild cannot convert: "sparse\.img" is a GNU sparse file/],
    ['a pax sparse entry', () => { const x = paxRecord('GNU.sparse.major', '1'); return [header('x', 'x', x.length), body(x), header('s.img', '0', 0), END]; }, /"s\.img" is a GNU sparse file/],
    ['an unknown type', () => [header('vol', 'V', 0), END], /"vol" has tar type "V"/],
    ['a pax header over 1 MiB', () => [header('x', 'x', 2 << 20)], /has a pax header of 2097152 bytes \(limit 1048576\)/],
    ['a GNU long name over 4096 bytes', () => [header('././@LongLink', 'L', 5000)], /has a GNU long name of 5000 bytes/],
    ['a pax path over 4096 bytes', () => { const x = paxRecord('path', 'a/'.repeat(2100)); return [header('x', 'x', x.length), body(x), header('f', '0', 0), END]; }, /has an entry name of 4200 bytes \(limit 4096\)/],
    ['a bad pax record', () => { const x = Buffer.from('99 path=x\n'); return [header('x', 'x', x.length), body(x), header('f', '0', 0), END]; }, /a pax header record has a wrong length/],
  ])('%s is one clear UserError', async (_n, parts, want) => {
    const err = await failure(parts());
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toMatch(want);
  });

  test('backpressure: a huge stream is read only as fast as it is consumed', async () => {
    let produced = 0;
    const size = 1 << 30; // 1 GiB of body, generated lazily
    const chunk = Buffer.alloc(1 << 16, 7);
    const gen = async function* (): AsyncGenerator<Buffer> {
      yield header('huge', '0', size);
      for (let left = size; left > 0; left -= chunk.length) {
        produced += chunk.length;
        yield chunk;
      }
      yield END;
    };
    const it = readTar(Readable.from(gen(), { highWaterMark: 4 }), 'huge')[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.value?.size).toBe(size);
    const b = (first.value as TarEntry).body[Symbol.asyncIterator]();
    await b.next();
    await b.next();
    expect(produced).toBeLessThan(4 << 20);
    await it.return(undefined);
  });
});
