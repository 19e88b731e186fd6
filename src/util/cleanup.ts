/**
 * What this process owns on the host that must not outlive it: the VMs it started, build work dirs, temp
 * dirs of pulls and pushes. Each is registered (`own`) the moment it exists and released when its user is
 * done with it (the returned function, which does NOT run the cleanup: the user already did or handed it
 * on). When the process is cancelled (the runner sends SIGINT, then SIGTERM 7.5 s later, then SIGKILL 2.5 s
 * after that; a terminal's Ctrl-C is SIGINT) `exitOnSignals` runs every registered cleanup, newest first,
 * then exits with 128 + the signal's number. From the first signal on, `own` refuses new work: it runs
 * the new cleanup at once and throws `CancelledError`, so a loop between two steps never starts the next.
 *
 * A SIGKILL (the runner's last word, 10 s after its SIGINT) runs no handler. For that case an owned thing
 * can carry a `Resource`, the descriptor another process acts on (a VM by id, a temp dir by path): a face
 * installs one watcher (`watchOwned`) that is told the live descriptors whenever they change, at once and
 * synchronously (the actions save them to the step's state, and their post step removes what is left).
 */
export type Cleanup = () => Promise<void> | void;

/** What an owned thing is, for a process that outlives this one: a VM by its id, a temp dir by its path. */
export type Resource = { kind: 'vm'; id: string } | { kind: 'dir'; path: string };

export class CancelledError extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`cancelled by ${signal}`);
    this.name = 'CancelledError';
  }
}

interface Owned {
  what: string;
  fn: Cleanup;
  resource?: Resource;
}

const owned = new Map<number, Owned>();
let nextId = 1;
let cancelledBy: NodeJS.Signals | undefined;
let watcher: ((live: Resource[]) => void) | undefined;

/**
 * Register a cleanup; returns the function that releases it (without running it). `resource` describes
 * the thing to the watcher (watchOwned), which hears of it before `own` returns.
 */
export function own(what: string, fn: Cleanup, resource?: Resource): () => void {
  if (cancelledBy) {
    void Promise.resolve().then(fn).catch(() => undefined);
    throw new CancelledError(cancelledBy);
  }
  const id = nextId++;
  owned.set(id, { what, fn, ...(resource ? { resource } : {}) });
  if (resource) tellWatcher();
  return () => forget(id);
}

/** Drop a registration; the watcher hears of it when it described a resource. */
function forget(id: number): void {
  const o = owned.get(id);
  if (o && owned.delete(id) && o.resource) tellWatcher();
}

function tellWatcher(): void {
  if (!watcher) return;
  try {
    watcher(ownedResources());
  } catch {
    // The watcher reports its own failures; the registry goes on.
  }
}

/** The descriptors of what is owned now, oldest first. */
export function ownedResources(): Resource[] {
  return [...owned.values()].flatMap((o) => (o.resource ? [o.resource] : []));
}

/**
 * Install the one watcher of the owned resources: told the live list now and after every change (an
 * owned resource registered, released, or removed by the cancel). It must be quick and synchronous (it
 * runs inside `own` and the release functions). Returns the function that removes it.
 */
export function watchOwned(fn: (live: Resource[]) => void): () => void {
  watcher = fn;
  tellWatcher();
  return () => {
    if (watcher === fn) watcher = undefined;
  };
}

/** Throws CancelledError once a cancel signal arrived (call between steps of long work). */
export function throwIfCancelled(): void {
  if (cancelledBy) throw new CancelledError(cancelledBy);
}

export function cancelled(): NodeJS.Signals | undefined {
  return cancelledBy;
}

/** What is registered now (for tests and for the log line of a cancel). */
export function ownedNow(): string[] {
  return [...owned.values()].map((o) => o.what);
}

/**
 * Run every registered cleanup, newest first; a failing one does not stop the others. Returns the failures.
 * A registration is dropped once its cleanup succeeded: what could not be removed stays registered (and
 * described to the watcher), for the process that looks after this one.
 */
export async function cleanupAll(): Promise<{ what: string; error: Error }[]> {
  const failures: { what: string; error: Error }[] = [];
  const entries = [...owned.entries()].reverse();
  for (const [id, o] of entries) {
    // Released meanwhile (by the cleanup of another entry, e.g. a VM's teardown): nothing left to do.
    if (!owned.has(id)) continue;
    try {
      await o.fn();
      forget(id);
    } catch (err) {
      failures.push({ what: o.what, error: err as Error });
    }
  }
  return failures;
}

const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

/**
 * Install the cancel handlers of a process entry point (the CLI's bin, each action's main). On the first
 * SIGINT/SIGTERM/SIGHUP: mark the process cancelled, run every cleanup, then exit 128+n. Later signals
 * while it cleans up are noted but do not cut the cleanup short (SIGKILL, which cannot be caught, would).
 * Returns a function that removes the handlers.
 */
export function exitOnSignals(o: { report?: (line: string) => void; exit?: (code: number) => void } = {}): () => void {
  const report = o.report ?? ((line: string) => process.stderr.write(line + '\n'));
  const exit = o.exit ?? ((code: number) => process.exit(code));
  const handler = (signal: NodeJS.Signals): void => {
    if (cancelledBy) {
      report(`firebuild: ${signal} received while cleaning up after ${cancelledBy}: still cleaning up`);
      return;
    }
    cancelledBy = signal;
    const what = ownedNow();
    report(`firebuild: ${signal} received: ${what.length ? `removing ${what.join(', ')}` : 'nothing to clean up'}`);
    void cleanupAll().then((failures) => {
      for (const f of failures) report(`firebuild: could not remove ${f.what}: ${f.error.message} (run firebuild purge)`);
      exit(SIGNAL_EXIT[signal] ?? 1);
    });
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, handler);
  return () => {
    for (const s of signals) process.off(s, handler);
  };
}

/** For tests: forget every registration and the cancel. */
export function resetCleanupsForTests(): void {
  owned.clear();
  cancelledBy = undefined;
  watcher = undefined;
}
