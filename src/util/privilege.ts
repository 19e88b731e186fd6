import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import { UserError } from './errors.js';
import { exec } from './exec.js';

/**
 * What the actions and the CLI may do as the user they run as. Everything a build or a QEMU VM with
 * user-mode networking needs runs unprivileged; the jailer (Firecracker) and CNI networks (network
 * namespaces, taps, iptables) need root. A runner's unprivileged user gets it only through one narrow path
 * that runner-setup installs on purpose: a sudo rule for firebuild's privileged helper, nothing else.
 * A step that needs root without that path fails before it changes anything, with one line naming the fix.
 */
export const PRIV_HELPER = '/usr/local/libexec/firebuild-priv';
/** The runner-setup invocations that grant the root-only parts, and Docker access (root-equivalent). */
export const RUNNER_SETUP_PRIVILEGED = 'runner-setup/setup.sh --privileged-vms';
export const RUNNER_SETUP_DOCKER = 'runner-setup/setup.sh --with-docker';

/** `root`: this process is root; `helper`: sudo may run the privileged helper without a password; `none`. */
export type RootAccess = 'root' | 'helper' | 'none';

export interface RootAccessProbe {
  uid?: number | undefined;
  helper?: string;
}

/** How this process could do root-only work; `sudo -n -l HELPER` asks sudo without running anything or prompting. */
export async function rootAccess(probe: RootAccessProbe = {}): Promise<RootAccess> {
  const uid = 'uid' in probe ? probe.uid : process.geteuid?.();
  if (uid === 0) return 'root';
  const helper = probe.helper ?? PRIV_HELPER;
  if (!(await fsp.stat(helper).then((s) => s.isFile(), () => false))) return 'none';
  const r = await exec('sudo', ['-n', '-l', helper], { allowFailure: true, timeoutMs: 5000 }).catch(() => undefined);
  return r?.code === 0 ? 'helper' : 'none';
}

/** `user runner (uid 1001)`, for messages. */
export function currentUser(): string {
  const uid = process.geteuid?.() ?? -1;
  let name = '';
  try {
    name = os.userInfo().username;
  } catch {
    // A uid without a passwd entry (a container's arbitrary user): the number says enough.
  }
  return name ? `user ${name} (uid ${uid})` : `uid ${uid}`;
}

/** The one error for a root-only part asked for by a user without root access. */
export function needsRootError(what: string, instead: string): UserError {
  return new UserError(`${what} needs root, and this runs as ${currentUser()} without firebuild's privileged helper: run ${RUNNER_SETUP_PRIVILEGED} on the host (a sudo rule for ${PRIV_HELPER} only), or ${instead}`);
}

/**
 * Throw unless this process is root. In-process work (the actions, a build, `run` as this user) cannot
 * borrow the privileged helper: the helper runs its own root-owned install with root's profile, so a user
 * who has it is told to go through it (`sudo -n firebuild-priv run ...`) rather than half-using it here.
 */
export async function requireRootAccess(what: string, instead: string, probe: RootAccessProbe = {}): Promise<RootAccess> {
  const access = await rootAccess(probe);
  if (access === 'none') throw needsRootError(what, instead);
  if (access === 'helper') throw new UserError(`${what} needs root, and this runs as ${currentUser()}: boot it through firebuild's privileged helper (sudo -n ${PRIV_HELPER} run ...), or ${instead}`);
  return access;
}
