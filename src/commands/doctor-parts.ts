// The doctor's optional parts, apart from its checks (docker client, kvm, net probes) so the CLI can name
// them in `doctor --help` without loading any of that.

/** Parts that are optional unless `--require` names them. */
export const OPTIONAL_PARTS = ['kvm', 'docker', 'firecracker', 'jailer', 'cni', 'kernel', 'profile-dir', 'privileges'] as const;
