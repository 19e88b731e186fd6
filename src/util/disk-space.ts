import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError } from './errors.js';
import { nearestExisting } from './fs.js';
import { formatBytes } from './size.js';

/**
 * Free space on the host file systems firebuild writes VM disks and image copies to. A full disk is one
 * line naming the file system (its mount point and type) and what to free, never a hang or an internal
 * error: a preflight before each large copy, and a check after a VM or a step fails (QEMU reports a write
 * that hit ENOSPC to the guest, `werror=report`, so the guest's command fails instead of the VM pausing).
 */
export interface FsSpace {
  /** The mount point holding the path, and its type (from /proc/self/mountinfo). */
  mount: string;
  fstype: string;
  /** Bytes this process may still write (root may use the reserved blocks) and the file system's size. */
  free: number;
  size: number;
}

/** Below this a file system counts as full when a VM or a step has failed on it. */
export const FULL_BELOW_BYTES = 32 * 1024 ** 2;

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The mount point and type of the file system holding `p` (the longest mount point that is a prefix of its real path). */
async function mountOf(p: string): Promise<{ mount: string; fstype: string }> {
  const real = await fsp.realpath(p).catch(() => p);
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  let best = { mount: '/', fstype: 'unknown' };
  for (const line of text.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const mount = unescapeMount(pre.split(' ')[4] ?? '');
    const inside = mount === '/' || real === mount || real.startsWith(mount.endsWith('/') ? mount : mount + '/');
    // Later lines are mounted over earlier ones at the same point: >= keeps the last.
    if (inside && mount.length >= best.mount.length) best = { mount, fstype: post.split(' ')[0] ?? 'unknown' };
  }
  return best;
}

export async function fsSpace(p: string): Promise<FsSpace> {
  const at = await nearestExisting(p);
  const st = await fsp.statfs(at);
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  return { ...(await mountOf(at)), free: (root ? st.bfree : st.bavail) * st.bsize, size: st.blocks * st.bsize };
}

function describe(s: FsSpace): string {
  return `the ${s.fstype} file system at ${s.mount} (${formatBytes(s.free)} free of ${formatBytes(s.size)})`;
}

/**
 * After a failure: the one-line error when the file system holding `file` is (nearly) full, else
 * undefined. `what` names the disk ("the build disk of RUN at Dockerfile:3"), `hint` how to make room.
 */
export async function diskFullError(file: string, what: string, hint: string, where?: { file?: string; line?: number }): Promise<UserError | undefined> {
  const s = await fsSpace(path.dirname(file)).catch(() => undefined);
  if (!s || s.free >= FULL_BELOW_BYTES) return undefined;
  return new UserError(`the host disk is full: ${what} (${file}) is on ${describe(s)}: ${hint}`, where ?? {});
}

/** Preflight: `bytes` must fit on the file system that will hold `dest`, with a margin, else one line saying so. */
export async function requireFree(dest: string, bytes: number, what: string, hint: string): Promise<void> {
  const s = await fsSpace(path.dirname(dest));
  const need = bytes + FULL_BELOW_BYTES;
  if (s.free < need) throw new UserError(`not enough disk space for ${what}: it needs about ${formatBytes(need)} on ${describe(s)}: ${hint}`);
}
