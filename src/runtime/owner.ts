import { own } from '../util/cleanup.js';

/**
 * Every VM this process launches is owned by it (util/cleanup.ts) from the moment its state exists: a
 * SIGINT/SIGTERM of the process tears it down. A use case whose VM is meant to outlive the process (`run
 * --daemonize`, the smoke-test action's VM that its post step kills) releases it with disownVm once the VM
 * is up; a teardown releases it too (nothing is left to clean).
 */
const releases = new Map<string, () => void>();

/** Register the VM `id` with the process's owner registry; `cleanup` removes it (see launchVm). */
export function ownVm(id: string, what: string, cleanup: () => Promise<void>): void {
  releases.set(id, own(what, async () => {
    releases.delete(id);
    await cleanup();
  }));
}

/** Release the VM from this process's ownership: it outlives the process (or is already gone). */
export function disownVm(id: string): void {
  releases.get(id)?.();
  releases.delete(id);
}

/** True while this process owns the VM (for tests). */
export function ownsVm(id: string): boolean {
  return releases.has(id);
}
