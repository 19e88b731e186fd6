import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { Debugfs } from '../../rootfs/debugfs.js';
import { Ext4Tools } from '../../rootfs/ext4.js';
import { own, throwIfCancelled } from '../../util/cleanup.js';
import { UserError } from '../../util/errors.js';
import { exec } from '../../util/exec.js';
import { diskUsage } from '../../util/fs.js';
import type { Logger } from '../../util/logger.js';
import { parseSize } from '../../util/size.js';

/**
 * The volumes of `RUN --mount=type=cache`: one ext4 file per cache id under `<cacheDir>/vm-mounts/`
 * (`<sha256(id)>.ext4`, its `.json` naming the id and when it was last used, its `.lock`), shared by
 * every build of any tag on this host and never part of an image or a step's key. Sparse, with a fixed
 * size (FIREBUILD_CACHE_MOUNT_SIZE, default 10 GiB): only what is written takes space. A volume is only
 * ever mounted inside build VMs; the host runs e2fsprogs on it (mkfs, e2fsck, debugfs on a fresh one),
 * never mounts or extracts it.
 *
 * An ext4 volume has one writer at a time: writers take an exclusive flock(2) on its lock file, readers
 * (`ro`) a shared one. The lock is held by a small `flock` child process whose stdin is this process's
 * pipe: it ends, and the kernel drops the lock, when this process ends however it ends (SIGKILL too), so a
 * killed build never leaves a cache locked.
 */

export const DEFAULT_CACHE_MOUNT_BYTES = 10 * 1024 ** 3;

export function cacheMountBytes(env: NodeJS.ProcessEnv = process.env): number {
  return env.FIREBUILD_CACHE_MOUNT_SIZE ? parseSize(env.FIREBUILD_CACHE_MOUNT_SIZE, 'FIREBUILD_CACHE_MOUNT_SIZE') : DEFAULT_CACHE_MOUNT_BYTES;
}

export function cacheVolumesDir(cacheDir: string): string {
  return path.join(cacheDir, 'vm-mounts');
}

export interface CacheVolumeInfo { id: string; file: string; bytes: number; lastUsed: string; inUse: boolean }

interface Meta { id: string; created: string; lastUsed: string }

const NAME = /^([0-9a-f]{64})\.json$/;

export function volumeFiles(dir: string, id: string): { img: string; meta: string; lock: string } {
  const h = createHash('sha256').update(id).digest('hex');
  return { img: path.join(dir, `${h}.ext4`), meta: path.join(dir, `${h}.json`), lock: path.join(dir, `${h}.lock`) };
}

export type Unlock = () => Promise<void>;

/**
 * flock(2) on `file` held by a `flock` child: exclusive or shared; `wait` up to `timeoutMs` (then a
 * UserError naming `what`), else undefined at once when another holds it. Cancel-safe: owned until released.
 */
export async function lockFile(file: string, o: { shared: boolean; wait: boolean; timeoutMs: number; what: string }): Promise<Unlock | undefined> {
  throwIfCancelled();
  const argv = [o.shared ? '-s' : '-x', ...(o.wait ? ['-w', String(Math.max(1, Math.ceil(o.timeoutMs / 1000)))] : ['-n']), '-E', '75', '-o', file, 'sh', '-c', 'echo held; exec cat >/dev/null'];
  const child = spawn('flock', argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => resolve(code));
    child.on('error', () => resolve(-1));
  });
  const release = own(`the lock of ${o.what}`, () => {
    child.kill('SIGKILL');
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const held = await new Promise<boolean>((resolve) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('held')) resolve(true);
    });
    void exited.then(() => resolve(false));
  });
  if (held) {
    return async () => {
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      release();
    };
  }
  const code = await exited;
  release();
  throwIfCancelled();
  if (code === 75 || code === 1) {
    if (o.wait) throw new UserError(`${o.what} stayed locked by another build for ${Math.round(o.timeoutMs / 1000)} s: wait for it, or use sharing=private`);
    return undefined;
  }
  throw new UserError(`cannot lock ${o.what} (flock exit ${code}: ${err.trim().split('\n')[0] || 'no message'}): is util-linux's flock installed?`);
}

/** A fresh, empty cache volume (sparse, journalled), its root owned and moded as asked and without lost+found. */
export async function makeVolume(file: string, o: { bytes: number; mode: number; uid: number; gid: number; scratch: string; log: Logger }): Promise<void> {
  const root = path.join(o.scratch, `volroot-${path.basename(file)}`);
  await fsp.mkdir(root, { recursive: true });
  try {
    await new Ext4Tools(o.log).mkfs({ root, image: file, sizeBytes: o.bytes, label: 'fbcache', journal: true });
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
  await fsp.chmod(file, 0o600);
  await new Debugfs(file).write([`sif / mode 0${(0o40000 | o.mode).toString(8)}`, `sif / uid ${o.uid}`, `sif / gid ${o.gid}`, 'rmdir /lost+found']);
}

/** `e2fsck -p` (a killed writer's journal replayed, safe fixes); false when it needs more than that. */
export async function repairVolume(file: string, log: Logger): Promise<boolean> {
  const r = await exec('e2fsck', ['-fp', file], { allowFailure: true, logger: log });
  return r.code < 4;
}

/** `e2fsck -fn`: is the volume clean (for a reader, which must not write it)? */
export async function volumeClean(file: string, log: Logger): Promise<boolean> {
  const r = await exec('e2fsck', ['-fn', file], { allowFailure: true, logger: log });
  return r.code === 0;
}

export async function touchMeta(metaFile: string, id: string): Promise<void> {
  const now = new Date().toISOString();
  const old = await fsp.readFile(metaFile, 'utf8').then((t) => JSON.parse(t) as Meta, () => undefined);
  await fsp.writeFile(metaFile, JSON.stringify({ id, created: old?.created ?? now, lastUsed: now }) + '\n', { mode: 0o600 });
}

/** Every cache volume under `cacheDir`, with whether a build holds it now. */
export async function listCacheVolumes(cacheDir: string): Promise<CacheVolumeInfo[]> {
  const dir = cacheVolumesDir(cacheDir);
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  const out: CacheVolumeInfo[] = [];
  for (const n of names.sort()) {
    const m = NAME.exec(n);
    if (!m) continue;
    const meta = await fsp.readFile(path.join(dir, n), 'utf8').then((t) => JSON.parse(t) as Meta, () => undefined);
    if (!meta || typeof meta.id !== 'string') continue;
    const f = volumeFiles(dir, meta.id);
    const bytes = await diskUsage(f.img).then((u) => u.allocated, () => 0);
    const unlock = await lockFile(f.lock, { shared: true, wait: false, timeoutMs: 0, what: `cache ${meta.id}` });
    await unlock?.();
    out.push({ id: meta.id, file: f.img, bytes, lastUsed: meta.lastUsed, inUse: !unlock });
  }
  return out;
}

/**
 * Remove cache volumes (all, or those whose id is in `ids`): each under its exclusive lock, taken without
 * waiting; one a build holds now is skipped and reported. The lock files stay (see below).
 */
export async function pruneCacheVolumes(cacheDir: string, ids?: readonly string[]): Promise<{ removed: string[]; busy: string[] }> {
  const dir = cacheVolumesDir(cacheDir);
  const removed: string[] = [];
  const busy: string[] = [];
  for (const v of await listCacheVolumes(cacheDir)) {
    if (ids && !ids.includes(v.id)) continue;
    const f = volumeFiles(dir, v.id);
    const unlock = await lockFile(f.lock, { shared: false, wait: false, timeoutMs: 0, what: `cache ${v.id}` });
    if (!unlock) {
      busy.push(v.id);
      continue;
    }
    try {
      await fsp.rm(f.meta, { force: true });
      await fsp.rm(f.img, { force: true });
      // The lock file stays (empty): a build already waiting on it must keep waiting on the same lock, not
      // race a later build that would make a new one.
    } finally {
      await unlock();
    }
    removed.push(v.id);
  }
  return { removed, busy };
}
