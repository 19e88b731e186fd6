import type { Logger } from '../util/logger.js';

/**
 * The vm engine's RUN --mount=type=cache volumes (engine/vm/cache-volumes.ts): list them, remove them
 * (all, or by id). A volume a running build holds is never removed (its lock is tried, not waited for).
 */
export async function cacheMountsList(cacheDir: string): Promise<{ id: string; file: string; bytes: number; lastUsed: string; inUse: boolean }[]> {
  const { listCacheVolumes } = await import('../engine/vm/cache-volumes.js');
  return listCacheVolumes(cacheDir);
}

export async function cacheMountsPrune(cacheDir: string, ids: readonly string[] | undefined, log: Logger): Promise<{ removed: string[]; busy: string[] }> {
  const { pruneCacheVolumes } = await import('../engine/vm/cache-volumes.js');
  const r = await pruneCacheVolumes(cacheDir, ids);
  for (const id of r.busy) log.warn(`cache ${id} is in use by a running build: kept`);
  return r;
}
