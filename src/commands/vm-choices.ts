/**
 * The VM choices the faces offer (the CLI's --backend, the actions' `backend` and `vmm` inputs): the lists
 * the runtime and the state schema use. No imports beyond those dependency-free lists: the CLI loads this
 * while defining its flags.
 */
export { BACKENDS, BACKEND_CHOICES, type BackendChoice, type BackendName } from '../vmm/backends.js';
