import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Step } from '../../dockerfile/plan-schema.js';
import type { GuestMount } from '../../guest/run-config.js';
import { Debugfs } from '../../rootfs/debugfs.js';
import { Ext4Image } from '../../rootfs/ext4-read.js';
import { Ext4Tools } from '../../rootfs/ext4.js';
import type { BuildContext } from '../../source/context.js';
import type { Downloads } from '../../source/downloads.js';
import { UserError } from '../../util/errors.js';
import { copySparse } from '../../util/fs.js';
import type { Logger } from '../../util/logger.js';
import { applyCopy } from '../vm-fs.js';
import { cacheMountBytes, lockFile, makeVolume, repairVolume, touchMeta, volumeClean, volumeFiles, type Unlock } from './cache-volumes.js';
import type { CacheMount, BindMount } from './mounts.js';
import type { PlannedMount } from './plan.js';

/**
 * RUN --mount=type=cache|bind|tmpfs made ready for one build VM: every ext4 a mount reads becomes an extra
 * drive (vdc, vdd, ... in order), the guest init mounts them (and the tmpfs) at the targets (GuestMount).
 *  - cache: the id's volume (cache-volumes.ts), locked for the step: `shared` and `locked` wait for the
 *    writer before them (an ext4 volume has one writer), `private` takes a throwaway empty volume when
 *    another build holds it, `ro` takes a shared lock and a read-only drive. A new volume is seeded from
 *    `from` (+ `source`) as COPY --from would copy it.
 *  - bind from a stage or an image: its ext4 as a read-only drive (a copy for rw, whose writes are then
 *    discarded; and with Firecracker, whose jail must not own the build's files), the source subpath
 *    found through the image's own symlinks.
 *  - bind from the build context: the source subtree (after .dockerignore) written into a fresh ext4 as a
 *    COPY would write it: nothing of the context is trusted beyond being data.
 *  - tmpfs: nothing on the host.
 */

export interface MountInputs {
  /** Where cache volumes live (cache-volumes.ts cacheVolumesDir). */
  cacheRoot: string;
  /** The ext4 of an earlier stage, or of an image (materialized once per build). */
  stageImage: (stage: number) => string | undefined;
  externalImage: (ref: string) => Promise<string>;
  context: BuildContext;
  downloads: Downloads;
  /** The step's scratch directory (removed after the step). */
  scratch: string;
  backend: 'qemu' | 'firecracker';
  timeoutMs: number;
  log: Logger;
  label: string;
  where: { file: string; line: number };
}

export interface PreparedMounts {
  drives: { path: string; readOnly: boolean }[];
  guest: GuestMount[];
  /** The mount points the targets need in the image (made before the step, removed after when left empty). */
  stubs: { path: string; type: 'dir' | 'file' }[];
  /** After the VM, before its jail goes: the writes of a copied (Firecracker) cache volume taken back, owners restored. */
  afterVm: (jailedDrive: (i: number) => string | undefined) => Promise<void>;
  /** The locks released (always, also on failure). */
  release: () => Promise<void>;
}

const dev = (i: number): string => `vd${String.fromCharCode('c'.charCodeAt(0) + i)}`;

/** A synthetic COPY of `source` from a stage/image or the context into `/` of `volume`, as COPY would write it. */
async function copyInto(volume: string, source: string, from: { stage?: number; image?: string; file?: string } | undefined, resources: Step['resources'], x: MountInputs, n: string): Promise<void> {
  const scratch = path.join(x.scratch, `copy-${n}`);
  await fsp.mkdir(scratch, { recursive: true });
  const kind = from?.stage !== undefined ? 'stage' : 'image';
  const step: Step = {
    ...x.where, keyword: 'COPY', original: `COPY (RUN --mount source ${source})`, sources: [source], dest: '/',
    resources: resources ?? [{ source, kind, path: source, ...(from?.stage !== undefined ? { stage: from.stage } : { image: from?.image ?? '' }) }],
  };
  await applyCopy(volume, { step, dest: '/', context: x.context, ...(from?.file ? { fromImage: from.file } : {}), owner: { uid: 0, gid: 0 }, chowned: false, scratch, downloads: x.downloads });
  await fsp.rm(scratch, { recursive: true, force: true });
}

async function fromFile(from: Exclude<BindMount['from'], { kind: 'context' }>, x: MountInputs): Promise<string> {
  if (from.kind === 'stage') {
    const f = x.stageImage(from.stage);
    if (!f) throw new UserError(`${x.label}: stage ${from.stage} is not built before this step`, x.where);
    return f;
  }
  return x.externalImage(from.ref);
}

/** A cache mount's volume: the shared one under its lock, or a throwaway (private while locked, ro while missing). */
async function cacheVolume(m: CacheMount, i: number, x: MountInputs, unlocks: Unlock[], restores: { file: string; uid: number; gid: number }[]): Promise<{ file: string; shared?: string }> {
  await fsp.mkdir(x.cacheRoot, { recursive: true, mode: 0o700 });
  const f = volumeFiles(x.cacheRoot, m.id);
  const what = `the cache mount ${m.id}`;
  const bytes = cacheMountBytes();
  const fresh = async (file: string): Promise<void> => {
    await makeVolume(file, { bytes, mode: m.mode, uid: m.uid, gid: m.gid, scratch: x.scratch, log: x.log });
    if (m.from) {
      const src = await fromFile(m.from as Exclude<BindMount['from'], { kind: 'context' }>, x);
      await copyInto(file, m.source, { ...(m.from.kind === 'stage' ? { stage: m.from.stage } : { image: (m.from as { ref: string }).ref }), file: src }, undefined, x, `seed${i}`);
      // The copy made the root 0755 root: the mount's own mode and owner again.
      await new Debugfs(file).write([`sif / mode 0${(0o40000 | m.mode).toString(8)}`, `sif / uid ${m.uid}`, `sif / gid ${m.gid}`]);
    }
  };
  const throwaway = async (why: string): Promise<{ file: string }> => {
    x.log.info(`${x.label}: cache ${m.id} ${why}: this step gets an empty one, discarded after it`);
    const file = path.join(x.scratch, `cache-${i}.ext4`);
    await fresh(file);
    return { file };
  };
  if (m.readonly) {
    const unlock = await lockFile(f.lock, { shared: true, wait: true, timeoutMs: x.timeoutMs, what });
    unlocks.push(unlock!);
    if (!(await fsp.stat(f.img).then(() => true, () => false))) return throwaway('does not exist yet (ro)');
    if (!(await volumeClean(f.img, x.log))) return throwaway('was left unclean by a killed build (ro: not repaired)');
    await touchMeta(f.meta, m.id);
    return { file: f.img, shared: f.img };
  }
  const unlock = await lockFile(f.lock, { shared: false, wait: m.sharing !== 'private', timeoutMs: x.timeoutMs, what });
  if (!unlock) return throwaway('is in use by another build (sharing=private)');
  unlocks.push(unlock);
  const exists = await fsp.stat(f.img).then(() => true, () => false);
  if (exists && !(await repairVolume(f.img, x.log))) {
    x.log.warn(`${x.label}: cache ${m.id} was damaged beyond e2fsck -p: it starts empty again`);
    await fsp.rm(f.img, { force: true });
  }
  if (!exists || !(await fsp.stat(f.img).then(() => true, () => false))) {
    const tmp = `${f.img}.tmp-${process.pid}`;
    try {
      await fresh(tmp);
      await fsp.rename(tmp, f.img);
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }
  await touchMeta(f.meta, m.id);
  const st = await fsp.stat(f.img);
  restores.push({ file: f.img, uid: st.uid, gid: st.gid });
  return { file: f.img, shared: f.img };
}

export async function prepareMounts(mounts: readonly PlannedMount[], x: MountInputs): Promise<PreparedMounts> {
  const unlocks: Unlock[] = [];
  const restores: { file: string; uid: number; gid: number }[] = [];
  const out: PreparedMounts = {
    drives: [], guest: [], stubs: [],
    afterVm: async (jailed) => {
      for (const [i, d] of out.drives.entries()) {
        const r = restores.find((x) => x.file === d.path);
        if (!r || d.readOnly) continue;
        // Firecracker's jail holds the drive as a hard link, or as a copy where the jail is on another file system.
        const j = jailed(i);
        if (j) {
          const [a, b] = await Promise.all([fsp.stat(j).catch(() => undefined), fsp.stat(d.path)]);
          if (a && (a.ino !== b.ino || a.dev !== b.dev)) await copySparse(j, d.path);
        }
        await fsp.chown(d.path, r.uid, r.gid).catch(() => undefined);
      }
    },
    release: async () => {
      for (const u of unlocks.splice(0).reverse()) await u();
    },
  };
  try {
    for (const [i, m] of mounts.entries()) {
      if (m.type === 'tmpfs') {
        out.guest.push({ kind: 'tmpfs', target: m.target, ro: false, ...(m.size ? { size: m.size } : {}) });
        out.stubs.push({ path: m.target, type: 'dir' });
        continue;
      }
      const d = dev(out.drives.length);
      if (m.type === 'cache') {
        const v = await cacheVolume(m, i, x, unlocks, restores);
        out.drives.push({ path: v.file, readOnly: m.readonly });
        out.guest.push({ kind: 'ext4', dev: d, source: '/', target: m.target, ro: m.readonly });
        out.stubs.push({ path: m.target, type: 'dir' });
        continue;
      }
      if (m.from.kind === 'context') {
        // The subtree, written as COPY writes it: a directory's content at the root, a file by its name.
        const file = path.join(x.scratch, `bind-${i}.ext4`);
        const res = m.resources ?? [];
        const size = res.reduce((a, r) => a + (r.size ?? 0), 0);
        const files = res.reduce((a, r) => a + (r.files ?? 1), 0);
        const root = path.join(x.scratch, `bindroot-${i}`);
        await fsp.mkdir(root, { recursive: true });
        await new Ext4Tools(x.log).mkfs({ root, image: file, sizeBytes: Math.ceil(size * 1.2) + files * 8192 + 32 * 1024 ** 2, inodes: files * 2 + 1024, label: 'fbbind' });
        await fsp.rm(root, { recursive: true, force: true });
        await copyInto(file, m.source === '/' ? '.' : m.source.slice(1), undefined, res, x, `bind${i}`);
        const single = res.length === 1 && res[0]!.kind !== 'dir';
        const source = single ? `/${path.posix.basename(res[0]!.path ?? m.source)}` : '/';
        out.drives.push({ path: file, readOnly: !m.readwrite });
        out.guest.push({ kind: 'ext4', dev: d, source, target: m.target, ro: !m.readwrite, ...(single ? { file: true } : {}) });
        out.stubs.push({ path: m.target, type: single ? 'file' : 'dir' });
        continue;
      }
      let file = await fromFile(m.from, x);
      const img = await Ext4Image.open(file);
      let found: Awaited<ReturnType<Ext4Image['locate']>>;
      try {
        found = await img.locate(m.source);
      } finally {
        await img.close();
      }
      const name = m.from.kind === 'stage' ? `stage ${m.from.stage}` : `image ${m.from.ref}`;
      if (!found.entry) throw new UserError(`${x.label}: the bind source ${m.source} does not exist in ${name}`, x.where);
      if (found.entry.type !== 'dir' && found.entry.type !== 'file') throw new UserError(`${x.label}: the bind source ${m.source} in ${name} is not a file or a directory`, x.where);
      // A copy for rw (writes discarded) and for Firecracker (its jail takes the drive's ownership).
      if (m.readwrite || x.backend === 'firecracker') {
        const copy = path.join(x.scratch, `bind-${i}.ext4`);
        await copySparse(file, copy);
        file = copy;
      }
      const isFile = found.entry.type === 'file';
      out.drives.push({ path: file, readOnly: !m.readwrite });
      out.guest.push({ kind: 'ext4', dev: d, source: found.path, target: m.target, ro: !m.readwrite, ...(isFile ? { file: true } : {}) });
      out.stubs.push({ path: m.target, type: isFile ? 'file' : 'dir' });
    }
  } catch (err) {
    await out.release();
    throw err;
  }
  return out;
}
