import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as core from '@actions/core';
import { defaultProfileConfDir } from '../profile/profile.js';
import { loadSettings, parseRegistryMirrors, type Settings, type SettingsFlags } from '../profile/settings.js';
import { cancelled, exitOnSignals, watchOwned } from '../util/cleanup.js';
import { InternalError, UserError } from '../util/errors.js';
import { withLock } from '../util/lock.js';
import { ensurePrivateDir, privateTempDir, userTempRoot } from '../util/private-dir.js';
import type { Fields, Logger, Progress } from '../util/logger.js';

/**
 * What every action shares: a Logger backed by @actions/core (debug lines, warnings and errors as
 * annotations), input readers that validate once, and the top level that turns errors into one
 * annotation (at the Dockerfile's file and line when the error has them) and a failed step.
 */
function fmt(message: string, fields?: Fields): string {
  const f = Object.entries(fields ?? {}).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return f.length ? `${message} ${f.join(' ')}` : message;
}

export class ActionsLogger implements Logger {
  constructor(private readonly module = '') {}
  private m(s: string): string {
    return this.module ? `[${this.module}] ${s}` : s;
  }
  trace(message: string, fields?: Fields): void {
    core.debug(this.m(fmt(message, fields)));
  }
  debug(message: string, fields?: Fields): void {
    core.debug(this.m(fmt(message, fields)));
  }
  info(message: string, fields?: Fields): void {
    core.info(this.m(fmt(message, fields)));
  }
  warn(message: string, fields?: Fields): void {
    core.warning(this.m(fmt(message, fields)));
  }
  error(message: string, fields?: Fields): void {
    core.error(this.m(fmt(message, fields)));
  }
  child(module: string): Logger {
    return new ActionsLogger(module);
  }
  progress(label: string): Progress {
    const started = Date.now();
    core.info(this.m(`${label}...`));
    return { update: () => undefined, done: (msg) => core.info(this.m(`${msg ?? label} (${Math.round((Date.now() - started) / 100) / 10} s)`)) };
  }
}

export interface InputOptions { required?: boolean; choices?: readonly string[]; default?: string }

/** A declared input, trimmed; required ones fail with one line naming the input. */
export function input(name: string, opts: InputOptions = {}): string {
  return checked(name, core.getInput(name) || opts.default || '', opts);
}

function checked(name: string, v: string, opts: InputOptions): string {
  if (opts.required && !v) throw new UserError(`input '${name}' is required: set it under with: in the workflow`);
  if (v && opts.choices && !opts.choices.includes(v)) throw new UserError(`input '${name}' is '${v}': use one of ${opts.choices.join(', ')}`);
  return v;
}

/**
 * An input that has a second name: `alias` is another spelling of `name` (docker/build-push-action's
 * `file` for `dockerfile`), or, with `deprecated`, an old name kept working with one warning naming the
 * new one. Both given with different values is one error. Neither may have a default in action.yml (the
 * runner would always set it): the default is applied here.
 */
export function aliasInput(name: string, alias: string, opts: InputOptions & { deprecated?: boolean } = {}): string {
  const v = core.getInput(name);
  const a = core.getInput(alias);
  if (a && opts.deprecated) core.warning(`input '${alias}' is deprecated: use '${name}' (the same value)`);
  if (v && a && v !== a) throw new UserError(`inputs '${name}' and '${alias}' name the same thing and differ ('${v}', '${a}'): keep '${name}'`);
  return checked(v ? name : a ? alias : name, v || a || opts.default || '', opts);
}

/** Lines (or comma-separated items) of a list input, empty entries dropped. */
export function listInput(name: string): string[] {
  return core.getInput(name).split(/\r?\n|,(?=[A-Za-z_][A-Za-z0-9_.-]*=|[^=]*$)/).map((s) => s.trim()).filter(Boolean);
}

export function boolInput(name: string, def = false): boolean {
  const v = core.getInput(name).trim().toLowerCase();
  if (!v) return def;
  if (['true', 'yes', '1'].includes(v)) return true;
  if (['false', 'no', '0'].includes(v)) return false;
  throw new UserError(`input '${name}' is '${v}': use true or false`);
}

/** The state key under which a main step keeps the list of what it owns (util/cleanup.ts resources) for its post step. */
export const STATE_OWNED = 'owned';

/**
 * Run an action body: errors become one annotation and a failed step (exit code 1, as the runner expects).
 * `recordOwned` (actions with a post step that removes what the main step left): every VM and temp dir
 * the body owns is in the step's state (STATE_OWNED, a JSON list) from the moment it exists until it is
 * gone, saved on every change; a main step killed outright (the runner's SIGKILL) leaves its post step the
 * list (removeLeftOwned).
 */
export async function runAction(body: () => Promise<void>, o: { recordOwned?: boolean } = {}): Promise<void> {
  // As bin/firebuild.js: the event loop stays referenced until the body settles (see there why).
  const keepAlive = setInterval(() => undefined, 1 << 30);
  // The runner cancels with SIGINT, then SIGTERM 7.5 s later, then SIGKILL: every VM and work dir the body
  // owns (util/cleanup.ts) is removed on the first signal, and the step exits 130/143.
  const removeHandlers = exitOnSignals({ report: (line) => core.info(line) });
  if (o.recordOwned) recordOwned();
  try {
    await body();
  } catch (err) {
    // Cancelled: the signal handler is removing what the body owned and ends the step (130/143); the
    // body's error is that cancel, not a failure to report.
    if (cancelled()) return;
    const e = err as Error & { file?: string; line?: number };
    const props = e instanceof UserError && e.file ? { file: e.file, ...(e.line ? { startLine: e.line } : {}) } : {};
    if (!(e instanceof UserError)) core.debug(String(e.stack ?? e));
    // One annotation: core.setFailed would add a second one.
    core.error(e.message, props);
    process.exitCode = 1;
  } finally {
    // The handlers (and the loop) stay while a cancel's cleanup runs: a second signal must not cut it short.
    if (!cancelled()) {
      removeHandlers();
      clearInterval(keepAlive);
    }
  }
}

/** The owned resources into the step's state on every change (the last line of a key is the one the runner keeps). */
function recordOwned(): void {
  let warned = false;
  watchOwned((live) => {
    try {
      core.saveState(STATE_OWNED, JSON.stringify(live));
    } catch (err) {
      if (!warned) core.warning(`could not record the VMs and temp dirs of this step for its post step (${(err as Error).message}): after a cancel run firebuild purge on the runner`);
      warned = true;
    }
  });
}

/**
 * A post step's part for what its main step recorded (runAction's recordOwned) and still owned when it
 * ended: nothing after a normal end (the list is empty); after a main step killed outright, its VMs torn
 * down and its temp dirs removed (commands/vm.ts removeLeftovers: by id in this run cache, only firebuild
 * temp dirs). Never fails the job: a problem is a warning.
 */
export async function removeLeftOwned(module: string): Promise<void> {
  const text = core.getState(STATE_OWNED);
  if (!text) return;
  let list: unknown;
  try {
    list = JSON.parse(text);
  } catch {
    core.warning(`the main step's record of its VMs and temp dirs is not JSON: run firebuild purge on the runner`);
    return;
  }
  if (Array.isArray(list) && list.length === 0) return;
  try {
    const { removeLeftovers } = await import('../commands/vm.js');
    const r = await removeLeftovers(await actionSettings(), list, new ActionsLogger(module));
    for (const id of r.vms) core.info(`VM ${id} removed (the main step ended without removing it)`);
    for (const d of r.dirs) core.info(`${d} removed (the main step ended without removing it)`);
    for (const x of r.refused) core.warning(`not removed: ${x}`);
  } catch (err) {
    core.warning(`could not remove what the main step left (${(err as Error).message}): run firebuild purge on the runner`);
  }
}

/** Upload files as an Actions artifact (the runner's results service; ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL). */
export async function uploadArtifact(name: string, files: string[], rootDir: string): Promise<{ id?: number; size?: number }> {
  const { DefaultArtifactClient } = await import('@actions/artifact');
  try {
    return await new DefaultArtifactClient().uploadArtifact(name, files, rootDir);
  } catch (err) {
    const msg = (err as Error).message;
    if (/already exists|Conflict|409/i.test(msg)) throw new UserError(`an artifact named ${name} already exists in this run: choose another artifact-name`);
    throw new UserError(`uploading the artifact ${name} failed: ${msg}`);
  }
}

/** The settings every action uses: the profile the setup action made (FIREBUILD_PROFILE), else the defaults. */
export async function actionSettings(env: NodeJS.ProcessEnv = process.env, flags: SettingsFlags = {}): Promise<Settings> {
  return loadSettings({ ...(env.FIREBUILD_PROFILE ? { profile: env.FIREBUILD_PROFILE } : {}), profileConfDir: defaultProfileConfDir(env), flags });
}

/** `registry-mirrors`: docker.io mirrors, newline or comma separated, checked as --registry-mirror is (one line naming the input). */
export function registryMirrorsInput(): string[] {
  return parseRegistryMirrors(input('registry-mirrors').split(/[\n,]/).map((m) => m.trim()).filter(Boolean), "input 'registry-mirrors'");
}

/**
 * The Actions cache (@actions/cache) for one directory under one key: restore tells whether the exact
 * key was found; save never fails the step (another job may be saving the same key), it warns.
 */
export async function cacheRestore(dir: string, key: string): Promise<boolean>;
/** With restore keys: the key that matched (the newest entry under a prefix), or undefined. */
export async function cacheRestore(dir: string, key: string, restoreKeys: string[]): Promise<string | undefined>;
export async function cacheRestore(dir: string, key: string, restoreKeys?: string[]): Promise<boolean | string | undefined> {
  const cache = await import('@actions/cache');
  if (!cache.isFeatureAvailable()) {
    core.info(`the Actions cache is not available here: not restoring ${key}`);
    return restoreKeys ? undefined : false;
  }
  try {
    const hit = await cache.restoreCache([dir], key, restoreKeys);
    return restoreKeys ? hit : hit === key;
  } catch (err) {
    core.warning(`restoring ${key} from the Actions cache failed: ${(err as Error).message}`);
    return restoreKeys ? undefined : false;
  }
}

/** `cache-version`: part of Actions cache keys (bumped to start from empty caches). */
export function cacheVersionInput(): string {
  const v = input('cache-version', { default: '1' });
  if (!/^[A-Za-z0-9._-]{1,32}$/.test(v)) throw new UserError(`input 'cache-version' is '${v}': use up to 32 letters, digits, '.', '_' or '-'`);
  return v;
}

/**
 * The actions' private directory under `base`: `<base>/firebuild-<uid>`, mode 0700, ours, checked with lstat
 * before every use (a planted symlink or another user's directory is refused with one line, never followed).
 */
export async function actionsTempDir(base: string = os.tmpdir()): Promise<string> {
  return ensurePrivateDir(userTempRoot(base), 'actions temp directory');
}

/**
 * Run `fn` with the directory where a cache entry's files sit while @actions/cache archives or restores
 * them. The path must be the same in every job (the cache version hashes the paths: no random name, and
 * not RUNNER_TEMP, which differs between runner installs), so it lives in the private
 * `<tmpdir>/firebuild-<uid>/cache/`. Jobs of one user on one host (several runners, a matrix) share that
 * path: each use holds the key's lock, so one job never empties or removes the files another is still
 * archiving or restoring. The directory is emptied first (what a killed step left) and removed after.
 */
export async function withCacheEntryDir<T>(key: string, fn: (dir: string) => Promise<T>, base: string = os.tmpdir()): Promise<T> {
  if (!/^[A-Za-z0-9._-]{1,512}$/.test(key) || key.startsWith('.')) throw new InternalError(`unexpected cache key '${key}'`);
  const caches = await ensurePrivateDir(path.join(await actionsTempDir(base), 'cache'), 'actions cache directory');
  const dir = path.join(caches, key);
  // The lock (`<key>.lock`, refreshed while held) goes stale when its holder is killed, and is taken over.
  return withLock(dir, async () => {
    await fsp.rm(dir, { recursive: true, force: true });
    try {
      return await fn(dir);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
}

/** A fresh directory with an unpredictable name (mkdtemp) in the actions' private directory under RUNNER_TEMP (emptied every job), else under the tmpdir. */
export async function actionsWorkDir(prefix: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return privateTempDir(await actionsTempDir(env.RUNNER_TEMP || os.tmpdir()), prefix);
}

export async function cacheSave(dir: string, key: string): Promise<boolean> {
  const cache = await import('@actions/cache');
  if (!cache.isFeatureAvailable()) return false;
  try {
    return (await cache.saveCache([dir], key)) !== -1;
  } catch (err) {
    core.warning(`saving ${key} to the Actions cache failed: ${(err as Error).message}`);
    return false;
  }
}

