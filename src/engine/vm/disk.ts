import * as fsp from 'node:fs/promises';
import { requireFree } from '../../util/disk-space.js';
import { exec } from '../../util/exec.js';
import { diskUsage } from '../../util/fs.js';

/** What to do about a full disk under the build's work directory. */
export const DISK_FULL_HINT = 'free space there, or point TMPDIR at a larger file system (the build works under TMPDIR)';

/** Preflight of an image copy into the build's work directory: its allocated size must fit. */
export async function roomForCopy(src: string, dest: string, what: string): Promise<void> {
  await requireFree(dest, (await diskUsage(src)).allocated, what, DISK_FULL_HINT);
}

/** Grow an ext4 image file to `bytes` (never shrinks here). */
export async function growTo(image: string, bytes: number): Promise<void> {
  const st = await fsp.stat(image);
  if (st.size >= bytes) return;
  await exec('e2fsck', ['-fy', image], { allowFailure: true });
  await fsp.truncate(image, bytes);
  await exec('resize2fs', [image]);
}
