import { DEFAULT_KERNEL_ID, type StorageProvider, type StoredKernel } from '../store/provider.js';
import { UserError } from '../util/errors.js';

/** The kernel a VM boots: the one named, else the one named `default`, else the only one stored. */
export async function pickKernel(storage: StorageProvider, id: string | undefined): Promise<StoredKernel> {
  if (id) return storage.getKernel(id);
  const ks = (await storage.listKernels()).filter((k) => !k.error);
  // The kernel named `default` (what `kernel build` and the setup action store), else the only one stored.
  const pick = ks.find((k) => k.id === DEFAULT_KERNEL_ID) ?? (ks.length === 1 ? ks[0] : undefined);
  if (pick) return storage.getKernel(pick.id);
  throw new UserError(ks.length === 0
    ? 'no kernel stored: build the fast guest kernel with firebuild kernel build, or import one with firebuild kernel import --id ID FILE [--initrd FILE]'
    : `several kernels stored (${ks.map((k) => k.id).join(', ')}) and none named ${DEFAULT_KERNEL_ID}: choose one with --vmlinux-id`);
}
