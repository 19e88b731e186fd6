import * as core from '@actions/core';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildWithDocker } from '../../commands/build.js';
import { doctor, missingRequired } from '../../commands/doctor.js';
import { FRAGMENT, kernelBuild } from '../../commands/kernel-build.js';
import { planCommand } from '../../commands/plan.js';
import { profileCreate } from '../../commands/profile.js';
import { defaultCacheDir, defaultProfileConfDir, validateProfileName } from '../../profile/profile.js';
import { openStorage, resolveSettings, type Settings } from '../../profile/settings.js';
import { importPackagedImage, importPackagedKernel, packageImage, packageKernel } from '../../store/package.js';
import { parseTag } from '../../store/tag.js';
import { UserError } from '../../util/errors.js';
import { exec, which } from '../../util/exec.js';
import { sha256File } from '../../util/fs.js';
import { detectKvm } from '../../vmm/kvm.js';
import { ActionsLogger, actionsWorkDir, boolInput, cacheVersionInput, cacheRestore, cacheSave, input, listInput, summaryTable, withCacheEntryDir } from '../common.js';

/**
 * The setup action: check the runner (the doctor's checks; one annotation when KVM or a part is
 * missing), install or locate Firecracker and its jailer at a pinned version (checksum-verified, kept in
 * the runner's tool cache), provide a kernel (import, build, or restore from the Actions cache), build or
 * restore base images, and write the profile later steps use (exported as FIREBUILD_PROFILE). Kernels and
 * base images are cached under keys made from their inputs' digests; the post step saves what this job built.
 */
export const VMMS = ['auto', 'qemu', 'firecracker'] as const;
export const ACCELS = ['kvm', 'tcg', 'auto'] as const;
export const INSTALL_CHOICES = ['auto', 'true', 'false'] as const;
export const FIRECRACKER_VERSION = 'v1.10.1';
export const FIRECRACKER_URL = 'https://github.com/firecracker-microvm/firecracker/releases/download/{version}/firecracker-{version}-{arch}.tgz';
export const STATE_CACHE_SAVES = 'cache-saves';

export interface SetupInputs {
  vmm: (typeof VMMS)[number];
  accel: (typeof ACCELS)[number];
  installFirecracker: (typeof INSTALL_CHOICES)[number];
  firecrackerVersion: string;
  firecrackerSha256: string;
  firecrackerUrl: string;
  kernelId: string;
  kernelPath: string;
  kernelInitrd: string;
  kernelVersion: string;
  baseos: { tag: string; dockerfile: string }[];
  profile: string;
  profileConfDir: string;
  cache: boolean;
  cacheVersion: string;
}

export function getInputs(env: NodeJS.ProcessEnv = process.env): SetupInputs {
  const version = input('firecracker-version', { default: FIRECRACKER_VERSION });
  if (!/^v\d+\.\d+\.\d+$/.test(version)) throw new UserError(`input 'firecracker-version' is '${version}': give a release such as ${FIRECRACKER_VERSION}`);
  const sha = input('firecracker-sha256').toLowerCase();
  if (sha && !/^[0-9a-f]{64}$/.test(sha)) throw new UserError(`input 'firecracker-sha256' is not a sha256 (64 hex digits): copy it from the release's SHA256SUMS`);
  const kernelPath = input('kernel-path');
  const kernelVersion = input('kernel-version');
  if (kernelPath && kernelVersion) throw new UserError(`inputs 'kernel-path' and 'kernel-version' exclude each other: import a kernel or build one`);
  const kernelId = input('kernel-id', { default: 'default' });
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(kernelId)) throw new UserError(`input 'kernel-id' is '${kernelId}': use letters, digits, '.', '_' and '-'`);
  const baseos = listInput('baseos').map((line) => {
    const eq = line.indexOf('=');
    if (eq <= 0 || eq === line.length - 1) throw new UserError(`input 'baseos' line '${line}' is malformed: write TAG=DOCKERFILE, e.g. acme/debian:12=baseos/debian/Dockerfile`);
    const tag = line.slice(0, eq).trim();
    parseTag(tag);
    return { tag, dockerfile: line.slice(eq + 1).trim() };
  });
  const cacheVersion = cacheVersionInput();
  return {
    vmm: input('vmm', { choices: VMMS, default: 'auto' }) as SetupInputs['vmm'],
    accel: input('accel', { choices: ACCELS, default: 'kvm' }) as SetupInputs['accel'],
    installFirecracker: input('install-firecracker', { choices: INSTALL_CHOICES, default: 'auto' }) as SetupInputs['installFirecracker'],
    firecrackerVersion: version,
    firecrackerSha256: sha,
    firecrackerUrl: input('firecracker-url', { default: FIRECRACKER_URL }),
    kernelId,
    kernelPath,
    kernelInitrd: input('kernel-initrd'),
    kernelVersion,
    baseos,
    profile: validateProfileName(input('profile', { default: 'ci' })),
    profileConfDir: path.resolve(input('profile-conf-dir', { default: defaultProfileConfDir(env) })),
    cache: boolInput('cache', true),
    cacheVersion,
  };
}

const ARCH = os.arch() === 'arm64' ? 'aarch64' : 'x86_64';

/** A cache key's digest part: sha256 over the parts, 20 hex digits. */
function digest(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex').slice(0, 20);
}

/** The binary reports the release: `Firecracker v1.10.1`, `Jailer v1.10.1`. */
async function reportsVersion(bin: string, version: string): Promise<boolean> {
  const r = await exec(bin, ['--version'], { allowFailure: true, timeoutMs: 10_000 }).catch(() => undefined);
  return Boolean(r && r.code === 0 && new RegExp(`\\b${version.replace(/\./g, '\\.')}\\b`).test(r.stdout));
}

export interface FirecrackerInstall { firecracker: string; jailer: string; from: 'tool-cache' | 'path' | 'download' }

/**
 * Firecracker and its jailer at the pinned version: from the runner's tool cache, else on PATH when they
 * report that version (runner-setup/ installs them there), else downloaded from `url`, checked against
 * `sha256` (required: a download is never trusted without it) and kept in the tool cache.
 */
export async function installFirecracker(version: string, sha256: string, urlTemplate: string, log: ActionsLogger): Promise<FirecrackerInstall> {
  const tc = await import('@actions/tool-cache');
  const tcArch = os.arch();
  const cached = tc.find('firecracker', version, tcArch);
  if (cached) {
    const fc = path.join(cached, 'firecracker');
    const jailer = path.join(cached, 'jailer');
    if ((await reportsVersion(fc, version)) && (await reportsVersion(jailer, version))) return { firecracker: fc, jailer, from: 'tool-cache' };
    log.warn(`the tool cache's firecracker ${version} does not run or report its version: downloading it again`);
  }
  const onPath = await which('firecracker');
  const jailerOnPath = await which('jailer');
  if (onPath && jailerOnPath && (await reportsVersion(onPath, version)) && (await reportsVersion(jailerOnPath, version))) return { firecracker: onPath, jailer: jailerOnPath, from: 'path' };
  if (!sha256) throw new UserError(`firecracker ${version} is not installed and no checksum is pinned for its download: set firecracker-sha256 to the sha256 of firecracker-${version}-${ARCH}.tgz (from the release's SHA256SUMS)`);
  const url = urlTemplate.replace(/\{version\}/g, version).replace(/\{arch\}/g, ARCH);
  let tarball: string;
  try {
    tarball = await tc.downloadTool(url);
  } catch (err) {
    throw new UserError(`downloading ${url} failed: ${(err as Error).message}`);
  }
  const work = await actionsWorkDir('fc-');
  try {
    const got = await sha256File(tarball);
    if (got !== sha256) throw new UserError(`${url} has sha256 ${got}, firecracker-sha256 pins ${sha256}: refusing it (check the version and the checksum)`);
    const extracted = await tc.extractTar(tarball, path.join(work, 'x'));
    const release = path.join(extracted, `release-${version}-${ARCH}`);
    const bin = path.join(work, 'bin');
    await fsp.mkdir(bin);
    for (const name of ['firecracker', 'jailer']) {
      const from = path.join(release, `${name}-${version}-${ARCH}`);
      if (!(await fsp.stat(from).then((s) => s.isFile(), () => false))) throw new UserError(`${url} lacks release-${version}-${ARCH}/${name}-${version}-${ARCH}: is it a Firecracker release tarball?`);
      await fsp.copyFile(from, path.join(bin, name));
      await fsp.chmod(path.join(bin, name), 0o755);
    }
    const dir = await tc.cacheDir(bin, 'firecracker', version, tcArch);
    return { firecracker: path.join(dir, 'firecracker'), jailer: path.join(dir, 'jailer'), from: 'download' };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
    await fsp.rm(tarball, { force: true });
  }
}

/** The Debian linux-source package's version, so that a new package is a new cache key. */
async function linuxSourceIdentity(version: string): Promise<string> {
  const r = await exec('dpkg-query', ['-W', '-f=${Version}', `linux-source-${version}`], { allowFailure: true }).catch(() => undefined);
  if (r && r.code === 0 && r.stdout.trim()) return `deb:linux-source-${version}=${r.stdout.trim()}`;
  const st = await fsp.stat(`/usr/src/linux-source-${version}.tar.xz`).catch(() => undefined);
  if (!st) throw new UserError(`/usr/src/linux-source-${version}.tar.xz not found: install Debian's linux-source-${version} package, or import a kernel with kernel-path`);
  return `deb:linux-source-${version}:${st.size}`;
}

/**
 * A base image's cache key: the digest of its build plan (instructions after expansion, build args, and
 * the sha256 of every COPY/ADD source), with the host-specific paths left out.
 */
export async function baseosKey(dockerfile: string, tag: string, cacheVersion: string, log: ActionsLogger): Promise<string> {
  const plan = await planCommand({ dockerfile, cacheDir: defaultCacheDir() }, log);
  const stable = JSON.stringify(plan, (k, v: unknown) => (['file', 'source', 'context', 'dockerfile'].includes(k) && typeof v !== 'number' ? undefined : v));
  return `firebuild-baseos-${cacheVersion}-${tag.replace(/[^A-Za-z0-9._-]/g, '-')}-${digest(stable)}`;
}

/**
 * Restore a cache entry and store it: false on a miss, and also when the entry fails its digests (it is
 * built again, with a warning). The restored files never outlive the call.
 */
async function restoreVerified(key: string, store: (dir: string) => Promise<unknown>): Promise<boolean> {
  return withCacheEntryDir(key, async (dir) => {
    try {
      if (!(await cacheRestore(dir, key))) return false;
      await store(dir);
      return true;
    } catch (err) {
      core.warning(`the cache entry ${key} is unusable (${(err as Error).message}): building it instead`);
      return false;
    }
  });
}

/** What the post step saves: a kernel or a base image of the store, packaged then (nothing waits in /tmp between the steps). */
interface CacheSave { kind: 'kernel' | 'baseos'; name: string; key: string; home: Record<string, string> }

export async function run(): Promise<void> {
  const i = getInputs();
  const log = new ActionsLogger('setup');
  const saves: CacheSave[] = [];
  const rows: [string, string][] = [];

  // 1. The runner: KVM, the VMM, and the parts the requested work needs.
  const kvm = await detectKvm();
  const vmm = i.vmm === 'auto' ? (kvm.usable && i.accel !== 'tcg' ? 'firecracker' : 'qemu') : i.vmm;
  if (vmm === 'firecracker' && i.accel === 'tcg') throw new UserError(`vmm 'firecracker' needs KVM and accel is 'tcg': use vmm qemu for TCG, or accel kvm on a KVM runner`);
  const needKvm = i.accel === 'kvm' || vmm === 'firecracker';
  await core.group('Check the runner', async () => {
    const settings = resolveSettings({}, undefined);
    const checks = await doctor({ settings, storage: openStorage(settings), profileConfDir: i.profileConfDir, require: [...(needKvm ? ['kvm'] : []), ...(i.baseos.length ? ['docker'] : [])] });
    for (const c of checks) core.info(`${c.status.padEnd(7)} ${c.part}: ${c.detail}`);
    // With Firecracker the host needs no QEMU: the vmm check is settled below, once Firecracker is in place.
    const missing = missingRequired(checks).filter((c) => !(c.part === 'vmm' && vmm === 'firecracker'));
    if (missing.length) {
      const kvmMissing = missing.find((c) => c.part === 'kvm');
      const parts = missing.map((c) => `${c.part} (${c.detail}${c.fix ? `; fix: ${c.fix}` : ''})`).join('; ');
      throw new UserError(kvmMissing
        ? `KVM is not usable on this runner: ${kvmMissing.detail}. Run on a KVM-capable runner (see runner-setup/), or set accel: tcg and vmm: qemu (slow; for tests)${missing.length > 1 ? `; also missing: ${missing.filter((c) => c !== kvmMissing).map((c) => c.part).join(', ')}` : ''}`
        : `this runner lacks ${parts}`);
    }
  });
  rows.push(['KVM', kvm.usable ? 'usable' : `not usable (${kvm.reason})`], ['VMM', vmm], ['accel', i.accel]);

  // 2. Firecracker and the jailer.
  let fc: FirecrackerInstall | undefined;
  if (i.installFirecracker === 'true' || (i.installFirecracker === 'auto' && vmm === 'firecracker')) {
    fc = await core.group(`Firecracker ${i.firecrackerVersion}`, () => installFirecracker(i.firecrackerVersion, i.firecrackerSha256, i.firecrackerUrl, log));
    core.addPath(path.dirname(fc.firecracker));
    rows.push(['Firecracker', `${i.firecrackerVersion} (${fc.from}) \`${fc.firecracker}\``]);
  } else if (vmm === 'firecracker') {
    throw new UserError(`vmm 'firecracker' with install-firecracker 'false': set install-firecracker to auto or true`);
  }

  const flags = fc ? { binaryFirecracker: fc.firecracker, binaryJailer: fc.jailer } : {};
  const settings: Settings = resolveSettings(flags, undefined);
  const storage = openStorage(settings);

  // 3. The kernel.
  let kernelFrom = 'store';
  await core.group(`Kernel ${i.kernelId}`, async () => {
    if (i.kernelPath) {
      const k = await storage.importKernel(i.kernelId, path.resolve(i.kernelPath), { overwrite: true, ...(i.kernelInitrd ? { initrd: path.resolve(i.kernelInitrd) } : {}) });
      kernelFrom = 'imported';
      log.info('kernel imported', { id: k.id, sha256: k.metadata.vmlinux.sha256 });
    } else if (i.kernelVersion) {
      if (!/^\d+\.\d+$/.test(i.kernelVersion)) throw new UserError(`input 'kernel-version' is '${i.kernelVersion}': give a kernel series such as 6.1`);
      const key = `firebuild-kernel-${i.cacheVersion}-${ARCH}-${digest(await linuxSourceIdentity(i.kernelVersion), await fsp.readFile(FRAGMENT, 'utf8'))}`;
      if (i.cache && (await restoreVerified(key, (dir) => importPackagedKernel(storage, dir, i.kernelId, true)))) {
        kernelFrom = 'cache';
      } else {
        await kernelBuild(storage, { id: i.kernelId, version: i.kernelVersion, cacheDir: defaultCacheDir(), overwrite: true }, log);
        kernelFrom = 'built';
        if (i.cache) saves.push({ kind: 'kernel', name: i.kernelId, key, home: storeHome(settings) });
      }
    }
    const have = await storage.listKernels();
    if (!have.some((k) => k.id === i.kernelId && !k.error)) {
      throw new UserError(`no kernel ${i.kernelId} on this runner: set kernel-path (import a vmlinux) or kernel-version (build one, cached)`);
    }
  });
  const kernel = await storage.getKernel(i.kernelId);
  rows.push(['kernel', `${i.kernelId} (${kernelFrom}) sha256 \`${kernel.metadata.vmlinux.sha256.slice(0, 16)}…\``]);

  // 4. Base images: restored from the cache when their plan's digest matches, else built (and saved by the post step).
  const images: string[] = [];
  let hits = 0;
  for (const b of i.baseos) {
    await core.group(`Base image ${b.tag}`, async () => {
      const key = await baseosKey(b.dockerfile, b.tag, i.cacheVersion, log);
      if (i.cache && (await restoreVerified(key, (dir) => importPackagedImage(storage, dir, { tag: b.tag, overwrite: true, sourceRef: `actions-cache:${key}` })))) {
        hits++;
        rows.push([`base image ${b.tag}`, `restored from the cache, sha256 \`${(await storage.getImage(b.tag)).metadata.rootfs.sha256.slice(0, 16)}…\``]);
        return;
      }
      const r = await buildWithDocker({ type: 'baseos', engine: 'docker', dockerfile: b.dockerfile, tag: b.tag, journal: false, overwrite: true, cacheDir: defaultCacheDir() }, storage, log);
      if (i.cache) saves.push({ kind: 'baseos', name: r.image.tag, key, home: storeHome(settings) });
      rows.push([`base image ${b.tag}`, `built, sha256 \`${r.image.metadata.rootfs.sha256.slice(0, 16)}…\``]);
    });
    images.push(b.tag);
  }

  // 5. The profile every later step reads (FIREBUILD_PROFILE), written last: a failed setup leaves the previous one.
  for (const d of [settings.chrootBase, settings.runCache, ...Object.values(settings.storageProperties)]) await fsp.mkdir(d, { recursive: true });
  const profile = await profileCreate({ name: i.profile, profileConfDir: i.profileConfDir, flags, overwrite: true }, log);
  core.exportVariable('FIREBUILD_PROFILE', i.profile);
  core.exportVariable('FIREBUILD_PROFILE_CONF_DIR', i.profileConfDir);
  if (i.accel !== 'auto') core.exportVariable('FIREBUILD_ACCEL', i.accel);
  rows.push(['profile', `${i.profile} \`${profile.file}\``]);

  core.saveState(STATE_CACHE_SAVES, JSON.stringify(saves));
  core.setOutput('vmm', vmm);
  core.setOutput('kvm', String(kvm.usable));
  core.setOutput('firecracker', fc?.firecracker ?? '');
  core.setOutput('jailer', fc?.jailer ?? '');
  core.setOutput('profile', i.profile);
  core.setOutput('kernel-id', i.kernelId);
  core.setOutput('kernel-source', kernelFrom);
  core.setOutput('base-images', images.join('\n'));
  core.setOutput('cache-hit', String(i.baseos.length + (i.kernelVersion ? 1 : 0) > 0 && hits + (kernelFrom === 'cache' ? 1 : 0) === i.baseos.length + (i.kernelVersion ? 1 : 0)));
  await core.summary.addHeading('firebuild setup', 3).addRaw(summaryTable(rows)).write();
}

/** The store's settings as the post step needs them (it runs without the job's later environment). */
function storeHome(settings: Settings): Record<string, string> {
  return settings.storageProperties;
}

/** The post step: package what this job built and save it to the Actions cache; never fails the job. */
export async function post(): Promise<void> {
  let saves: CacheSave[];
  try {
    saves = JSON.parse(core.getState(STATE_CACHE_SAVES) || '[]') as CacheSave[];
  } catch {
    return;
  }
  for (const s of saves) {
    try {
      await withCacheEntryDir(s.key, async (dir) => {
        const flags = { storageProviderPropertyString: Object.entries(s.home).map(([k, v]) => `${k}=${v}`) };
        const storage = openStorage(resolveSettings(flags, undefined));
        if (s.kind === 'kernel') await packageKernel(storage, s.name, dir);
        else await packageImage(storage, s.name, dir);
        if (await cacheSave(dir, s.key)) core.info(`saved ${s.key} to the Actions cache`);
      });
    } catch (err) {
      core.warning(`could not save ${s.key}: ${(err as Error).message}`);
    }
  }
}
