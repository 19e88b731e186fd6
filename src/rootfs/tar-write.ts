import type { Ext4Image, Ext4Time } from './ext4-read.js';

/**
 * A pax tar stream written in memory, never to the host's file system: regular files, directories,
 * symlinks, hard links, devices, FIFOs, numeric owners, full modes (setuid/setgid/sticky), nanosecond
 * mtimes and xattrs as binary-safe `SCHILY.xattr.*` records.
 */
export interface TarHeader {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  mode: number; uid: number; gid: number; size?: number; mtime: Ext4Time;
  linkTarget?: string; rdev?: { major: number; minor: number }; xattrs?: Map<string, Buffer>;
}

const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' } as const;
const MAX_OCTAL_11 = 0o77777777777;

function octal(buf: Buffer, at: number, width: number, value: number): void {
  buf.write(value.toString(8).padStart(width - 1, '0') + '\0', at, width, 'latin1');
}

/** One pax record, `<len> <key>=<value>\n`, where len counts the whole record in bytes. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function block512(name: string, type: string, mode: number, uid: number, gid: number, size: number, mtime: number, link = '', rdev?: { major: number; minor: number }): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  octal(h, 100, 8, mode & 0o7777);
  octal(h, 108, 8, Math.min(uid, 0o7777777));
  octal(h, 116, 8, Math.min(gid, 0o7777777));
  octal(h, 124, 12, Math.min(size, MAX_OCTAL_11));
  octal(h, 136, 12, Math.max(0, Math.min(mtime, MAX_OCTAL_11)));
  h.write(type, 156, 1, 'latin1');
  h.write(link, 157, 100, 'utf8');
  h.write('ustar\0' + '00', 257, 8, 'latin1');
  if (rdev) {
    octal(h, 329, 8, Math.min(rdev.major, 0o7777777));
    octal(h, 337, 8, Math.min(rdev.minor, 0o7777777));
  }
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return h;
}

export function padding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** The header blocks of one entry (a pax extended header first when needed). */
export function tarHeader(e: TarHeader): Buffer {
  const name = e.type === 'dir' && !e.path.endsWith('/') ? `${e.path}/` : e.path;
  const size = e.type === 'file' ? e.size ?? 0 : 0;
  const recs: Buffer[] = [];
  if (Buffer.byteLength(name) > 99) recs.push(paxRecord('path', Buffer.from(name)));
  if (e.linkTarget !== undefined && Buffer.byteLength(e.linkTarget) > 99) recs.push(paxRecord('linkpath', Buffer.from(e.linkTarget)));
  if (e.uid > 0o7777777) recs.push(paxRecord('uid', Buffer.from(String(e.uid))));
  if (e.gid > 0o7777777) recs.push(paxRecord('gid', Buffer.from(String(e.gid))));
  if (size > MAX_OCTAL_11) recs.push(paxRecord('size', Buffer.from(String(size))));
  if (e.mtime.nsec !== 0 || e.mtime.sec < 0 || e.mtime.sec > MAX_OCTAL_11) recs.push(paxRecord('mtime', Buffer.from(`${e.mtime.sec}.${String(e.mtime.nsec).padStart(9, '0')}`)));
  for (const [k, v] of e.xattrs ?? []) recs.push(paxRecord(`SCHILY.xattr.${k}`, v));
  const main = block512(name.slice(0, 99), TYPEFLAG[e.type], e.mode, e.uid, e.gid, size, e.mtime.sec, (e.linkTarget ?? '').slice(0, 99), e.rdev);
  if (!recs.length) return main;
  const pax = Buffer.concat(recs);
  return Buffer.concat([block512('PaxHeader', 'x', 0o644, 0, 0, pax.length, e.mtime.sec), pax, padding(pax.length), main]);
}

/** The two zero blocks that end an archive. */
export function tarEnd(): Buffer {
  return Buffer.alloc(1024);
}

/**
 * An ext4 image's whole tree as a tar stream, read in-process (Ext4Image): hard links by inode, contents
 * streamed; nothing lands on the host. The root's own lost+found is left out, as an export has none.
 */
export async function* imageTar(img: Ext4Image): AsyncGenerator<Buffer> {
  const root = await img.stat('/');
  if (root) yield tarHeader({ path: './', type: 'dir', mode: root.mode, uid: root.uid, gid: root.gid, mtime: root.mtime, xattrs: root.xattrs });
  const firstName = new Map<number, string>();
  for await (const e of img.walk('/')) {
    if (e.path === '/lost+found' || e.path.startsWith('/lost+found/')) continue;
    const name = e.path.slice(1);
    const base = { path: name, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, xattrs: e.xattrs };
    if (e.type === 'socket') continue; // tar has no sockets (as docker export)
    if (e.type === 'file') {
      const first = e.nlink > 1 ? firstName.get(e.ino) : undefined;
      if (first !== undefined) {
        yield tarHeader({ ...base, type: 'hardlink', linkTarget: first });
        continue;
      }
      if (e.nlink > 1) firstName.set(e.ino, name);
      yield tarHeader({ ...base, type: 'file', size: e.size });
      let got = 0;
      for await (const c of img.readFile(e.ino, e.path)) {
        got += c.length;
        yield c;
      }
      if (got !== e.size) throw new Error(`${e.path}: read ${got} of ${e.size} bytes`);
      yield padding(e.size);
    } else yield tarHeader({ ...base, type: e.type, ...(e.linkTarget !== undefined ? { linkTarget: e.linkTarget } : {}), ...(e.rdev ? { rdev: e.rdev } : {}) });
  }
  yield tarEnd();
}
