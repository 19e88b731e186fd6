import type { KernelListEntry, StorageProvider, StoredKernel } from '../store/provider.js';
import type { Logger } from '../util/logger.js';

export interface KernelImportOptions {
  id: string;
  vmlinux: string;
  initrd?: string;
  cmdline?: string;
  overwrite?: boolean;
}

export async function kernelImport(store: StorageProvider, o: KernelImportOptions, log: Logger): Promise<StoredKernel> {
  const opts: { initrd?: string; overwrite?: boolean; cmdline?: string } = { overwrite: o.overwrite ?? false };
  if (o.initrd) opts.initrd = o.initrd;
  if (o.cmdline) opts.cmdline = o.cmdline;
  const k = await store.importKernel(o.id, o.vmlinux, opts);
  log.info('kernel imported', { id: k.id, format: k.metadata.format, initrd: Boolean(k.initrdPath) });
  return k;
}

export async function kernelList(store: StorageProvider, log: Logger): Promise<KernelListEntry[]> {
  const list = await store.listKernels();
  for (const k of list) if (k.error) log.warn(`kernel ${k.id} is unreadable`, { reason: k.error });
  return list;
}

export async function kernelRemove(store: StorageProvider, id: string, log: Logger): Promise<void> {
  await store.removeKernel(id);
  log.info('kernel removed', { id });
}
