import { createHash } from 'node:crypto';

/** The vm engine's cache keys: sha256 over the parts, each ended by a NUL so that no two part lists collide. */
export function sha(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}
