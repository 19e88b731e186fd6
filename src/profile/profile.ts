import * as fsp from 'node:fs/promises';
import { constants } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { UserError, errnoCode } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { describeZodError } from '../store/metadata.js';
import type { Settings } from './settings.js';

import { profileFallbackDirs } from './paths.js';

export { DEFAULT_PROFILE_CONF_DIR, SYSTEM_PROFILE_CONF_DIR, defaultCacheDir, defaultHome, defaultProfileConfDir, userProfileConfDir } from './paths.js';

/**
 * Profiles hold per-host settings, as the seed's: binaries, jail base, run cache, storage provider and
 * tracing. Keys are the flag names, so `profile-inspect` reads like the command that made it.
 */
export const PROFILE_SCHEMA_VERSION = 1;

export const ProfileSchema = z.object({
  'schema-version': z.literal(PROFILE_SCHEMA_VERSION),
  name: z.string(),
  'binary-firecracker': z.string().optional(),
  'binary-jailer': z.string().optional(),
  'chroot-base': z.string(),
  'run-cache': z.string(),
  'storage-provider': z.string(),
  'storage-provider-property-string': z.record(z.string(), z.string()).default({}),
  'storage-provider-property-int64': z.record(z.string(), z.number().int()).default({}),
  'tracing-enable': z.boolean().default(false),
  'tracing-collector-host-port': z.string().default('127.0.0.1:6831'),
  'tracing-log-enable': z.boolean().default(false),
  'registry-mirrors': z.array(z.string()).optional(),
  // A runner instance sharing its host (docs/runner-setup.md, "Several runners per host").
  'port-range': z.string().optional(),
  'cgroup-parent': z.string().optional(),
  'cni-network-aliases': z.record(z.string(), z.string()).optional(),
});
export type Profile = z.infer<typeof ProfileSchema>;

const PROFILE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function validateProfileName(name: string): string {
  if (!PROFILE_NAME_RE.test(name)) {
    throw new UserError(`invalid profile name '${name}': use 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit`);
  }
  return name;
}

/**
 * Profiles on disk: `<dir>/<name>.json`, directory 0700, files 0600. `fallbacks` are read-only directories
 * where a profile missing from `dir` is looked up (and listed): see `ProfileStore.forReading`.
 */
export class ProfileStore {
  constructor(readonly dir: string, readonly fallbacks: readonly string[] = []) {}

  /** The store a reader uses: a non-root user's own directory falls back to the host-wide one (paths.ts). */
  static forReading(dir: string, env: NodeJS.ProcessEnv = process.env): ProfileStore {
    return new ProfileStore(dir, profileFallbackDirs(dir, env));
  }

  private file(name: string, dir = this.dir): string {
    return path.join(dir, `${validateProfileName(name)}.json`);
  }

  async list(): Promise<string[]> {
    const names = new Set<string>();
    for (const [i, dir] of [this.dir, ...this.fallbacks].entries()) {
      const entries = await fsp.readdir(dir).catch((err) => {
        // A fallback the user may not read (a 0700 /etc/firebuild/profiles) lists nothing.
        if (errnoCode(err) === 'ENOENT' || i > 0) return [] as string[];
        throw new UserError(`cannot read profile directory ${dir} (${errnoCode(err) ?? 'error'}): check --profile-conf-dir`);
      });
      for (const n of entries) if (n.endsWith('.json') && !n.startsWith('.')) names.add(n.slice(0, -5));
    }
    return [...names].sort();
  }

  async exists(name: string): Promise<boolean> {
    try {
      await fsp.access(this.file(name));
      return true;
    } catch {
      return false;
    }
  }

  async read(name: string): Promise<Profile> {
    const dirs = [this.dir, ...this.fallbacks];
    let file = this.file(name);
    let text: string | undefined;
    const unreadable: string[] = [];
    for (const [i, dir] of dirs.entries()) {
      file = this.file(name, dir);
      try {
        text = await fsp.readFile(file, 'utf8');
        break;
      } catch (err) {
        const code = errnoCode(err);
        // A host-wide directory this user may not read is a place the profile was not found, not a failure.
        if (i > 0 && code === 'EACCES') unreadable.push(dir);
        else if (code !== 'ENOENT') throw new UserError(`cannot read profile ${file} (${code ?? 'error'}): check its permissions`);
      }
    }
    if (text === undefined) {
      const note = unreadable.length ? ` (${unreadable.join(', ')} not readable by this user)` : '';
      throw new UserError(`profile '${name}' not found in ${dirs.join(' or ')}${note}: create it with 'firebuild profile-create --profile ${name} ...' or list profiles with 'firebuild profile-ls'`);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new UserError(`corrupt profile ${file}: not valid JSON; recreate it with 'firebuild profile-create --profile ${name} --overwrite ...'`);
    }
    const parsed = ProfileSchema.safeParse(raw);
    if (!parsed.success) {
      throw new UserError(`corrupt profile ${file}: ${describeZodError(parsed.error)}; recreate it with 'firebuild profile-create --overwrite'`);
    }
    return parsed.data;
  }

  /** Check the directory can take a profile, before anything is validated or written. */
  async ensureWritable(): Promise<void> {
    // Find the nearest existing ancestor: that one must be writable for mkdir -p to work.
    let probe = this.dir;
    for (;;) {
      try {
        const st = await fsp.stat(probe);
        if (!st.isDirectory()) throw new UserError(`profile directory ${this.dir} cannot be created: ${probe} is not a directory; choose another --profile-conf-dir`);
        break;
      } catch (err) {
        if (err instanceof UserError) throw err;
        const parent = path.dirname(probe);
        if (parent === probe) break;
        probe = parent;
      }
    }
    try {
      await fsp.access(probe, constants.W_OK | constants.X_OK);
    } catch (err) {
      throw new UserError(`profile directory ${this.dir} is not writable (${errnoCode(err) ?? 'denied'} on ${probe}): run as root, fix the permissions, or choose another --profile-conf-dir`);
    }
  }

  async write(profile: Profile, opts: { overwrite?: boolean } = {}): Promise<string> {
    const file = this.file(profile.name);
    await this.ensureWritable();
    if (!opts.overwrite && (await this.exists(profile.name))) {
      throw new UserError(`profile '${profile.name}' already exists in ${this.dir}: pass --overwrite to replace it`);
    }
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await fsp.chmod(this.dir, 0o700);
    await writeFileAtomic(file, JSON.stringify(profile, null, 2) + '\n', 0o600);
    return file;
  }
}

/** The profile `profile-create` writes from resolved settings. */
export function profileFromSettings(name: string, s: Settings): Profile {
  const p: Profile = {
    'schema-version': PROFILE_SCHEMA_VERSION,
    name,
    'chroot-base': s.chrootBase,
    'run-cache': s.runCache,
    'storage-provider': s.storageProvider,
    // The shared kernel root from FIREBUILD_SHARED_KERNELS stays the environment's, as the other instance settings.
    'storage-provider-property-string': Object.fromEntries(Object.entries(s.storageProperties)
      .filter(([k]) => k !== 'shared-kernel-storage-root' || s.origin[`storage-provider-property-string.${k}`] !== 'default')
      .map(([k, v]) => [k, k.endsWith('-root') ? path.resolve(v) : v])),
    'storage-provider-property-int64': s.storagePropertiesInt64,
    'tracing-enable': s.tracingEnable,
    'tracing-collector-host-port': s.tracingCollectorHostPort,
    'tracing-log-enable': s.tracingLogEnable,
  };
  if (s.binaryFirecracker) p['binary-firecracker'] = s.binaryFirecracker;
  if (s.binaryJailer) p['binary-jailer'] = s.binaryJailer;
  // Only mirrors given as flags: FIREBUILD_REGISTRY_MIRRORS stays the host's default, not baked into the profile.
  if (s.origin['registry-mirrors'] === 'flag') p['registry-mirrors'] = s.registryMirrors;
  // Likewise the instance settings: from the environment (a runner instance's .env) they stay its own.
  if (s.origin['port-range'] === 'flag' && s.portRange) p['port-range'] = `${s.portRange.low}-${s.portRange.high}`;
  if (s.origin['cgroup-parent'] === 'flag') p['cgroup-parent'] = s.cgroupParent;
  if (s.origin['cni-network-aliases'] === 'flag') p['cni-network-aliases'] = s.cniNetworkAliases;
  return p;
}
