import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { InternalError } from './errors.js';

// proper-lockfile (and the signal-exit handlers it installs) loads with the first lock taken, not with every
// module that may take one: `firebuild image ls` takes none (bench/cli-start.mjs).
const lockfileModule = async (): Promise<typeof import('proper-lockfile')> => (await import('proper-lockfile')).default;

export interface LockOptions {
  /** A lock not refreshed for this long is taken to belong to a dead process (proper-lockfile's `stale`). */
  staleMs?: number;
  /** Give up after this long. */
  waitMs?: number;
}

/**
 * Run `fn` holding an inter-process lock named by `lockPath` (a directory `<lockPath>.lock` is created).
 * Writers of the same name serialize; a lock left by a killed process goes stale and is taken over.
 */
export async function withLock<T>(lockPath: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const staleMs = opts.staleMs ?? 10_000;
  const waitMs = opts.waitMs ?? 10 * 60_000;
  await fsp.mkdir(path.dirname(lockPath), { recursive: true });
  const deadline = Date.now() + waitMs;
  let release: (() => Promise<void>) | undefined;
  const lockfile = await lockfileModule();
  for (;;) {
    try {
      release = await lockfile.lock(lockPath, { realpath: false, stale: staleMs, update: Math.max(1000, staleMs / 4) });
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== 'ELOCKED' || Date.now() > deadline) {
        throw new InternalError(`cannot take lock ${lockPath}`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}

/** A lock held for as long as a piece of work lasts (a staging directory being written). */
export interface HeldLock {
  release(): Promise<void>;
  /** Set when the lock could not be kept fresh (it went stale and may have been taken over). */
  compromised(): Error | undefined;
}

/**
 * Take `<lockPath>.lock` now (no waiting) and keep its mtime fresh until released: others judge the work
 * alive by the lock (lockIsFresh), never by a process id, which another PID namespace cannot see and a
 * new process can reuse.
 */
export async function holdLock(lockPath: string, opts: { staleMs?: number } = {}): Promise<HeldLock> {
  const staleMs = opts.staleMs ?? 60_000;
  let lost: Error | undefined;
  const lockfile = await lockfileModule();
  const release = await lockfile.lock(lockPath, {
    realpath: false,
    stale: staleMs,
    update: Math.max(1000, staleMs / 4),
    onCompromised: (err: Error) => {
      lost = err;
    },
  });
  return { release: () => release().catch(() => undefined), compromised: () => lost };
}

/** Whether `<lockPath>.lock` is held and was refreshed within `staleMs`. */
export async function lockIsFresh(lockPath: string, staleMs = 60_000): Promise<boolean> {
  return (await lockfileModule()).check(lockPath, { realpath: false, stale: staleMs });
}
