import { own } from '../util/cleanup.js';

/**
 * Every VM this process launches is owned by it (util/cleanup.ts) from the moment its state exists: a
 * SIGINT/SIGTERM of the process tears it down. A use case whose VM is meant to outlive the process (`run
 * --daemonize`, the smoke-test action's VM that its post step kills) releases it with disownVm once the VM
 * is up; a finished teardown releases it too (nothing is left to clean). The registration describes the VM
 * by id ({kind: 'vm'}), so a face that watches the owned resources (the actions) knows it from the start
 * until it is gone.
 */
const releases = new Map<string, () => void>();
/** Teardowns under way, by VM id: a second one (the cancel's, while a step tears its VM down) waits for the first. */
const endings = new Map<string, Promise<void>>();

/** Register the VM `id` with the process's owner registry; `cleanup` removes it (see launchVm). */
export function ownVm(id: string, what: string, cleanup: () => Promise<void>): void {
  releases.set(id, own(what, cleanup, { kind: 'vm', id }));
}

/** Release the VM from this process's ownership: it outlives the process (or is already gone). */
export function disownVm(id: string): void {
  releases.get(id)?.();
  releases.delete(id);
}

/**
 * Run the VM's teardown, one at a time per VM: a caller that comes while one runs waits for it. The VM stays
 * owned (and described to the watcher) until the teardown finished: a process killed in the middle of it
 * leaves the VM listed for whatever looks after it (the actions' post step). A failed teardown leaves it
 * owned, so the cancel tries again.
 */
export function endVm(id: string, teardown: () => Promise<void>): Promise<void> {
  const running = endings.get(id);
  if (running) return running;
  const p = teardown().then(() => disownVm(id)).finally(() => endings.delete(id));
  endings.set(id, p);
  return p;
}

/** True while this process owns the VM (for tests). */
export function ownsVm(id: string): boolean {
  return releases.has(id);
}
