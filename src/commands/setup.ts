import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildWithDocker } from './build.js';
import { doctor, missingRequired } from './doctor.js';
import { FRAGMENT, kernelBuild } from './kernel-build.js';
import { planCommand } from './plan.js';
import { profileCreate } from './profile.js';
import { BACKEND_CHOICES } from './vm-choices.js';
import { defaultCacheDir } from '../profile/profile.js';
import { openStorage, resolveSettings, type Settings } from '../profile/settings.js';
import { importPackagedImage, importPackagedKernel, packageImage, packageKernel } from '../store/package.js';
import type { StorageProvider } from '../store/provider.js';
import { parseTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';
import type { Logger } from '../util/logger.js';
import { rootAccess, requireRootAccess } from '../util/privilege.js';
import { detectKvm, type KvmVerdict } from '../vmm/kvm.js';

/**
 * The use cases of preparing a runner (the setup action): check the host, provide a kernel and base
 * images (restored from a cache by their inputs' digests, else built), write the profile later steps
 * read, and package what was built for the cache. The cache itself is the caller's (the Actions cache):
 * it comes in as `restore`, which fills a directory for a key, and the packaging functions fill one for a save.
 */
/** The `vmm` input's choices: the backends' one list (vmm/backends.ts). */
export const VMMS = BACKEND_CHOICES;
export const ACCELS = ['kvm', 'tcg', 'auto'] as const;
export type Vmm = (typeof VMMS)[number];
export type SetupAccel = (typeof ACCELS)[number];

const ARCH = os.arch() === 'arm64' ? 'aarch64' : 'x86_64';

/** Restore the cache entry `key` and hand its directory to `store`; false on a miss or an entry that fails its digests. */
export type CacheRestore = (key: string, store: (dir: string) => Promise<unknown>) => Promise<boolean>;

/** A cache key's digest part: sha256 over the parts, 20 hex digits. */
function digest(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex').slice(0, 20);
}

export interface RunnerCheck {
  kvm: KvmVerdict;
  vmm: 'qemu' | 'firecracker';
  /** One line per part the doctor checked. */
  lines: string[];
}

/** The runner: KVM, the VMM `auto` picks, and the parts the requested work needs (one error naming what is missing). */
export async function checkRunner(o: { vmm: Vmm; accel: SetupAccel; profileConfDir: string; needDocker: boolean }): Promise<RunnerCheck> {
  const kvm = await detectKvm();
  // The jailer needs root: a runner's unprivileged user gets Firecracker only through the privileged helper.
  if (o.vmm === 'firecracker') await requireRootAccess("backend 'firecracker' (its jailer)", 'set backend: qemu');
  const vmm = o.vmm === 'auto' ? (kvm.usable && o.accel !== 'tcg' && (await rootAccess()) === 'root' ? 'firecracker' : 'qemu') : o.vmm;
  if (vmm === 'firecracker' && o.accel === 'tcg') throw new UserError(`backend 'firecracker' needs KVM and accel is 'tcg': use backend qemu for TCG, or accel kvm on a KVM runner`);
  const needKvm = o.accel === 'kvm' || vmm === 'firecracker';
  const settings = resolveSettings({}, undefined);
  const checks = await doctor({ settings, storage: openStorage(settings), profileConfDir: o.profileConfDir, require: [...(needKvm ? ['kvm'] : []), ...(o.needDocker ? ['docker'] : [])] });
  // With Firecracker the host needs no QEMU: the vmm check is settled once Firecracker is in place.
  const missing = missingRequired(checks).filter((c) => !(c.part === 'vmm' && vmm === 'firecracker'));
  if (missing.length) {
    const kvmMissing = missing.find((c) => c.part === 'kvm');
    const parts = missing.map((c) => `${c.part} (${c.detail}${c.fix ? `; fix: ${c.fix}` : ''})`).join('; ');
    throw new UserError(kvmMissing
      ? `KVM is not usable on this runner: ${kvmMissing.detail}. Run on a KVM-capable runner (see runner-setup/), or set accel: tcg and backend: qemu (slow; for tests)${missing.length > 1 ? `; also missing: ${missing.filter((c) => c !== kvmMissing).map((c) => c.part).join(', ')}` : ''}`
      : `this runner lacks ${parts}`);
  }
  return { kvm, vmm, lines: checks.map((c) => `${c.status.padEnd(7)} ${c.part}: ${c.detail}`) };
}

/** The Debian linux-source package's version, so that a new package is a new cache key. */
async function linuxSourceIdentity(version: string): Promise<string> {
  const r = await exec('dpkg-query', ['-W', '-f=${Version}', `linux-source-${version}`], { allowFailure: true }).catch(() => undefined);
  if (r && r.code === 0 && r.stdout.trim()) return `deb:linux-source-${version}=${r.stdout.trim()}`;
  const st = await fsp.stat(`/usr/src/linux-source-${version}.tar.xz`).catch(() => undefined);
  if (!st) throw new UserError(`/usr/src/linux-source-${version}.tar.xz not found: install Debian's linux-source-${version} package, or import a kernel with kernel-path`);
  return `deb:linux-source-${version}:${st.size}`;
}

export interface KernelRequest {
  id: string;
  /** Import this vmlinux (and initrd)... */
  path?: string;
  initrd?: string;
  /** ...or build from Debian's linux-source-<version> (restored from the cache when its key matches). */
  version?: string;
  cacheVersion: string;
  /** Undefined: no cache. */
  restore?: CacheRestore;
}

/** The kernel the runner boots: imported, restored, built, or already stored. `key` is set when a built kernel should be saved. */
export async function provideKernel(storage: StorageProvider, k: KernelRequest, log: Logger): Promise<{ from: 'imported' | 'cache' | 'built' | 'store'; key?: string; sha256: string }> {
  let from: 'imported' | 'cache' | 'built' | 'store' = 'store';
  let key: string | undefined;
  if (k.path) {
    const stored = await storage.importKernel(k.id, path.resolve(k.path), { overwrite: true, ...(k.initrd ? { initrd: path.resolve(k.initrd) } : {}) });
    from = 'imported';
    log.info('kernel imported', { id: stored.id, sha256: stored.metadata.vmlinux.sha256 });
  } else if (k.version) {
    if (!/^\d+\.\d+$/.test(k.version)) throw new UserError(`input 'kernel-version' is '${k.version}': give a kernel series such as 6.1`);
    const cacheKey = `firebuild-kernel-${k.cacheVersion}-${ARCH}-${digest(await linuxSourceIdentity(k.version), await fsp.readFile(FRAGMENT, 'utf8'))}`;
    if (k.restore && (await k.restore(cacheKey, (dir) => importPackagedKernel(storage, dir, k.id, true)))) {
      from = 'cache';
    } else {
      await kernelBuild(storage, { id: k.id, version: k.version, cacheDir: defaultCacheDir(), overwrite: true }, log);
      from = 'built';
      if (k.restore) key = cacheKey;
    }
  }
  const have = await storage.listKernels();
  if (!have.some((x) => x.id === k.id && !x.error)) {
    throw new UserError(`no kernel ${k.id} on this runner: set kernel-path (import a vmlinux) or kernel-version (build one, cached)`);
  }
  const kernel = await storage.getKernel(k.id);
  return { from, ...(key ? { key } : {}), sha256: kernel.metadata.vmlinux.sha256 };
}

/**
 * A base image's cache key: the digest of its build plan (instructions after expansion, build args, and
 * the sha256 of every COPY/ADD source), with the host-specific paths left out.
 */
export async function baseosKey(dockerfile: string, tag: string, cacheVersion: string, log: Logger): Promise<string> {
  const plan = await planCommand({ dockerfile, cacheDir: defaultCacheDir() }, log);
  const stable = JSON.stringify(plan, (k, v: unknown) => (['file', 'source', 'context', 'dockerfile'].includes(k) && typeof v !== 'number' ? undefined : v));
  return `firebuild-baseos-${cacheVersion}-${tag.replace(/[^A-Za-z0-9._-]/g, '-')}-${digest(stable)}`;
}

/** A base image: restored from the cache when its plan's digest matches, else built with the Docker engine (`key` set: save it). */
export async function provideBaseImage(storage: StorageProvider, b: { tag: string; dockerfile: string; cacheVersion: string; restore?: CacheRestore }, log: Logger): Promise<{ from: 'cache' | 'built'; sha256: string; key?: string }> {
  const key = await baseosKey(b.dockerfile, b.tag, b.cacheVersion, log);
  if (b.restore && (await b.restore(key, (dir) => importPackagedImage(storage, dir, { tag: b.tag, overwrite: true, sourceRef: `actions-cache:${key}` })))) {
    return { from: 'cache', sha256: (await storage.getImage(b.tag)).metadata.rootfs.sha256 };
  }
  const r = await buildWithDocker({ type: 'baseos', engine: 'docker', dockerfile: b.dockerfile, tag: parseTag(b.tag), journal: false, overwrite: true, cacheDir: defaultCacheDir() }, storage, log);
  return { from: 'built', sha256: r.image.metadata.rootfs.sha256, ...(b.restore ? { key } : {}) };
}

/** The profile every later step reads, written last (a failed setup leaves the previous one), with the directories it names. */
export async function writeRunnerProfile(settings: Settings, o: { name: string; profileConfDir: string; flags: { binaryFirecracker?: string; binaryJailer?: string; registryMirror?: string[] } }, log: Logger): Promise<{ file: string }> {
  // The chroot base only for the jailer (root's): a QEMU runner's unprivileged user has no use for it.
  const dirs = [...(o.flags.binaryJailer ? [settings.chrootBase] : []), settings.runCache, ...Object.values(settings.storageProperties)];
  for (const d of dirs) await fsp.mkdir(d, { recursive: true });
  return profileCreate({ name: o.name, profileConfDir: o.profileConfDir, flags: o.flags, overwrite: true }, log);
}

/**
 * Package a stored kernel or base image into `dir` for a cache save; `home` is the store's settings as the
 * packing step saw them. `sha256` is the digest setup saw when it made the entry (its vmlinux, or its
 * rootfs): the job's later steps ran in between, so an entry whose stored digest is no longer that one is
 * not packaged (what is restored is then checked against that same metadata, so the pair stays honest).
 */
export async function packForCache(kind: 'kernel' | 'baseos', name: string, home: Record<string, string>, dir: string, sha256?: string): Promise<void> {
  const flags = { storageProviderPropertyString: Object.entries(home).map(([k, v]) => `${k}=${v}`) };
  const storage = openStorage(resolveSettings(flags, undefined));
  if (sha256 !== undefined) {
    const now = kind === 'kernel' ? (await storage.getKernel(name)).metadata.vmlinux.sha256 : (await storage.getImage(name)).metadata.rootfs.sha256;
    if (now !== sha256) throw new UserError(`the stored ${kind === 'kernel' ? 'kernel' : 'image'} ${name} changed after setup made it (sha256 ${now}, setup saw ${sha256}): not saved to the cache`);
  }
  if (kind === 'kernel') await packageKernel(storage, name, dir);
  else await packageImage(storage, name, dir);
}
