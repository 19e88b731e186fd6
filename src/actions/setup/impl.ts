import * as core from '@actions/core';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { prepareHost } from '../../commands/host-prep.js';
import { ACCELS, VMMS, checkRunner, packForCache, provideBaseImage, provideKernel, writeRunnerProfile, type CacheRestore } from '../../commands/setup.js';
import { defaultProfileConfDir, validateProfileName } from '../../profile/profile.js';
import { openStorage, resolveSettings, type Settings } from '../../profile/settings.js';
import { parseTag } from '../../store/tag.js';
import { UserError } from '../../util/errors.js';
import { exec, which } from '../../util/exec.js';
import { sha256File } from '../../util/fs.js';
import { getHostInputs, hostRows } from './host.js';
import { ActionsLogger, actionsWorkDir, aliasInput, boolInput, cacheVersionInput, cacheRestore, cacheSave, input, listInput, registryMirrorsInput, withCacheEntryDir } from '../common.js';
import { formatDuration, summaryInput, writeSummary, type Cell } from '../summary.js';

/**
 * The setup action: check the runner (the doctor's checks; one annotation when KVM or a part is
 * missing), install or locate Firecracker and its jailer at a pinned version (checksum-verified, kept in
 * the runner's tool cache), provide a kernel (import, build, or restore from the Actions cache), build or
 * restore base images, and write the profile later steps use (exported as FIREBUILD_PROFILE). Kernels and
 * base images are cached under keys made from their inputs' digests; the post step saves what this job built.
 */
export { ACCELS, VMMS };
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
  /** Written into the profile for later vm-engine builds. */
  registryMirrors: string[];
  /** Write the job summary (input `summary`). */
  summary: boolean;
}

export function getInputs(env: NodeJS.ProcessEnv = process.env): SetupInputs {
  const version = input('firecracker-version', { default: FIRECRACKER_VERSION });
  if (!/^v\d+\.\d+\.\d+$/.test(version)) throw new UserError(`input 'firecracker-version' is '${version}': give a release such as ${FIRECRACKER_VERSION}`);
  const sha = input('firecracker-sha256').toLowerCase();
  if (sha && !/^[0-9a-f]{64}$/.test(sha)) throw new UserError(`input 'firecracker-sha256' is not a sha256 (64 hex digits): copy it from the release's SHA256SUMS`);
  const kernelPath = input('kernel-path');
  const kernelVersion = input('kernel-version');
  if (kernelPath && kernelVersion) throw new UserError(`inputs 'kernel-path' and 'kernel-version' exclude each other: import a kernel or build one`);
  // vmlinux-id and backend: the names build-rootfs, smoke-test and the CLI (--vmlinux-id, --backend) use.
  const kernelId = aliasInput('vmlinux-id', 'kernel-id', { deprecated: true, default: 'default' });
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(kernelId)) throw new UserError(`input 'vmlinux-id' is '${kernelId}': use letters, digits, '.', '_' and '-'`);
  const baseos = listInput('baseos').map((line) => {
    const eq = line.indexOf('=');
    if (eq <= 0 || eq === line.length - 1) throw new UserError(`input 'baseos' line '${line}' is malformed: write TAG=DOCKERFILE, e.g. acme/debian:12=baseos/debian/Dockerfile`);
    const tag = line.slice(0, eq).trim();
    parseTag(tag);
    return { tag, dockerfile: line.slice(eq + 1).trim() };
  });
  const cacheVersion = cacheVersionInput();
  return {
    vmm: aliasInput('backend', 'vmm', { deprecated: true, choices: VMMS, default: 'auto' }) as SetupInputs['vmm'],
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
    registryMirrors: registryMirrorsInput(),
    summary: summaryInput(),
  };
}

const ARCH = os.arch() === 'arm64' ? 'aarch64' : 'x86_64';

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

/**
 * Restore a cache entry and store it: false on a miss, and also when the entry fails its digests (it is
 * built again, with a warning). The restored files never outlive the call.
 */
const restoreVerified: CacheRestore = async (key, store) => {
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
};

/** What the post step saves: a kernel or a base image of the store, packaged then (nothing waits in /tmp between the steps). */
interface CacheSave { kind: 'kernel' | 'baseos'; name: string; key: string; home: Record<string, string>; sha256: string }

export async function run(): Promise<void> {
  const i = getInputs();
  const started = Date.now();
  const log = new ActionsLogger('setup');
  const saves: CacheSave[] = [];
  // Saved in the state as each entry is made: a later failure (of setup or of the job) still saves what was built (post-if: always()).
  const toSave = (c: CacheSave): void => {
    saves.push(c);
    core.saveState(STATE_CACHE_SAVES, JSON.stringify(saves));
  };
  const rows: [string, Cell][] = [];
  const restore = i.cache ? restoreVerified : undefined;

  // 0. A fresh (GitHub-hosted) runner's host: packages, user namespaces, /dev/kvm (host.ts; auto = hosted only).
  const host = getHostInputs();
  if (host.installPackages || host.allowUserns || host.enableKvm) {
    const needs = { qemu: i.vmm !== 'firecracker', ...(i.kernelVersion ? { kernelVersion: i.kernelVersion } : {}) };
    rows.push(...hostRows(await core.group('Prepare the host', () => prepareHost({ ...host, needs }, log))));
  }

  // 1. The runner: KVM, the VMM, and the parts the requested work needs.
  const { kvm, vmm } = await core.group('Check the runner', async () => {
    const c = await checkRunner({ vmm: i.vmm, accel: i.accel, profileConfDir: i.profileConfDir, needDocker: i.baseos.length > 0 });
    for (const line of c.lines) core.info(line);
    return c;
  });
  rows.push(['KVM', kvm.usable ? 'usable' : `not usable (${kvm.reason})`], ['VMM', vmm], ['accel', i.accel]);

  // 2. Firecracker and the jailer.
  let fc: FirecrackerInstall | undefined;
  if (i.installFirecracker === 'true' || (i.installFirecracker === 'auto' && vmm === 'firecracker')) {
    fc = await core.group(`Firecracker ${i.firecrackerVersion}`, () => installFirecracker(i.firecrackerVersion, i.firecrackerSha256, i.firecrackerUrl, log));
    core.addPath(path.dirname(fc.firecracker));
    rows.push(['Firecracker', `${i.firecrackerVersion} (${fc.from})`], ['Firecracker binary', { code: fc.firecracker }]);
  } else if (vmm === 'firecracker') {
    throw new UserError(`backend 'firecracker' with install-firecracker 'false': set install-firecracker to auto or true`);
  }

  const flags = { ...(fc ? { binaryFirecracker: fc.firecracker, binaryJailer: fc.jailer } : {}), ...(i.registryMirrors.length ? { registryMirror: i.registryMirrors } : {}) };
  const settings: Settings = resolveSettings(flags, undefined);
  const storage = openStorage(settings);

  // 3. The kernel.
  const kernel = await core.group(`Kernel ${i.kernelId}`, () => provideKernel(storage, {
    id: i.kernelId, ...(i.kernelPath ? { path: i.kernelPath } : {}), ...(i.kernelInitrd ? { initrd: i.kernelInitrd } : {}), ...(i.kernelVersion ? { version: i.kernelVersion } : {}),
    cacheVersion: i.cacheVersion, ...(restore ? { restore } : {}),
  }, log));
  if (kernel.key) toSave({ kind: 'kernel', name: i.kernelId, key: kernel.key, home: storeHome(settings), sha256: kernel.sha256 });
  rows.push(['kernel', `${i.kernelId} (${kernel.from})`], ['kernel sha256', { code: kernel.sha256 }]);

  // 4. Base images: restored from the cache when their plan's digest matches, else built (and saved by the post step).
  const images: Cell[][] = [];
  let hits = 0;
  for (const b of i.baseos) {
    await core.group(`Base image ${b.tag}`, async () => {
      const t0 = Date.now();
      const r = await provideBaseImage(storage, { ...b, cacheVersion: i.cacheVersion, ...(restore ? { restore } : {}) }, log);
      if (r.from === 'cache') hits++;
      if (r.key) toSave({ kind: 'baseos', name: b.tag, key: r.key, home: storeHome(settings), sha256: r.sha256 });
      images.push([{ code: b.tag }, r.from === 'cache' ? 'restored from the cache' : 'built', formatDuration(Date.now() - t0), { code: r.sha256 }]);
    });
  }

  // 5. The profile every later step reads (FIREBUILD_PROFILE), written last: a failed setup leaves the previous one.
  const profile = await writeRunnerProfile(settings, { name: i.profile, profileConfDir: i.profileConfDir, flags }, log);
  core.exportVariable('FIREBUILD_PROFILE', i.profile);
  core.exportVariable('FIREBUILD_PROFILE_CONF_DIR', i.profileConfDir);
  if (i.accel !== 'auto') core.exportVariable('FIREBUILD_ACCEL', i.accel);
  rows.push(['profile', `${i.profile}`], ['profile file', { code: profile.file }]);

  core.setOutput('backend', vmm);
  core.setOutput('vmm', vmm);
  core.setOutput('kvm', String(kvm.usable));
  core.setOutput('firecracker', fc?.firecracker ?? '');
  core.setOutput('jailer', fc?.jailer ?? '');
  core.setOutput('profile', i.profile);
  core.setOutput('vmlinux-id', i.kernelId);
  core.setOutput('kernel-id', i.kernelId);
  core.setOutput('kernel-source', kernel.from);
  core.setOutput('base-images', i.baseos.map((b) => b.tag).join('\n'));
  core.setOutput('cache-hit', String(i.baseos.length + (i.kernelVersion ? 1 : 0) > 0 && hits + (kernel.from === 'cache' ? 1 : 0) === i.baseos.length + (i.kernelVersion ? 1 : 0)));
  rows.push(['duration', formatDuration(Date.now() - started)]);
  await writeSummary({
    title: 'firebuild setup',
    facts: rows,
    tables: images.length ? [{ title: 'Base images', header: ['image', 'from', 'time', 'sha256'], rows: images }] : [],
  }, i.summary);
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
        await packForCache(s.kind, s.name, s.home, dir, s.sha256);
        if (await cacheSave(dir, s.key)) core.info(`saved ${s.key} to the Actions cache`);
      });
    } catch (err) {
      core.warning(`could not save ${s.key}: ${(err as Error).message}`);
    }
  }
}
