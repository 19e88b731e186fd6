import * as path from 'node:path';
import { resolveCniNetwork } from '../profile/instance.js';
import type { Settings } from '../profile/settings.js';
import type { FirecrackerMode } from '../vmm/firecracker-run.js';
import { cniBinDir, type NetworkMode } from '../net/network.js';
import { chooseBackend } from '../vmm/backend.js';
import type { BackendChoice } from '../vmm/backends.js';
import type { LaunchSpec } from '../runtime/launch.js';
import { rootAccess } from '../util/privilege.js';

/**
 * How a VM should boot and reach a network, as a face parsed it from flags (`run`, `rootfs --engine vm`)
 * or inputs (smoke-test, build-rootfs); which flags exclude each other is the face's to say, in its words.
 */
export interface VmChoice {
  backend: BackendChoice;
  /** Networking without CNI; undefined = the backend's default (user for QEMU, none for Firecracker, which has no user-mode networking). */
  network?: 'user' | 'user-host' | 'none';
  /** A CNI network to attach to; `binDir` undefined = the usual places (cniBinDir). */
  cni?: { network: string; confDir: string; binDir?: string };
  /** The uid and gid Firecracker runs as in the jail (default 65534), and how it is configured (default api). */
  jailer?: { uid: number; gid: number };
  firecrackerMode?: FirecrackerMode;
}

export type VmSettings = Pick<LaunchSpec, 'network' | 'backend' | 'firecracker'> & { cni?: LaunchSpec['cni']; portRange?: LaunchSpec['portRange'] };

/** The runtime's VM settings of a choice and the profile's settings (Firecracker's binaries and chroot base come from the profile). */
export async function vmSettingsFor(c: VmChoice, settings: Settings): Promise<VmSettings> {
  const firecracker: NonNullable<LaunchSpec['firecracker']> = {
    ...(settings.binaryFirecracker ? { binary: settings.binaryFirecracker } : {}), ...(settings.binaryJailer ? { jailer: settings.binaryJailer } : {}),
    chrootBase: settings.chrootBase, uid: c.jailer?.uid ?? 65534, gid: c.jailer?.gid ?? 65534, mode: c.firecrackerMode ?? 'api',
  };
  // The network's default follows the backend auto picks; auto passes Firecracker over for a user who
  // cannot run its jailer (a host-wide profile naming it, read by the runner's unprivileged user).
  const askRoot = c.backend === 'auto' && Boolean(firecracker.binary && firecracker.jailer);
  const backend = chooseBackend({ backend: c.backend, firecracker, jailerUsable: !askRoot || (await rootAccess()) === 'root' });
  const network: NetworkMode = c.cni ? 'cni' : (c.network ?? (backend === 'firecracker' ? 'none' : 'user'));
  return {
    backend, network, firecracker,
    // A runner instance's aliases turn the shared name a workflow asks for into the instance's own network.
    ...(c.cni ? { cni: { network: resolveCniNetwork(c.cni.network, settings.cniNetworkAliases), confDir: path.resolve(c.cni.confDir), binDir: await cniBinDir(c.cni.binDir) } } : {}),
    ...(settings.portRange ? { portRange: settings.portRange } : {}),
  };
}
