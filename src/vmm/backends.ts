/**
 * The VMM backends' names: THE one list (the state schema, the CLI's --backend, the actions' `backend` and
 * `vmm` inputs). No imports: the CLI loads it while defining its flags.
 */
export const BACKENDS = ['qemu', 'firecracker'] as const;
export type BackendName = (typeof BACKENDS)[number];
/** What a user may ask for: a backend, or `auto` (Firecracker when its binaries are configured, else QEMU). */
export const BACKEND_CHOICES = ['auto', ...BACKENDS] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
