import * as path from 'node:path';
import * as fsp from 'node:fs/promises';
import { constants } from 'node:fs';
import { UserError } from '../util/errors.js';
import { actingUid } from '../util/safe-open.js';
import { DirectoryStorage } from '../store/directory.js';
import type { StorageProvider } from '../store/provider.js';
import { MAX_SOCKET_PATH, jailerSocketPath, jailerSocketPathLength, VMM_ID_LENGTH } from '../vmm/jail-paths.js';
import { defaultHome } from './paths.js';
import { DEFAULT_CGROUP_PARENT, parseCgroupParent, parseCniAliases, parsePortRange, type PortRange } from './instance.js';
// profile.js (its zod schema) loads only when a profile is read: most commands run without --profile.
import type { Profile } from './profile.js';

/** Settings flags as the command line gave them; undefined means "not given". */
export interface SettingsFlags {
  binaryFirecracker?: string;
  binaryJailer?: string;
  chrootBase?: string;
  runCache?: string;
  storageProvider?: string;
  storageProviderPropertyString?: string[];
  storageProviderPropertyInt64?: string[];
  tracingEnable?: boolean;
  tracingCollectorHostPort?: string;
  tracingLogEnable?: boolean;
  /** --registry-mirror, repeatable: docker.io mirrors, in order. */
  registryMirror?: string[];
  /** --port-range LOW-HIGH: the host ports VMs may publish (auto ports are picked in it). */
  portRange?: string;
  /** --cgroup-parent: the cgroup subtree of this user's VMs. */
  cgroupParent?: string;
  /** --cni-network-alias NAME=NETWORK, repeatable. */
  cniNetworkAlias?: string[];
}

export type Origin = 'flag' | 'profile' | 'default';

export interface Settings {
  profile?: string;
  binaryFirecracker?: string;
  binaryJailer?: string;
  chrootBase: string;
  runCache: string;
  storageProvider: string;
  storageProperties: Record<string, string>;
  storagePropertiesInt64: Record<string, number>;
  tracingEnable: boolean;
  tracingCollectorHostPort: string;
  tracingLogEnable: boolean;
  /** docker.io mirrors (`http(s)://host[:port]`), asked in order before docker.io itself, as dockerd's `registry-mirrors`. */
  registryMirrors: string[];
  /** Host ports VMs may publish; undefined: any (auto ports from the kernel's free ports). */
  portRange?: PortRange;
  /** The cgroup subtree (under the cgroup2 mount) holding one cgroup per VM. */
  cgroupParent: string;
  /** CNI network names as asked (`machines`) to this user's networks (`machines-2`); empty: names as asked. */
  cniNetworkAliases: Record<string, string>;
  /** Where each value came from: a flag beats the profile, which beats the built-in default. */
  origin: Record<string, Origin>;
}

export const STORAGE_DIRECTORY = 'directory';

/**
 * The built-in defaults, several of them from the environment: FIREBUILD_HOME (store, run cache), and for a
 * runner instance sharing its host (docs/runner-setup.md, "Several runners per host") FIREBUILD_PORT_RANGE,
 * FIREBUILD_CGROUP_PARENT, FIREBUILD_CNI_NETWORK_ALIASES and FIREBUILD_SHARED_KERNELS.
 */
export function builtinDefaults(env: NodeJS.ProcessEnv = process.env): Omit<Settings, 'origin' | 'profile'> {
  const home = defaultHome(env);
  const shared = env.FIREBUILD_SHARED_KERNELS;
  if (shared !== undefined && shared !== '' && !path.isAbsolute(shared)) throw new UserError(`FIREBUILD_SHARED_KERNELS '${shared}' is not an absolute path: give the shared kernel directory, e.g. /var/lib/firebuild-shared/kernels`);
  return {
    chrootBase: env.FIREBUILD_CHROOT_BASE ?? '/srv/jailer',
    runCache: path.join(home, 'run'),
    storageProvider: STORAGE_DIRECTORY,
    storageProperties: {
      'rootfs-storage-root': path.join(home, 'rootfs'),
      'kernel-storage-root': path.join(home, 'kernels'),
      ...(shared ? { [SHARED_KERNEL_ROOT]: shared } : {}),
    },
    storagePropertiesInt64: {},
    tracingEnable: false,
    tracingCollectorHostPort: '127.0.0.1:6831',
    tracingLogEnable: false,
    registryMirrors: parseRegistryMirrors((env.FIREBUILD_REGISTRY_MIRRORS ?? '').split(',').map((m) => m.trim()).filter(Boolean), 'FIREBUILD_REGISTRY_MIRRORS'),
    ...(env.FIREBUILD_PORT_RANGE ? { portRange: parsePortRange(env.FIREBUILD_PORT_RANGE, 'FIREBUILD_PORT_RANGE') } : {}),
    cgroupParent: env.FIREBUILD_CGROUP_PARENT ? parseCgroupParent(env.FIREBUILD_CGROUP_PARENT, 'FIREBUILD_CGROUP_PARENT') : DEFAULT_CGROUP_PARENT,
    cniNetworkAliases: parseCniAliases(splitList(env.FIREBUILD_CNI_NETWORK_ALIASES), 'FIREBUILD_CNI_NETWORK_ALIASES'),
  };
}

/** The directory storage's read-only second kernel root: kernels looked up there after the store's own. */
export const SHARED_KERNEL_ROOT = 'shared-kernel-storage-root';

function splitList(v: string | undefined): string[] {
  return (v ?? '').split(',').map((m) => m.trim()).filter(Boolean);
}

/**
 * Registry mirrors as dockerd takes them: `http://host[:port]` or `https://host[:port]`, no path, query or
 * user; returned as `scheme://host[:port]` with duplicates dropped (the first keeps its place).
 */
export function parseRegistryMirrors(items: readonly string[], from = '--registry-mirror'): string[] {
  const out: string[] = [];
  for (const item of items) {
    let u: URL | undefined;
    try {
      u = new URL(item);
    } catch {
      u = undefined;
    }
    if (!u || !/^https?:$/.test(u.protocol) || u.username || u.password || u.search || u.hash || (u.pathname !== '/' && u.pathname !== '')) {
      throw new UserError(`malformed registry mirror '${item}' (${from}): give http(s)://host[:port] with no path, e.g. https://mirror.gcr.io or http://127.0.0.1:5000`);
    }
    const m = `${u.protocol}//${u.host}`;
    if (!out.includes(m)) out.push(m);
  }
  return out;
}

const PROPERTY_KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Parse repeatable `key=value` properties. */
export function parseStringProperties(items: readonly string[] | undefined, flag = '--storage-provider-property-string'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items ?? []) {
    const eq = item.indexOf('=');
    const key = eq > 0 ? item.slice(0, eq) : '';
    const value = eq > 0 ? item.slice(eq + 1) : '';
    if (!PROPERTY_KEY_RE.test(key) || value === '') {
      throw new UserError(`malformed ${flag} '${item}': use key=value, e.g. ${flag} rootfs-storage-root=/srv/firebuild/rootfs`);
    }
    out[key] = value;
  }
  return out;
}

export function parseInt64Properties(items: readonly string[] | undefined): Record<string, number> {
  const flag = '--storage-provider-property-int64';
  const raw = parseStringProperties(items, flag);
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (!/^-?\d{1,19}$/.test(v) || !Number.isSafeInteger(Number(v))) {
      throw new UserError(`malformed ${flag} '${k}=${v}': the value must be an integer, e.g. ${flag} ${k}=1024`);
    }
    out[k] = Number(v);
  }
  return out;
}

export function parseHostPort(s: string, flag: string): string {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new UserError(`malformed ${flag} '${s}': use host:port, e.g. 127.0.0.1:6831`);
  return s;
}

/** Merge flag > profile > default, recording each value's origin. Pure. */
export function resolveSettings(flags: SettingsFlags, profile: Profile | undefined, defaults = builtinDefaults()): Settings {
  const origin: Record<string, Origin> = {};
  function pick<T>(key: string, flag: T | undefined, prof: T | undefined, def: T): T {
    if (flag !== undefined) { origin[key] = 'flag'; return flag; }
    if (prof !== undefined) { origin[key] = 'profile'; return prof; }
    origin[key] = 'default';
    return def;
  }
  function pickOptional<T>(key: string, flag: T | undefined, prof: T | undefined): T | undefined {
    if (flag !== undefined) { origin[key] = 'flag'; return flag; }
    if (prof !== undefined) { origin[key] = 'profile'; return prof; }
    return undefined;
  }
  const flagProps = parseStringProperties(flags.storageProviderPropertyString);
  const flagInts = parseInt64Properties(flags.storageProviderPropertyInt64);
  const storageProvider = pick('storage-provider', flags.storageProvider, profile?.['storage-provider'], defaults.storageProvider);
  // Properties merge key by key; a profile for another provider doesn't inherit the directory defaults.
  const defProps = storageProvider === defaults.storageProvider ? defaults.storageProperties : {};
  const storageProperties: Record<string, string> = {};
  for (const key of new Set([...Object.keys(defProps), ...Object.keys(profile?.['storage-provider-property-string'] ?? {}), ...Object.keys(flagProps)])) {
    storageProperties[key] = pick(`storage-provider-property-string.${key}`, flagProps[key], profile?.['storage-provider-property-string'][key], defProps[key] as string);
  }
  const storagePropertiesInt64: Record<string, number> = { ...(profile?.['storage-provider-property-int64'] ?? {}), ...flagInts };

  const s: Settings = {
    chrootBase: path.resolve(pick('chroot-base', flags.chrootBase, profile?.['chroot-base'], defaults.chrootBase)),
    runCache: path.resolve(pick('run-cache', flags.runCache, profile?.['run-cache'], defaults.runCache)),
    storageProvider,
    storageProperties,
    storagePropertiesInt64,
    tracingEnable: pick('tracing-enable', flags.tracingEnable, profile?.['tracing-enable'], defaults.tracingEnable),
    tracingCollectorHostPort: parseHostPort(
      pick('tracing-collector-host-port', flags.tracingCollectorHostPort, profile?.['tracing-collector-host-port'], defaults.tracingCollectorHostPort),
      '--tracing-collector-host-port',
    ),
    tracingLogEnable: pick('tracing-log-enable', flags.tracingLogEnable, profile?.['tracing-log-enable'], defaults.tracingLogEnable),
    registryMirrors: pick(
      'registry-mirrors',
      flags.registryMirror?.length ? parseRegistryMirrors(flags.registryMirror) : undefined,
      profile?.['registry-mirrors'] ? parseRegistryMirrors(profile['registry-mirrors'], `profile ${profile.name}'s registry-mirrors`) : undefined,
      defaults.registryMirrors,
    ),
    cgroupParent: pick(
      'cgroup-parent',
      flags.cgroupParent !== undefined ? parseCgroupParent(flags.cgroupParent, '--cgroup-parent') : undefined,
      profile?.['cgroup-parent'] !== undefined ? parseCgroupParent(profile['cgroup-parent'], `profile ${profile.name}'s cgroup-parent`) : undefined,
      defaults.cgroupParent,
    ),
    cniNetworkAliases: pick(
      'cni-network-aliases',
      flags.cniNetworkAlias?.length ? parseCniAliases(flags.cniNetworkAlias, '--cni-network-alias') : undefined,
      profile?.['cni-network-aliases'] ? parseCniAliases(Object.entries(profile['cni-network-aliases']).map(([k, v]) => `${k}=${v}`), `profile ${profile.name}'s cni-network-aliases`) : undefined,
      defaults.cniNetworkAliases,
    ),
    origin,
  };
  const portRange = pickOptional(
    'port-range',
    flags.portRange !== undefined ? parsePortRange(flags.portRange, '--port-range') : undefined,
    profile?.['port-range'] !== undefined ? parsePortRange(profile['port-range'], `profile ${profile.name}'s port-range`) : undefined,
  ) ?? defaults.portRange;
  if (portRange) {
    s.portRange = portRange;
    origin['port-range'] ??= 'default';
  }
  const fc = pickOptional('binary-firecracker', flags.binaryFirecracker, profile?.['binary-firecracker']);
  const jailer = pickOptional('binary-jailer', flags.binaryJailer, profile?.['binary-jailer']);
  if (fc !== undefined) s.binaryFirecracker = path.resolve(fc);
  if (jailer !== undefined) s.binaryJailer = path.resolve(jailer);
  if (profile) s.profile = profile.name;
  return s;
}

/** Load the named profile (if any) and merge. */
export async function loadSettings(opts: { profile?: string; profileConfDir: string; flags: SettingsFlags }): Promise<Settings> {
  if (!opts.profile) return resolveSettings(opts.flags, undefined);
  const { ProfileStore, validateProfileName } = await import('./profile.js');
  return resolveSettings(opts.flags, await ProfileStore.forReading(opts.profileConfDir).read(validateProfileName(opts.profile)));
}

/** The storage provider the settings name. Roots from built-in defaults are created on first write. */
export function openStorage(s: Settings): StorageProvider {
  if (s.storageProvider !== STORAGE_DIRECTORY) {
    throw new UserError(`unknown storage provider '${s.storageProvider}': the only provider is '${STORAGE_DIRECTORY}'`);
  }
  const need = (key: string): string => {
    const v = s.storageProperties[key];
    if (!v) throw new UserError(`storage provider 'directory' needs --storage-provider-property-string ${key}=DIR`);
    return path.resolve(v);
  };
  // Root reading the runner user's store for it (firebuild-priv sets FIREBUILD_ACTING_UID): every read checked.
  const acting = actingUid();
  const shared = s.storageProperties[SHARED_KERNEL_ROOT];
  return new DirectoryStorage({
    rootfsRoot: need('rootfs-storage-root'),
    kernelRoot: need('kernel-storage-root'),
    ...(shared ? { sharedKernelRoot: path.resolve(shared) } : {}),
    createRoots: s.origin['storage-provider-property-string.rootfs-storage-root'] === 'default' && acting === undefined,
    ...(acting === undefined ? {} : { actingUid: acting }),
  });
}

async function requireDir(dir: string, flag: string): Promise<void> {
  const st = await fsp.stat(dir).catch(() => undefined);
  if (!st) throw new UserError(`${flag} ${dir} does not exist: create it (mkdir -p ${dir}) or pass another ${flag}`);
  if (!st.isDirectory()) throw new UserError(`${flag} ${dir} is not a directory: pass a directory to ${flag}`);
}

async function requireExecutable(file: string, flag: string): Promise<void> {
  const st = await fsp.stat(file).catch(() => undefined);
  if (!st?.isFile()) throw new UserError(`${flag} ${file} does not exist: give the path of the binary, or leave ${flag} out on a QEMU-only host`);
  try {
    await fsp.access(file, constants.X_OK);
  } catch {
    throw new UserError(`${flag} ${file} is not executable: chmod +x it or give another binary`);
  }
}

/** The jailer's socket path must fit sun_path; the message carries the computed length. */
export function checkChrootBase(chrootBase: string, firecrackerBinary: string | undefined): void {
  const len = jailerSocketPathLength(chrootBase, firecrackerBinary);
  if (len > MAX_SOCKET_PATH) {
    const example = jailerSocketPath(chrootBase, firecrackerBinary, '<' + 'x'.repeat(VMM_ID_LENGTH - 2) + '>');
    throw new UserError(
      `--chroot-base ${chrootBase} is too long: the jailer socket path ${example} would be ${len} characters, over the kernel's ${MAX_SOCKET_PATH}; use a base at most ${chrootBase.length - (len - MAX_SOCKET_PATH)} characters long`,
    );
  }
}

/** Validate settings for a profile: directories exist (the chroot base with a jailer), given binaries are executable, socket path fits. */
export async function validateForProfile(s: Settings): Promise<void> {
  checkChrootBase(s.chrootBase, s.binaryFirecracker);
  if (s.binaryFirecracker) await requireExecutable(s.binaryFirecracker, '--binary-firecracker');
  if (s.binaryJailer) await requireExecutable(s.binaryJailer, '--binary-jailer');
  // The chroot base is the jailer's: a QEMU-only profile (a runner's unprivileged user) need not have one.
  if (s.binaryJailer) await requireDir(s.chrootBase, '--chroot-base');
  await requireDir(s.runCache, '--run-cache');
  if (s.storageProvider !== STORAGE_DIRECTORY) {
    throw new UserError(`unknown --storage-provider '${s.storageProvider}': the only provider is '${STORAGE_DIRECTORY}'`);
  }
  for (const key of ['rootfs-storage-root', 'kernel-storage-root']) {
    const dir = s.storageProperties[key];
    if (!dir) throw new UserError(`storage provider 'directory' needs --storage-provider-property-string ${key}=DIR`);
    await requireDir(dir, `storage property ${key}`);
  }
}
