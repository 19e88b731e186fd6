import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { z } from 'zod';
import { own } from '../util/cleanup.js';
import { InternalError, UserError, errnoCode } from '../util/errors.js';
import { diskUsage, exists, fsyncDir, fsyncFile, randomHex, requireWritableDir, sha256File, writeFileAtomic, copyFileFast } from '../util/fs.js';
import { holdLock, lockIsFresh, withLock, type HeldLock } from '../util/lock.js';
import { UnsafeFileError, openChecked, openDirChecked, readChecked, type Trust } from '../util/safe-open.js';
import { entryFile, entryFileNoFollow, newEntry, switchEntry, testPoint } from './entry.js';
import type { ImageMetadata, KernelMetadata } from './metadata.js';
import { ACTING_MAX_BYTES, type ImageListEntry, type KernelListEntry, type StagingArea, type StorageProvider, type StoredImage, type StoredKernel, type ImageMetadataDraft } from './provider.js';
import { formatTag, parseTag } from './tag.js';

export interface DirectoryStorageOptions {
  rootfsRoot: string;
  kernelRoot: string;
  /**
   * A second kernel root, read only, looked at after `kernelRoot` (FIREBUILD_SHARED_KERNELS: one root-owned
   * directory that the runner instances of a host share). Never written: imports and removals stay in kernelRoot.
   */
  sharedKernelRoot?: string;
  /** Create the roots when missing (the built-in default store); a profile's roots must already exist. */
  createRoots?: boolean;
  lockStaleMs?: number;
  /** A staging directory whose lock was not refreshed for this long belongs to a dead writer (default 60 s, or lockStaleMs). */
  stagingStaleMs?: number;
  /** Root reading the store of this uid (FIREBUILD_ACTING_UID): every read checked, no write (see StorageProvider.actingUid). */
  actingUid?: number;
}

const KERNEL_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const ROOTFS = 'rootfs.ext4';
const METADATA = 'metadata.json';

/**
 * The metadata schemas (zod, about a hundred modules) load with the first metadata file read or written,
 * not with the store: listing an empty store, as a fresh host's `firebuild image ls` does, never needs
 * them (bench/cli-start.mjs).
 */
const metadataModule = (): Promise<typeof import('./metadata.js')> => import('./metadata.js');

/** The `directory` storage provider: `<root>/<org>/<name>/<version>/{rootfs.ext4,metadata.json}` (see entry.ts for the switchable layout). */
export class DirectoryStorage implements StorageProvider {
  readonly name = 'directory';
  private readyRoots = false;

  constructor(private readonly opts: DirectoryStorageOptions) {}

  get actingUid(): number | undefined {
    return this.opts.actingUid;
  }

  private get trust(): Trust | undefined {
    return this.opts.actingUid === undefined ? undefined : { uid: this.opts.actingUid };
  }

  /** `file` of a stored entry: through `.current`, or (acting) resolved without following a symlink. */
  private entryPath(dir: string, file: string): Promise<string> {
    const t = this.trust;
    return t ? entryFileNoFollow(dir, file, t) : entryFile(dir, file);
  }

  /** Root never writes a store it reads for another user: that user's files stay that user's. */
  private refuseWriteWhenActing(): void {
    if (this.opts.actingUid !== undefined) {
      throw new UserError(`this store belongs to uid ${this.opts.actingUid} (FIREBUILD_ACTING_UID): root only reads it; write it as that user`);
    }
  }

  get locations(): Record<string, string> {
    return {
      'rootfs-storage-root': this.opts.rootfsRoot, 'kernel-storage-root': this.opts.kernelRoot,
      ...(this.opts.sharedKernelRoot ? { 'shared-kernel-storage-root': this.opts.sharedKernelRoot } : {}),
    };
  }

  private async ready(): Promise<void> {
    this.refuseWriteWhenActing();
    if (this.readyRoots) return;
    if (this.opts.createRoots) {
      await fsp.mkdir(this.opts.rootfsRoot, { recursive: true, mode: 0o755 });
      await fsp.mkdir(this.opts.kernelRoot, { recursive: true, mode: 0o755 });
    }
    await requireWritableDir(this.opts.rootfsRoot, 'rootfs-storage-root');
    await requireWritableDir(this.opts.kernelRoot, 'kernel-storage-root');
    this.readyRoots = true;
  }

  /** Read-only operations only need the root to exist. */
  private async readable(root: string, what: string): Promise<boolean> {
    const t = this.trust;
    if (t) {
      await (await openDirChecked(root, what, t)).close();
      return true;
    }
    try {
      const st = await fsp.stat(root);
      if (!st.isDirectory()) throw new UserError(`${what} ${root} is not a directory: point ${what} at a directory`);
      return true;
    } catch (err) {
      if (err instanceof UserError) throw err;
      if (this.opts.createRoots) return false; // the default store before its first write: empty
      throw new UserError(`${what} ${root} does not exist: create it (mkdir -p ${root}) or fix the profile`);
    }
  }

  private imageDir(tag: string): string {
    const t = parseTag(tag);
    return path.join(this.opts.rootfsRoot, t.org, t.name, t.version);
  }

  async listImages(): Promise<ImageListEntry[]> {
    const root = this.opts.rootfsRoot;
    if (!(await this.readable(root, 'rootfs-storage-root'))) return [];
    const out: ImageListEntry[] = [];
    for (const org of await visibleDirs(root)) {
      for (const name of await visibleDirs(path.join(root, org))) {
        for (const version of await visibleDirs(path.join(root, org, name))) {
          const dir = path.join(root, org, name, version);
          const tag = `${org}/${name}:${version}`;
          const sizes = await this.sizes(dir).catch(() => ({ apparent: 0, allocated: 0 }));
          const entry: ImageListEntry = { tag, dir, apparentSize: sizes.apparent, allocatedSize: sizes.allocated };
          try {
            entry.metadata = await readImageMetadata(this.trust ? await this.entryPath(dir, METADATA) : path.join(dir, METADATA), this.trust);
          } catch (err) {
            entry.error = err instanceof Error ? err.message : String(err);
          }
          out.push(entry);
        }
      }
    }
    return out.sort((a, b) => a.tag.localeCompare(b.tag));
  }

  /** The rootfs's sizes; acting, from fstat of the checked file. */
  private async sizes(dir: string): Promise<{ apparent: number; allocated: number }> {
    const t = this.trust;
    if (!t) return diskUsage(await entryFile(dir, ROOTFS));
    const f = await openChecked(await this.entryPath(dir, ROOTFS), { what: 'rootfs', trust: t, maxBytes: ACTING_MAX_BYTES.rootfs });
    await f.close();
    return { apparent: f.size, allocated: f.allocated };
  }

  async hasImage(tag: string): Promise<boolean> {
    return exists(path.join(this.imageDir(tag), METADATA));
  }

  async getImage(tag: string): Promise<StoredImage> {
    const dir = this.imageDir(tag);
    await this.readable(this.opts.rootfsRoot, 'rootfs-storage-root');
    if (!(await exists(dir))) throw new UserError(`image ${tag} not found: list images with 'firebuild image ls'`);
    const metadataPath = await this.entryPath(dir, METADATA);
    const metadata = await readImageMetadata(metadataPath, this.trust).catch((err: unknown) => {
      throw corruptEntry('image', tag, err);
    });
    return { tag, dir, rootfsPath: await this.entryPath(dir, ROOTFS), metadataPath, metadata };
  }

  async writeImage(
    tag: string,
    write: (staging: StagingArea) => Promise<ImageMetadataDraft>,
    opts: { overwrite?: boolean } = {},
  ): Promise<StoredImage> {
    const t = parseTag(tag);
    const canonical = formatTag(t);
    await this.ready();
    if (!opts.overwrite && (await exists(this.imageDir(canonical)))) {
      throw new UserError(`image ${canonical} already exists: choose another tag or pass --overwrite`);
    }
    const { staging, held, done } = await this.startStaging(path.join(this.opts.rootfsRoot, '.staging'));
    try {
      const rootfsPath = path.join(staging, ROOTFS);
      const draft = await write({ dir: staging, rootfsPath });
      const { contentSize, created, ...rest } = draft;
      const { METADATA_SCHEMA_VERSION, ImageMetadataSchema, describeZodError } = await metadataModule();
      await fsyncFile(rootfsPath).catch((err) => {
        throw new InternalError(`the image writer did not produce ${ROOTFS}`, { cause: err });
      });
      const metadataInput = {
        ...rest,
        schemaVersion: METADATA_SCHEMA_VERSION,
        tag: canonical,
        created: created ?? new Date().toISOString(),
        rootfs: {
          file: ROOTFS,
          sha256: await sha256File(rootfsPath),
          apparentSize: (await fsp.stat(rootfsPath)).size,
          ...(contentSize === undefined ? {} : { contentSize }),
        },
      };
      const parsed = ImageMetadataSchema.safeParse(metadataInput);
      if (!parsed.success) throw new InternalError(`invalid metadata for ${canonical}: ${describeZodError(parsed.error)}`);
      // Only the image's own files move into the store (not what the writer left beside them).
      const content = path.join(staging, '.content');
      await fsp.mkdir(content, { mode: 0o755 });
      await fsp.rename(rootfsPath, path.join(content, ROOTFS));
      await writeFileAtomic(path.join(content, METADATA), JSON.stringify(parsed.data, null, 2) + '\n', 0o644);
      await fsyncDir(content);
      const dest = this.imageDir(canonical);
      await withLock(path.join(this.opts.rootfsRoot, '.locks', t.org, t.name, t.version), () => this.commit(staging, held, content, dest, opts.overwrite ? undefined : `image ${canonical} already exists: choose another tag or pass --overwrite`), this.lockOpts());
      return { tag: canonical, dir: dest, rootfsPath: await entryFile(dest, ROOTFS), metadataPath: await entryFile(dest, METADATA), metadata: parsed.data };
    } finally {
      await done();
    }
  }

  /**
   * Put `content` in place at `dest` under its lock: a new entry appears with one rename; an existing one
   * (only when `refuse` is unset) is switched with one rename of its `.current` link.
   */
  private async commit(staging: string, held: HeldLock, content: string, dest: string, refuse?: string): Promise<void> {
    const lost = held.compromised();
    if (lost) throw new InternalError(`the staging directory ${staging} was not kept locked (${lost.message}): it may have been swept; write again`);
    if (await exists(dest)) {
      if (refuse) throw new UserError(refuse);
      await switchEntry(dest, content);
      return;
    }
    const entry = path.join(staging, '.entry');
    await newEntry(entry, content);
    await fsp.mkdir(path.dirname(dest), { recursive: true });
    await testPoint('new-entry');
    await fsp.rename(entry, dest);
    await fsyncDir(path.dirname(dest));
  }

  /**
   * A fresh staging directory (mkdtemp in the store's private .staging), locked by this writer for as long as
   * it writes, and owned by this process (util/cleanup.ts: a cancel mid-write removes it, so no half-written
   * image stays behind; after a SIGKILL the next writer's sweep does). `done` removes it and its lock.
   */
  private async startStaging(stagingRoot: string): Promise<{ staging: string; held: HeldLock; done: () => Promise<void> }> {
    await fsp.mkdir(stagingRoot, { recursive: true, mode: 0o700 });
    await this.sweepStaging(stagingRoot);
    const staging = await fsp.mkdtemp(path.join(stagingRoot, 'w-'));
    let held: HeldLock;
    try {
      held = await holdLock(staging, { staleMs: this.stagingStaleMs() });
    } catch (err) {
      await fsp.rm(staging, { recursive: true, force: true });
      throw err;
    }
    const remove = async (): Promise<void> => {
      await fsp.rm(staging, { recursive: true, force: true });
      await held.release();
    };
    // Cancelled already: own runs the removal and throws.
    const release = own(`the store's staging directory ${staging}`, remove);
    return { staging, held, done: async () => {
      await remove();
      release();
    } };
  }

  async removeImage(tag: string): Promise<void> {
    this.refuseWriteWhenActing();
    const t = parseTag(tag);
    const dir = this.imageDir(tag);
    await this.readable(this.opts.rootfsRoot, 'rootfs-storage-root');
    if (!(await exists(dir))) throw new UserError(`image ${tag} not found: list images with 'firebuild image ls'`);
    await withLock(path.join(this.opts.rootfsRoot, '.locks', t.org, t.name, t.version), async () => {
      // Move out of the tree first so a crash mid-delete leaves no half image under the tag.
      const trash = path.join(this.opts.rootfsRoot, '.staging', `rm-${await randomHex(6)}`);
      await fsp.mkdir(path.dirname(trash), { recursive: true, mode: 0o700 });
      await fsp.rename(dir, trash);
      await fsp.rm(trash, { recursive: true, force: true });
      await removeEmptyParents(path.dirname(dir), this.opts.rootfsRoot);
    }, this.lockOpts());
  }

  /**
   * Remove staging directories whose writer is gone (killed mid-write): liveness is the writer's lock
   * (`<dir>.lock`, refreshed while it writes), never a process id, which a writer in another PID
   * namespace does not share. A directory with no fresh lock is left alone while it is itself younger
   * than the stale time (its writer is between mkdtemp and taking the lock).
   */
  private async sweepStaging(stagingRoot: string): Promise<void> {
    const stale = this.stagingStaleMs();
    const names = await fsp.readdir(stagingRoot).catch(() => [] as string[]);
    for (const name of names) {
      const p = path.join(stagingRoot, name);
      const owner = name.endsWith('.lock') ? p.slice(0, -'.lock'.length) : p;
      if (name.endsWith('.lock') && names.includes(path.basename(owner))) continue; // judged with its directory
      if (await lockIsFresh(owner, stale).catch(() => true)) continue;
      const st = await fsp.lstat(owner).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs < stale) continue;
      await fsp.rm(owner, { recursive: true, force: true });
      await fsp.rm(`${owner}.lock`, { recursive: true, force: true });
    }
  }

  private stagingStaleMs(): number {
    return this.opts.stagingStaleMs ?? this.opts.lockStaleMs ?? 60_000;
  }

  private lockOpts(): { staleMs?: number } {
    return this.opts.lockStaleMs === undefined ? {} : { staleMs: this.opts.lockStaleMs };
  }

  // Kernels: <kernel-root>/<id>/{vmlinux,initrd,metadata.json}

  private kernelDir(id: string): string {
    if (!KERNEL_ID_RE.test(id)) {
      throw new UserError(`invalid kernel id '${id}': use 1-64 characters of [A-Za-z0-9._-] starting with a letter or digit`);
    }
    return path.join(this.opts.kernelRoot, id);
  }

  /** The kernel roots to read, the store's own first: a kernel there shadows a shared one of the same id. */
  private async kernelRoots(): Promise<string[]> {
    const roots = (await this.readable(this.opts.kernelRoot, 'kernel-storage-root')) ? [this.opts.kernelRoot] : [];
    const shared = this.opts.sharedKernelRoot;
    if (shared && (await this.readable(shared, 'shared-kernel-storage-root'))) roots.push(shared);
    return roots;
  }

  async listKernels(): Promise<KernelListEntry[]> {
    const out: KernelListEntry[] = [];
    for (const root of await this.kernelRoots()) {
      for (const id of await visibleDirs(root)) {
        if (out.some((k) => k.id === id)) continue;
        const dir = path.join(root, id);
        const entry: KernelListEntry = { id, dir };
        try {
          entry.metadata = await readKernelMetadata(this.trust ? await this.entryPath(dir, METADATA) : path.join(dir, METADATA), this.trust);
        } catch (err) {
          entry.error = err instanceof Error ? err.message : String(err);
        }
        out.push(entry);
      }
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  async getKernel(id: string): Promise<StoredKernel> {
    this.kernelDir(id);
    let dir: string | undefined;
    for (const root of await this.kernelRoots()) {
      if (await exists(path.join(root, id))) {
        dir = path.join(root, id);
        break;
      }
    }
    if (!dir) throw new UserError(`kernel ${id} not found: list kernels with 'firebuild kernel ls' or import one with 'firebuild kernel import'`);
    const metadata = await readKernelMetadata(await this.entryPath(dir, METADATA), this.trust);
    const k: StoredKernel = { id, dir, vmlinuxPath: await this.entryPath(dir, 'vmlinux'), metadata };
    if (metadata.initrd) k.initrdPath = await this.entryPath(dir, 'initrd');
    return k;
  }

  async importKernel(id: string, vmlinux: string, opts: { initrd?: string; overwrite?: boolean; cmdline?: string; source?: string } = {}): Promise<StoredKernel> {
    const dest = this.kernelDir(id);
    for (const f of [vmlinux, opts.initrd]) {
      if (f === undefined) continue;
      const st = await fsp.stat(f).catch(() => undefined);
      if (!st?.isFile()) throw new UserError(`kernel file ${f} not found: give the path of a vmlinux/vmlinuz (and --initrd) file`);
    }
    await this.ready();
    if (!opts.overwrite && (await exists(dest))) throw new UserError(`kernel ${id} already exists: choose another --id or pass --overwrite`);
    const { staging, held, done } = await this.startStaging(path.join(this.opts.kernelRoot, '.staging'));
    const content = path.join(staging, '.content');
    try {
      await fsp.mkdir(content, { mode: 0o755 });
      await copyFileFast(vmlinux, path.join(content, 'vmlinux'));
      const { METADATA_SCHEMA_VERSION } = await metadataModule();
      const meta: KernelMetadata = {
        schemaVersion: METADATA_SCHEMA_VERSION,
        id,
        created: new Date().toISOString(),
        format: await kernelFormat(vmlinux),
        source: opts.source ?? path.resolve(vmlinux),
        vmlinux: { sha256: await sha256File(vmlinux), size: (await fsp.stat(vmlinux)).size },
      };
      if (opts.initrd) {
        await copyFileFast(opts.initrd, path.join(content, 'initrd'));
        meta.initrd = { sha256: await sha256File(opts.initrd), size: (await fsp.stat(opts.initrd)).size };
      }
      if (opts.cmdline) meta.cmdline = opts.cmdline;
      await writeFileAtomic(path.join(content, METADATA), JSON.stringify(meta, null, 2) + '\n');
      await fsyncDir(content);
      await withLock(path.join(this.opts.kernelRoot, '.locks', id), () => this.commit(staging, held, content, dest, opts.overwrite ? undefined : `kernel ${id} already exists: choose another --id or pass --overwrite`), this.lockOpts());
    } finally {
      await done();
    }
    return this.getKernel(id);
  }

  async removeKernel(id: string): Promise<void> {
    this.refuseWriteWhenActing();
    const dir = this.kernelDir(id);
    if (!(await exists(dir))) {
      const shared = this.opts.sharedKernelRoot;
      if (shared && (await exists(path.join(shared, id)))) throw new UserError(`kernel ${id} is in the shared kernel directory ${shared} (read only here): remove it there as its owner`);
      throw new UserError(`kernel ${id} not found: list kernels with 'firebuild kernel ls'`);
    }
    await withLock(path.join(this.opts.kernelRoot, '.locks', id), () => fsp.rm(dir, { recursive: true, force: true }), this.lockOpts());
  }
}

async function visibleDirs(dir: string): Promise<string[]> {
  const entries = await fsp.readdir(dir, { withFileTypes: true }).catch((err) => {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  });
  return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
}

async function removeEmptyParents(dir: string, stop: string): Promise<void> {
  let cur = dir;
  while (path.resolve(cur) !== path.resolve(stop) && cur.startsWith(stop)) {
    try {
      await fsp.rmdir(cur);
    } catch {
      return;
    }
    cur = path.dirname(cur);
  }
}

async function readJson<T>(file: string, pick: (m: Awaited<ReturnType<typeof metadataModule>>) => z.ZodType<T>, what: string, trust?: Trust): Promise<T> {
  let text: string;
  try {
    text = trust ? await readChecked(file, { what, trust, maxBytes: ACTING_MAX_BYTES.metadata }) : await fsp.readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof UnsafeFileError) throw err;
    throw new UserError(`${what} ${file} cannot be read (${errnoCode(err) ?? 'error'}): remove the entry or restore the file`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UserError(`corrupt ${what} ${file}: not valid JSON (${(err as Error).message}); remove the entry or restore the file`);
  }
  const m = await metadataModule();
  const { METADATA_SCHEMA_VERSION } = m;
  if (typeof raw === 'object' && raw !== null && 'schemaVersion' in raw && typeof raw.schemaVersion === 'number' && raw.schemaVersion > METADATA_SCHEMA_VERSION) {
    throw new UserError(`${what} ${file} has schemaVersion ${raw.schemaVersion}, newer than this firebuild understands (${METADATA_SCHEMA_VERSION}): upgrade firebuild`);
  }
  const parsed = pick(m).safeParse(raw);
  if (!parsed.success) {
    throw new UserError(`corrupt ${what} ${file}: ${m.describeZodError(parsed.error)}; remove the entry or restore the file`);
  }
  return parsed.data;
}

/**
 * A stored entry whose metadata cannot be read or fails its schema is corrupt: said so, with the command
 * that removes it (never "not found", which would send the user looking elsewhere). A newer schema is not
 * corruption (its own message says to upgrade).
 */
function corruptEntry(kind: 'image', tag: string, err: unknown): unknown {
  if (!(err instanceof UserError) || err instanceof UnsafeFileError || /newer than this firebuild/.test(err.message)) return err;
  const reason = err.message.replace(/^corrupt /, '').replace(/[;:] remove the entry or restore the file$/, '');
  return new UserError(`stored ${kind} ${tag} is corrupt: ${reason}: remove it with 'firebuild ${kind} rm ${tag}', then build or pull it again`, { cause: err });
}

/** `trust`: root reading another user's store (the file opened and checked, util/safe-open.ts). */
export function readImageMetadata(file: string, trust?: Trust): Promise<ImageMetadata> {
  return readJson(file, (m) => m.ImageMetadataSchema as unknown as z.ZodType<ImageMetadata>, 'image metadata', trust);
}

export function readKernelMetadata(file: string, trust?: Trust): Promise<KernelMetadata> {
  return readJson(file, (m) => m.KernelMetadataSchema, 'kernel metadata', trust);
}

/** ELF vmlinux (Firecracker, PVH) or a bzImage (QEMU with an initrd). */
async function kernelFormat(file: string): Promise<'elf' | 'bzimage' | 'unknown'> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(0x208);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead >= 4 && buf.readUInt32BE(0) === 0x7f454c46) return 'elf';
    if (bytesRead >= 0x206 && buf.toString('latin1', 0x202, 0x206) === 'HdrS') return 'bzimage';
    return 'unknown';
  } finally {
    await fh.close();
  }
}
