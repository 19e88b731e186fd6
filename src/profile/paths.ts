import * as os from 'node:os';
import * as path from 'node:path';

// Where firebuild keeps things by default. A module of its own, with no dependency but node:, because the
// CLI definition needs these defaults for its help text before any command runs: importing profile.ts
// (zod schemas) for them would put the schemas on the path of `firebuild --version`.

export const DEFAULT_PROFILE_CONF_DIR = '/etc/firebuild/profiles';

/** The directory where firebuild keeps its own state when no profile says otherwise. */
export function defaultHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FIREBUILD_HOME) return path.resolve(env.FIREBUILD_HOME);
  if (process.getuid?.() === 0) return '/var/lib/firebuild';
  const xdg = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(xdg, 'firebuild');
}

/** Caches that can be rebuilt at any time (git checkouts, build step cache). */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.FIREBUILD_CACHE_DIR ? path.resolve(env.FIREBUILD_CACHE_DIR) : path.join(defaultHome(env), 'cache');
}

export function defaultProfileConfDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.FIREBUILD_PROFILE_CONF_DIR ? path.resolve(env.FIREBUILD_PROFILE_CONF_DIR) : DEFAULT_PROFILE_CONF_DIR;
}
