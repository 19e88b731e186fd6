import type { Readable } from 'node:stream';
import { UserError } from '../util/errors.js';
import type { Ext4Time } from './ext4-writer.js';

/**
 * A streaming tar reader for root file systems and image layers: ustar, GNU (`L`/`K` long names and
 * links, base-256 numbers) and pax (`x` and `g` headers), every header's checksum verified.
 *
 * Why not node-tar or tar-stream: both decode pax values as UTF-8 strings, which corrupts binary values
 * such as `SCHILY.xattr.security.capability`; both keep times in milliseconds (a `Date`), where pax
 * carries nanoseconds; and node-tar reads no device numbers from GNU-format headers. Here pax values
 * stay bytes until a key says what they are, times keep their nanoseconds, and device numbers come from
 * the header (or `SCHILY.devmajor`/`devminor`).
 *
 * Backpressure: the source is read through its async iterator, one chunk at a time, only when the
 * consumer asks for more (a header, or a body chunk): at most the stream's high-water mark plus one
 * chunk is buffered. A body the consumer leaves unread is skipped when the next entry is asked for.
 * Names are returned as written (leading `/` or `./` kept): callers decide what a name may be.
 */
export interface TarEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: Ext4Time;
  atime?: Ext4Time;
  ctime?: Ext4Time;
  linkTarget?: string;
  rdev?: { major: number; minor: number };
  xattrs: Map<string, Buffer>;
  /** Must be consumed or it is skipped when the next entry is read. */
  body: AsyncIterable<Buffer>;
}

/** The bytes are not a valid archive (a bad tar header, a stream that ends early, a compression that does not decode). */
export class InvalidArchive extends UserError {}

const BLOCK = 512;
export const MAX_PAX_BYTES = 1024 * 1024;
export const MAX_NAME_BYTES = 4096;

const TYPES: Record<string, TarEntry['type']> = { '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };

/** The source's bytes, pulled chunk by chunk on demand. */
class Bytes {
  private readonly chunks: Buffer[] = [];
  private len = 0;
  private done = false;
  offset = 0; // bytes consumed so far
  constructor(private readonly it: AsyncIterator<Buffer | string>) {}

  /** Buffer at least `n` bytes; false when the stream ends first. */
  async fill(n: number): Promise<boolean> {
    while (this.len < n) {
      if (this.done) return false;
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return this.len >= n;
      }
      const c = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
      if (c.length) {
        this.chunks.push(c);
        this.len += c.length;
      }
    }
    return true;
  }

  /** Exactly `n` buffered bytes (call fill first). */
  take(n: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length >= n) return this.takeSome(n);
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.takeSome(n - at);
      c.copy(out, at);
      at += c.length;
    }
    return out;
  }

  /** Up to `n` bytes from the first buffered chunk, without copying. */
  takeSome(n: number): Buffer {
    const c = this.chunks[0] as Buffer;
    const part = c.length <= n ? c : c.subarray(0, n);
    if (part === c) this.chunks.shift();
    else this.chunks[0] = c.subarray(n);
    this.len -= part.length;
    this.offset += part.length;
    return part;
  }

  /** Drop `n` bytes; false when the stream ends first. */
  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      if (this.len === 0 && !(await this.fill(1))) return false;
      n -= this.takeSome(n).length;
    }
    return true;
  }

  async drain(): Promise<void> {
    while (await this.fill(1)) this.takeSome(this.len);
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

interface Pax { [key: string]: Buffer }

export async function* readTar(source: Readable, what: string): AsyncGenerator<TarEntry> {
  const bytes = new Bytes(source[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>);
  const bad = (why: string): UserError => new InvalidArchive(`${what} is not a valid tar stream (${why})`);
  const unsupported = (name: string, why: string): UserError => new UserError(`${what} has an entry firebuild cannot convert: ${JSON.stringify(name)} ${why}`);
  let global: Pax = {};
  let pending = 0; // unread body bytes plus padding of the previous entry
  let ended = false;
  try {
    for (;;) {
      if (pending && !(await bytes.skip(pending))) throw bad('it ends inside an entry');
      pending = 0;
      let local: Pax = {};
      let longName: Buffer | undefined;
      let longLink: Buffer | undefined;
      let h: Buffer = Buffer.alloc(0);
      let type = '';
      // Extension headers (pax, GNU long names) until the entry they describe.
      for (;;) {
        const at = bytes.offset;
        if (!(await bytes.fill(BLOCK))) throw bad(at === 0 ? 'it is empty' : 'it ends without the end-of-archive marker');
        h = bytes.take(BLOCK);
        if (isZero(h)) {
          if (longName || longLink || Object.keys(local).length) throw bad('it ends after an extension header');
          ended = true;
          break;
        }
        verifyChecksum(h, at, bad);
        type = String.fromCharCode(h[156] as number);
        if (type !== 'x' && type !== 'g' && type !== 'L' && type !== 'K') break;
        const size = num(h, 124, 12, bad);
        const limit = type === 'x' || type === 'g' ? MAX_PAX_BYTES : MAX_NAME_BYTES + 1;
        if (size > limit) throw new UserError(`${what} has a ${type === 'x' || type === 'g' ? 'pax header' : 'GNU long name'} of ${size} bytes (limit ${limit}) at byte ${at}: refusing it`);
        if (!(await bytes.fill(size))) throw bad('it ends inside an extension header');
        const data = size ? bytes.take(size) : Buffer.alloc(0);
        if (!(await bytes.skip(pad(size)))) throw bad('it ends inside an extension header');
        if (type === 'x') local = { ...local, ...parsePax(data, bad) };
        else if (type === 'g') global = { ...global, ...parsePax(data, bad) };
        else if (type === 'L') longName = cstr(data);
        else longLink = cstr(data);
      }
      if (ended) break;
      const pax: Pax = { ...global, ...local };
      const gnu = h.toString('latin1', 257, 265) === 'ustar  \0';
      const ustar = h.toString('latin1', 257, 262) === 'ustar';
      let nameBytes = pax.path ?? longName ?? cstr(h.subarray(0, 100));
      if (!pax.path && !longName && ustar && !gnu) {
        const prefix = cstr(h.subarray(345, 500));
        if (prefix.length) nameBytes = Buffer.concat([prefix, Buffer.from('/'), nameBytes]);
      }
      const name = nameBytes.toString('utf8');
      if (nameBytes.length > MAX_NAME_BYTES) throw new UserError(`${what} has an entry name of ${nameBytes.length} bytes (limit ${MAX_NAME_BYTES}): ${JSON.stringify(name.slice(0, 80))}...: refusing it`);
      const linkBytes = pax.linkpath ?? longLink ?? cstr(h.subarray(157, 257));
      if (linkBytes.length > MAX_NAME_BYTES) throw new UserError(`${what} has an entry ${JSON.stringify(name)} whose link target is ${linkBytes.length} bytes (limit ${MAX_NAME_BYTES}): refusing it`);
      let kind = TYPES[type];
      if (type === 'S' || Object.keys(pax).some((k) => k.startsWith('GNU.sparse.'))) throw unsupported(name, 'is a GNU sparse file: make the archive without --sparse (-S)');
      if (!kind) throw unsupported(name, `has tar type ${JSON.stringify(type)}, which is not a file, directory, link, device or FIFO`);
      if (kind === 'file' && (type === '0' || type === '\0') && name.endsWith('/')) kind = 'dir'; // old tars mark directories by name only
      const size = pax.size ? paxInt(pax.size, 'size', name, bad) : num(h, 124, 12, bad);
      const xattrs = new Map<string, Buffer>();
      for (const [k, v] of Object.entries(pax)) {
        if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice(13), v);
        else if (k.startsWith('LIBARCHIVE.xattr.')) xattrs.set(percentDecode(k.slice(17)), Buffer.from(v.toString('latin1'), 'base64'));
      }
      const e: TarEntry = {
        path: name.replace(/\/+$/, '') || (name.startsWith('/') ? '/' : name),
        type: kind,
        mode: num(h, 100, 8, bad) & 0o7777,
        uid: pax.uid ? paxInt(pax.uid, 'uid', name, bad) : num(h, 108, 8, bad),
        gid: pax.gid ? paxInt(pax.gid, 'gid', name, bad) : num(h, 116, 8, bad),
        size: kind === 'file' ? size : 0,
        mtime: pax.mtime ? paxTime(pax.mtime, 'mtime', name, bad) : { sec: num(h, 136, 12, bad), nsec: 0 },
        xattrs,
        body: emptyBody,
      };
      if (pax.atime) e.atime = paxTime(pax.atime, 'atime', name, bad);
      if (pax.ctime) e.ctime = paxTime(pax.ctime, 'ctime', name, bad);
      if (kind === 'symlink' || kind === 'hardlink') e.linkTarget = linkBytes.toString('utf8');
      if (kind === 'char' || kind === 'block') {
        e.rdev = {
          major: pax['SCHILY.devmajor'] ? paxInt(pax['SCHILY.devmajor'], 'devmajor', name, bad) : num(h, 329, 8, bad),
          minor: pax['SCHILY.devminor'] ? paxInt(pax['SCHILY.devminor'], 'devminor', name, bad) : num(h, 337, 8, bad),
        };
      }
      // Any data (a hard link's or a device's, which honest archives do not carry) is skipped.
      pending = size + pad(size);
      if (kind === 'file' && size > 0) {
        const state = { left: size };
        pending = 0;
        const tail = pad(size);
        e.body = (async function* body(): AsyncGenerator<Buffer> {
          while (state.left > 0) {
            if (!(await bytes.fill(1))) throw bad(`it ends inside the entry ${JSON.stringify(name)}`);
            const c = bytes.takeSome(state.left);
            state.left -= c.length;
            yield c;
          }
        })();
        yield e;
        pending = state.left + tail;
        continue;
      }
      yield e;
    }
    // Whatever follows the end-of-archive marker (the second zero block, the writer's padding) is read
    // and dropped, so a producer writing into a pipe finishes instead of failing on a closed pipe.
    await bytes.drain();
  } finally {
    if (!ended) await bytes.close().catch(() => undefined);
  }
}

const emptyBody: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true, value: undefined }) }) };

const pad = (n: number): number => (BLOCK - (n % BLOCK)) % BLOCK;

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function cstr(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

function verifyChecksum(h: Buffer, at: number, bad: (w: string) => UserError): void {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 32 : (h[i] as number);
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  const field = h.toString('latin1', 148, 156).replace(/[\0 ]+$/, '').replace(/^ +/, '');
  const want = /^[0-7]{1,8}$/.test(field) ? parseInt(field, 8) : -1;
  if (want !== unsigned && want !== signed) throw bad(`bad header checksum at byte ${at}`);
}

/** A numeric header field: octal (NUL or space terminated) or GNU base-256. */
function num(h: Buffer, off: number, len: number, bad: (w: string) => UserError): number {
  const f = h.subarray(off, off + len);
  if ((f[0] as number) & 0x80) {
    const negative = f[0] === 0xff;
    let v = 0;
    for (let i = 0; i < len; i++) {
      const byte = i === 0 ? (f[0] as number) & 0x7f : (f[i] as number);
      v = v * 256 + (negative ? 255 - byte : byte);
    }
    if (!Number.isSafeInteger(v)) throw bad(`a number field at header offset ${off} is too large`);
    return negative ? -(v + 1) : v; // two's complement
  }
  const s = f.toString('latin1').replace(/[\0 ]+$/, '').replace(/^[ \0]+/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw bad(`a number field at header offset ${off} is not octal (${JSON.stringify(s)})`);
  return parseInt(s, 8);
}

/** pax records: "<length> <key>=<value>\n", the length counting the whole record in bytes. */
function parsePax(data: Buffer, bad: (w: string) => UserError): Pax {
  const out: Pax = {};
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break; // padding some writers leave
    const sp = data.indexOf(0x20, at);
    if (sp < 0 || sp - at > 10) throw bad('a pax header record has no length');
    const len = Number(data.toString('latin1', at, sp));
    if (!Number.isInteger(len) || len <= sp - at + 1 || at + len > data.length || data[at + len - 1] !== 0x0a) throw bad('a pax header record has a wrong length');
    const rec = data.subarray(sp + 1, at + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw bad('a pax header record has no key');
    out[rec.toString('utf8', 0, eq)] = Buffer.from(rec.subarray(eq + 1));
    at += len;
  }
  return out;
}

function paxInt(v: Buffer, key: string, name: string, bad: (w: string) => UserError): number {
  const s = v.toString('latin1');
  if (!/^\d{1,16}$/.test(s) || !Number.isSafeInteger(Number(s))) throw bad(`the pax ${key} ${JSON.stringify(s)} of ${JSON.stringify(name)} is not a number`);
  return Number(s);
}

/** A pax time ("1700000000.123456789", maybe negative) with its nanoseconds. */
function paxTime(v: Buffer, key: string, name: string, bad: (w: string) => UserError): Ext4Time {
  const m = /^(-?)(\d{1,15})(?:\.(\d*))?$/.exec(v.toString('latin1'));
  if (!m) throw bad(`the pax ${key} ${JSON.stringify(v.toString('latin1'))} of ${JSON.stringify(name)} is not a time`);
  let sec = Number(m[2]);
  let nsec = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (m[1]) {
    sec = -sec;
    if (nsec) {
      sec -= 1;
      nsec = 1e9 - nsec;
    }
  }
  return { sec, nsec };
}

function percentDecode(s: string): string {
  return Buffer.from(s.replace(/%([0-9a-fA-F]{2})/g, (_m, x: string) => String.fromCharCode(parseInt(x, 16))), 'latin1').toString('utf8');
}
