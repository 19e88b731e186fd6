import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { checkExt4Image } from '../rootfs/ext4-read.js';
import { tarCreate, tarExtract, tarList } from '../rootfs/gnu-tar.js';
import { own } from '../util/cleanup.js';
import { UserError } from '../util/errors.js';
import { copySparse, sparseDigest } from '../util/fs.js';
import type { Logger } from '../util/logger.js';

const ENTRY_NAME = /^[0-9a-f]{64}\.(ext4|json)$/;
/** An entry's json: `{"sha256": ..., "created": ...}`. */
const META_MAX_BYTES = 64 * 1024;

/** The step cache: `<cacheDir>/vm-steps/<key>.ext4` with `<key>.json` (its sha256); LRU by the json's mtime. */
export class StepCache {
  readonly dir: string;
  constructor(cacheDir: string, private readonly maxBytes: number, private readonly log: Logger) {
    this.dir = path.join(cacheDir, 'vm-steps');
  }
  private files(key: string): { img: string; meta: string } {
    return { img: path.join(this.dir, `${key}.ext4`), meta: path.join(this.dir, `${key}.json`) };
  }
  async has(key: string): Promise<boolean> {
    return fs.existsSync(this.files(key).meta);
  }
  /** Copy the entry to `dest`; false (and the entry removed) when it is missing or fails its digest. */
  async restore(key: string, dest: string): Promise<boolean> {
    const f = this.files(key);
    try {
      const meta = JSON.parse(await fsp.readFile(f.meta, 'utf8')) as { sha256: string };
      await copySparse(f.img, dest);
      const got = await sparseDigest(dest);
      if (got !== meta.sha256) throw new Error(`sha256 ${got}, expected ${meta.sha256}`);
      const now = new Date();
      await fsp.utimes(f.meta, now, now);
      return true;
    } catch (err) {
      this.log.warn('a step cache entry is corrupt: rebuilding it', { key: key.slice(0, 16), reason: (err as Error).message });
      await fsp.rm(f.img, { force: true });
      await fsp.rm(f.meta, { force: true });
      return false;
    }
  }
  /** Remove the entry for `key` (both files), if there is one. */
  async drop(key: string): Promise<void> {
    const f = this.files(key);
    await fsp.rm(f.meta, { force: true });
    await fsp.rm(f.img, { force: true });
  }

  async save(key: string, image: string): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const f = this.files(key);
    const tmp = `${f.img}.tmp-${process.pid}`;
    // A cancel mid-copy must not leave a partial image (a GiB-sized file no entry names) in the cache.
    const release = own(`the step cache's partial entry ${tmp}`, () => fsp.rm(tmp, { force: true }));
    try {
      await copySparse(image, tmp);
      const digest = await sparseDigest(tmp);
      await fsp.rename(tmp, f.img);
      await fsp.writeFile(f.meta, JSON.stringify({ sha256: digest, created: new Date().toISOString() }) + '\n');
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    } finally {
      release();
    }
    await this.evict();
  }
  /** The keys among `keys` that have an entry. */
  async present(keys: string[]): Promise<string[]> {
    return keys.filter((k) => fs.existsSync(this.files(k).meta) && fs.existsSync(this.files(k).img));
  }

  /** The entries of `keys` as one archive (GNU tar keeping holes, zstd): what the Actions cache carries between jobs. */
  async pack(keys: string[], archive: string): Promise<number> {
    const names = (await this.present(keys)).flatMap((k) => [`${k}.ext4`, `${k}.json`]);
    if (!names.length) return 0;
    await tarCreate(archive, { dir: this.dir, names, compression: 'zstd', sparse: true });
    return names.length / 2;
  }

  /**
   * Entries from an archive made by pack. Every member must be a regular file named `<key>.ext4` or
   * `<key>.json` (nothing else is extracted: no paths, no links); each entry is still checked against its
   * digest when a build uses it.
   */
  async unpack(archive: string, o: { only?: string } = {}): Promise<number> {
    for (const { type, name, size } of await tarList(archive, { compression: 'zstd' })) {
      if (type !== '-' || !ENTRY_NAME.test(name)) throw new UserError(`the step cache archive holds ${JSON.stringify(name)}, which is not a step cache entry: refusing it`);
      // One entry's archive (the registry step cache) names that entry and nothing else: no other key is planted.
      if (o.only !== undefined && name.slice(0, 64) !== o.only) throw new UserError(`the step cache entry for ${o.only.slice(0, 16)} holds ${JSON.stringify(name)}, another step's entry: refusing it`);
      // Unpacked, an entry must fit the cache: an archive of a few MiB naming a huge (sparse) image fills no disk.
      if (name.endsWith('.json') && (size === undefined || size > META_MAX_BYTES)) throw new UserError(`the step cache archive's ${JSON.stringify(name)} is ${size ?? 'of unknown size'} bytes: an entry's json is a digest and a date, refusing it`);
      if (size === undefined || size > this.maxBytes) throw new UserError(`the step cache archive's ${JSON.stringify(name)} is ${size === undefined ? 'of unknown size' : `${size} bytes`}, more than the step cache's limit of ${this.maxBytes}: refusing it`);
    }
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = await fsp.mkdtemp(path.join(this.dir, '.import-'));
    const release = own(`the step cache import directory ${tmp}`, () => fsp.rm(tmp, { recursive: true, force: true }));
    try {
      await tarExtract(archive, { dir: tmp, compression: 'zstd', sparse: true });
      let n = 0;
      // Images first, then their json: an entry counts only once both are in place.
      const names = (await fsp.readdir(tmp)).filter((f) => ENTRY_NAME.test(f)).sort((x, y) => (x.endsWith('.json') ? 1 : 0) - (y.endsWith('.json') ? 1 : 0));
      const dropped = new Set<string>();
      for (const f of names) {
        if (f.endsWith('.json') && dropped.has(f.slice(0, -5))) continue;
        const st = await fsp.lstat(path.join(tmp, f));
        if (!st.isFile()) continue;
        // An image from outside (the Actions cache): checked before it is kept; a bad one is dropped (rebuilt).
        if (f.endsWith('.ext4')) {
          const ok = await checkExt4Image(path.join(tmp, f), `step cache entry ${f.slice(0, 16)}`).then(() => true, (err: unknown) => {
            if (!(err instanceof UserError)) throw err;
            this.log.warn('a restored step cache entry fails its check: dropping it (the step is built again)', { reason: err.message });
            return false;
          });
          if (!ok) {
            dropped.add(f.slice(0, -5));
            continue;
          }
        }
        await fsp.rename(path.join(tmp, f), path.join(this.dir, f));
        if (f.endsWith('.json')) {
          // Its place in the LRU is now, not the mtime the archive gave it.
          const now = new Date();
          await fsp.utimes(path.join(this.dir, f), now, now);
          n++;
        }
      }
      await this.evict();
      return n;
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
      release();
    }
  }

  private async evict(): Promise<void> {
    const metas = (await fsp.readdir(this.dir)).filter((n) => n.endsWith('.json'));
    const entries = await Promise.all(metas.map(async (m) => {
      const key = m.slice(0, -5);
      const f = this.files(key);
      const [st, img] = await Promise.all([fsp.stat(f.meta), fsp.stat(f.img).catch(() => undefined)]);
      return { key, used: st.mtimeMs, bytes: img ? img.blocks * 512 : 0 };
    }));
    let total = entries.reduce((a, e) => a + e.bytes, 0);
    for (const e of entries.sort((a, b) => a.used - b.used)) {
      if (total <= this.maxBytes) break;
      const f = this.files(e.key);
      await fsp.rm(f.img, { force: true });
      await fsp.rm(f.meta, { force: true });
      total -= e.bytes;
      this.log.debug('step cache: evicted', { key: e.key.slice(0, 16) });
    }
  }
}

