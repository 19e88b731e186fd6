import * as path from 'node:path';

/** Length of the VMM ids firebuild generates (lower-case letters and digits), as the seed's. */
export const VMM_ID_LENGTH = 20;

/** sun_path holds 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;

export const DEFAULT_FIRECRACKER_BINARY_NAME = 'firecracker';

/**
 * The API socket path the jailer gives Firecracker:
 * `<chroot-base>/<firecracker binary name>/<vm id>/root/run/firecracker.socket`.
 */
export function jailerSocketPath(chrootBase: string, firecrackerBinary: string | undefined, vmId: string): string {
  const exe = firecrackerBinary ? path.basename(firecrackerBinary) : DEFAULT_FIRECRACKER_BINARY_NAME;
  return `${chrootBase.replace(/\/+$/, '')}/${exe}/${vmId}/root/run/firecracker.socket`;
}

/** The length of that path for the longest id firebuild makes. */
export function jailerSocketPathLength(chrootBase: string, firecrackerBinary: string | undefined): number {
  return jailerSocketPath(chrootBase, firecrackerBinary, 'x'.repeat(VMM_ID_LENGTH)).length;
}
