import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { exists } from '../util/fs.js';

/**
 * How a VM reaches a network, as the runtime takes it: the mode, the ports it publishes, and where the
 * host-wide pieces (CNI plugins, the iptables lock) live. Parsed once at the edge (flags, inputs).
 *
 * `user`: QEMU's user-mode networking inside a namespace of its own (src/net/isolated-user.ts): outbound
 * only, never the host's loopback, addresses or host-only subnets, nor 169.254.0.0/16. `user-host`: QEMU's
 * user-mode networking in the host's namespace (10.0.2.2 is the host's loopback): run VMs only, an explicit
 * opt-in. `none`: no NIC. `cni`: a CNI network.
 */
export type NetworkMode = 'user' | 'user-host' | 'none' | 'cni';
export const NETWORK_MODES = ['user', 'user-host', 'none'] as const;

export interface PortSpec { proto: 'tcp' | 'udp'; hostAddr: string; hostPort: number; guestPort: number }

/** Where host-wide locks live (iptables changes). */
export const DEFAULT_LOCK_DIR = '/run/firebuild';

/** User-mode networking: QEMU's slirp gives the guest this address. */
export const USER_NET = { ip: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' };

/** The CNI interface inside the VM's namespace (redirected to the tap the VMM opens). */
export const CNI_IFNAME = 'eth0';

/**
 * `[hostip:]hostport:guestport[/tcp|udp]`. Without a host IP: 127.0.0.1 for user networking, every local
 * address (0.0.0.0) for CNI networking.
 */
export function parsePort(s: string, defaultHost = '127.0.0.1'): PortSpec {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/.exec(s);
  const ok = (n: string | undefined): boolean => Number(n) >= 1 && Number(n) <= 65535;
  if (!m || !ok(m[2]) || !ok(m[3])) throw new UserError(`malformed --port '${s}': use [hostip:]hostport:guestport[/tcp|udp], e.g. 127.0.0.1:8080:80`);
  return { proto: (m[4] ?? 'tcp') as 'tcp' | 'udp', hostAddr: m[1] ?? defaultHost, hostPort: Number(m[2]), guestPort: Number(m[3]) };
}

/** `--cni-bin-dir`, or the first of the usual places that exists. */
export async function cniBinDir(flag?: string): Promise<string> {
  if (flag) return path.resolve(flag);
  for (const d of ['/opt/cni/bin', '/usr/lib/cni']) {
    if (await exists(d)) return d;
  }
  throw new UserError('no CNI plugins found in /opt/cni/bin or /usr/lib/cni: install containernetworking-plugins or set --cni-bin-dir');
}
