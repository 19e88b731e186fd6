import * as os from 'node:os';
import * as path from 'node:path';

// Where firebuild keeps things by default. A module of its own, with no dependency but node:, because the
// CLI definition needs these defaults for its help text before any command runs: importing profile.ts
// (zod schemas) for them would put the schemas on the path of `firebuild --version`.

/** The host-wide profile directory: root's default, and where a non-root reader looks for a profile it lacks. */
export const SYSTEM_PROFILE_CONF_DIR = '/etc/firebuild/profiles';
/** Root's default profile directory (kept under its old name for the callers that print it). */
export const DEFAULT_PROFILE_CONF_DIR = SYSTEM_PROFILE_CONF_DIR;

/** The uid the defaults are for: this process's (a parameter only so the non-root rules can be tested as root). */
const processUid = (): number | undefined => process.getuid?.();

/** An XDG base directory variable, or `fallback` when unset or relative (the XDG spec says to ignore relative ones). */
function xdgDir(value: string | undefined, fallback: string): string {
  return value && path.isAbsolute(value) ? value : fallback;
}

/** The directory where firebuild keeps its own state when no profile says otherwise. */
export function defaultHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FIREBUILD_HOME) return path.resolve(env.FIREBUILD_HOME);
  if (processUid() === 0) return '/var/lib/firebuild';
  return path.join(xdgDir(env.XDG_DATA_HOME, path.join(os.homedir(), '.local', 'share')), 'firebuild');
}

/** Caches that can be rebuilt at any time (git checkouts, build step cache). */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.FIREBUILD_CACHE_DIR ? path.resolve(env.FIREBUILD_CACHE_DIR) : path.join(defaultHome(env), 'cache');
}

/** A non-root user's own profile directory: `$XDG_CONFIG_HOME/firebuild/profiles` (`~/.config/firebuild/profiles`). */
export function userProfileConfDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(xdgDir(env.XDG_CONFIG_HOME, path.join(os.homedir(), '.config')), 'firebuild', 'profiles');
}

/**
 * FIREBUILD_PROFILE_CONF_DIR, else /etc/firebuild/profiles as root, else the user's own directory: a
 * runner's unprivileged user writes its profiles where it can, as it keeps its store under its home.
 */
export function defaultProfileConfDir(env: NodeJS.ProcessEnv = process.env, uid = processUid()): string {
  if (env.FIREBUILD_PROFILE_CONF_DIR) return path.resolve(env.FIREBUILD_PROFILE_CONF_DIR);
  return uid === 0 ? SYSTEM_PROFILE_CONF_DIR : userProfileConfDir(env);
}

/**
 * Where else a profile missing from `dir` is read: for a non-root reader of its own directory, the
 * host-wide one (read only), so a profile root wrote for every user still works. Any other directory
 * (one given on purpose) is the only place looked at.
 */
export function profileFallbackDirs(dir: string, env: NodeJS.ProcessEnv = process.env, uid = processUid()): string[] {
  return uid !== 0 && path.resolve(dir) === userProfileConfDir(env) ? [SYSTEM_PROFILE_CONF_DIR] : [];
}
