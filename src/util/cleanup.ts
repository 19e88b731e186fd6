/**
 * What this process owns on the host that must not outlive it: the VMs it started, build work dirs, temp
 * dirs of pulls and pushes. Each is registered (`own`) the moment it exists and released when its user is
 * done with it (the returned function, which does NOT run the cleanup: the user already did or handed it
 * on). When the process is cancelled (the runner sends SIGINT, then SIGTERM 7.5 s later, then SIGKILL 2.5 s
 * after that; a terminal's Ctrl-C is SIGINT) `exitOnSignals` runs every registered cleanup, newest first,
 * then exits with 128 + the signal's number. From the first signal on, `own` refuses new work: it runs
 * the new cleanup at once and throws `CancelledError`, so a loop between two steps never starts the next.
 */
export type Cleanup = () => Promise<void> | void;

export class CancelledError extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`cancelled by ${signal}`);
    this.name = 'CancelledError';
  }
}

interface Owned {
  what: string;
  fn: Cleanup;
}

const owned = new Map<number, Owned>();
let nextId = 1;
let cancelledBy: NodeJS.Signals | undefined;

/** Register a cleanup; returns the function that releases it (without running it). */
export function own(what: string, fn: Cleanup): () => void {
  if (cancelledBy) {
    void Promise.resolve().then(fn).catch(() => undefined);
    throw new CancelledError(cancelledBy);
  }
  const id = nextId++;
  owned.set(id, { what, fn });
  return () => void owned.delete(id);
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

/** Run every registered cleanup, newest first; a failing one does not stop the others. Returns the failures. */
export async function cleanupAll(): Promise<{ what: string; error: Error }[]> {
  const failures: { what: string; error: Error }[] = [];
  const entries = [...owned.entries()].reverse();
  for (const [id, o] of entries) {
    owned.delete(id);
    try {
      await o.fn();
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
}
