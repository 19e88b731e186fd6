import type { FirecrackerMode } from './firecracker-run.js';

/** The VMMs firebuild boots guests with. */
export type BackendName = 'qemu' | 'firecracker';

/** Firecracker's settings (binaries from the profile or flags). */
export interface FirecrackerSettings { binary?: string; jailer?: string; chrootBase: string; uid: number; gid: number; mode: FirecrackerMode }

/** Pick the backend: `auto` is Firecracker when both its binaries are configured, else QEMU. */
export function chooseBackend(o: { backend: 'auto' | BackendName; firecracker?: FirecrackerSettings | undefined }): BackendName {
  if (o.backend !== 'auto') return o.backend;
  return o.firecracker?.binary && o.firecracker.jailer ? 'firecracker' : 'qemu';
}
