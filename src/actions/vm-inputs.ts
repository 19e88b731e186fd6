import { vmSettingsFor, type VmChoice, type VmSettings } from '../commands/vm-settings.js';
import type { Settings } from '../profile/settings.js';
import { BACKEND_CHOICES, type BackendChoice } from '../commands/vm-choices.js';
import { UserError } from '../util/errors.js';
import { input } from './common.js';
/** The VM inputs smoke-test and build-rootfs share: the VMM, and the network it boots on. */
export interface VmInputs {
  /**
   * '' = the backend's default: user for QEMU, none for Firecracker (which has no user-mode networking).
   * user-host (QEMU user-mode networking that reaches the host's services) is for smoke-test only.
   */
  network: '' | 'user' | 'user-host' | 'none';
  backend: BackendChoice;
  cniNetwork: string;
  cniConfDir: string;
}

/** The `backend` input's choices (one list with the CLI's --backend and the state schema). */
export const BACKENDS = BACKEND_CHOICES;
export const NETWORKS = ['user', 'none'] as const;

/** `forRun`: smoke-test's VM, which may opt in to reach the host's services; build VMs never do. */
export function getVmInputs(forRun = false): VmInputs {
  const i: VmInputs = {
    network: input('network', { choices: forRun ? [...NETWORKS, 'user-host'] : NETWORKS }) as VmInputs['network'],
    backend: input('backend', { choices: BACKENDS, default: 'auto' }) as VmInputs['backend'],
    cniNetwork: input('cni-network'),
    cniConfDir: input('cni-conf-dir', { default: '/etc/cni/conf.d' }),
  };
  if (i.cniNetwork && i.network) throw new UserError(`inputs 'network' and 'cni-network' exclude each other: keep one`);
  return i;
}

/** Those inputs as a VM choice (the jailer's ids and Firecracker's api mode are the defaults). */
export function vmChoice(i: VmInputs): VmChoice {
  return {
    backend: i.backend,
    ...(i.network ? { network: i.network } : {}),
    ...(i.cniNetwork ? { cni: { network: i.cniNetwork, confDir: i.cniConfDir } } : {}),
  };
}

/** The runtime's options for those inputs; Firecracker's binaries come from the profile the setup action wrote (or one named by FIREBUILD_PROFILE). */
export async function vmRuntime(i: VmInputs, settings: Settings): Promise<VmSettings> {
  return vmSettingsFor(vmChoice(i), settings);
}
