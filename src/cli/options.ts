import { createRequire } from 'node:module';
import type { Command } from 'commander';
// Loaded by every command and --help (through program.ts): keep static imports type-only, or of modules with
// no dependency beyond node: (the rule at the top of program.ts; bench/cli-start.mjs measures the start-up).
import { BACKEND_CHOICES } from '../commands/vm-choices.js';
import { defaultProfileConfDir } from '../profile/paths.js';
import type { VmChoice } from '../commands/vm-settings.js';
import type { FirecrackerMode } from '../vmm/firecracker-run.js';
import type { Settings, SettingsFlags } from '../profile/settings.js';
import type { StorageProvider } from '../store/provider.js';
import { UserError } from '../util/errors.js';
import type { Logger, Sink } from '../util/logger.js';

// commander is a CommonJS package: require() loads it in about 60 % of the CPU time of an ESM import, which
// adds its ESM wrapper and a scan of its exports (Node 20), and every command but --version pays it.
export const commander = createRequire(import.meta.url)('commander') as typeof import('commander');
export const { Option } = commander;

export interface CliIO {
  stdout: Sink;
  stderr: Sink;
  env: NodeJS.ProcessEnv;
}

/** What each command group's `register` gets from the root program. */
export interface CliContext {
  env: NodeJS.ProcessEnv;
  out: (s: string) => void;
  /** The logger of --log-level and --log-as-json (set by the root's preAction hook, so read it in actions). */
  readonly logger: Logger;
  /** The profile's settings with this command's flags over them, and the storage they name. */
  load: (o: SettingsCliOpts) => Promise<{ settings: Settings; storage: StorageProvider }>;
}

export const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

/** Options every command that touches images, kernels or VMs takes. */
export function withProfileOptions(cmd: Command, env: NodeJS.ProcessEnv, what: { storage?: boolean; runtime?: boolean } = {}): Command {
  cmd
    .addOption(new Option('--profile <name>', 'profile to take settings from (flags given here beat it)').env('FIREBUILD_PROFILE'))
    .option('--profile-conf-dir <dir>', "directory holding profiles (a non-root user's default: ~/.config/firebuild/profiles)", defaultProfileConfDir(env));
  if (what.storage || what.runtime) withSettingsOptions(cmd);
  return cmd;
}

/** The settings a profile holds; on commands they override the profile. */
export function withSettingsOptions(cmd: Command): Command {
  return cmd
    .option('--binary-firecracker <path>', 'Firecracker binary (optional: a host may run QEMU only)')
    .option('--binary-jailer <path>', 'Firecracker jailer binary')
    .option('--chroot-base <dir>', 'jailer chroot base directory')
    .option('--run-cache <dir>', 'directory holding per-VM run state')
    .option('--storage-provider <name>', "storage provider ('directory')")
    .option('--storage-provider-property-string <key=value>', 'storage provider property, repeatable (directory: rootfs-storage-root, kernel-storage-root)', collect)
    .option('--storage-provider-property-int64 <key=n>', 'integer storage provider property, repeatable', collect)
    .option('--tracing-enable', 'enable tracing')
    .option('--no-tracing-enable', 'disable tracing')
    .option('--tracing-collector-host-port <host:port>', 'tracing collector address')
    .option('--tracing-log-enable', 'log trace spans')
    .option('--no-tracing-log-enable', 'do not log trace spans')
    .option('--port-range <low-high>', 'host ports VMs may publish: auto ports are picked in it, fixed ones must lie in it (env FIREBUILD_PORT_RANGE)')
    .option('--cgroup-parent <path>', "the cgroup subtree of this user's VMs, under the cgroup2 mount (default firebuild; env FIREBUILD_CGROUP_PARENT)")
    .option('--cni-network-alias <name=network>', 'attach to NETWORK when CNI network NAME is asked for, repeatable; with aliases, other names are refused (env FIREBUILD_CNI_NETWORK_ALIASES, comma separated)', collect);
}

/** --registry-mirror: on `rootfs` (the vm engine's FROM) and on `profile-create` (kept in the profile). */
export function withRegistryMirrorOption(cmd: Command): Command {
  return cmd.option('--registry-mirror <url>', 'a docker.io mirror (http(s)://host[:port]) asked before docker.io for FROM images, repeatable, in order; also FIREBUILD_REGISTRY_MIRRORS (comma separated) and the profile\'s registry-mirrors', collect);
}

export interface SettingsCliOpts extends SettingsFlags {
  profile?: string;
  profileConfDir: string;
}

export function settingsFlags(o: SettingsCliOpts): SettingsFlags {
  const f: SettingsFlags = {};
  const keys: (keyof SettingsFlags)[] = [
    'binaryFirecracker', 'binaryJailer', 'chrootBase', 'runCache', 'storageProvider', 'storageProviderPropertyString',
    'storageProviderPropertyInt64', 'tracingEnable', 'tracingCollectorHostPort', 'tracingLogEnable', 'registryMirror',
    'portRange', 'cgroupParent', 'cniNetworkAlias',
  ];
  for (const k of keys) if (o[k] !== undefined) (f as Record<string, unknown>)[k] = o[k];
  return f;
}

/** How a VM boots and reaches a network: shared by `run` and by `rootfs --engine vm` (its build VMs). */
export function withVmOptions(cmd: Command, forBuild: boolean): Command {
  const p = forBuild ? 'vm engine: ' : '';
  return cmd
    .addOption(new Option('--network <mode>', forBuild
      ? "vm engine: networking without CNI: user (outbound only, in a namespace of its own: never the host's services) or none (default: user for QEMU, none for Firecracker)"
      : "networking without CNI: user (outbound only, in a namespace of its own: never the host's services), user-host (also the host's loopback services at 10.0.2.2: trusted images only) or none (default: user for QEMU, none for Firecracker)").choices(forBuild ? ['user', 'none'] : ['user', 'user-host', 'none']))
    .option('--cni-network-name <name>', forBuild ? 'vm engine: attach the build VMs to this CNI network (the build network, e.g. machine-builds)' : 'attach the VM to this CNI network (a netns per VM, tap redirected to the CNI interface)')
    .option('--cni-conf-dir <dir>', 'where CNI network configuration lists live', '/etc/cni/conf.d')
    .option('--cni-bin-dir <dir>', 'where CNI plugins live (default: /opt/cni/bin, else /usr/lib/cni)')
    .addOption(new Option('--backend <vmm>', `${p}the VMM (auto: Firecracker when its binaries are configured, else QEMU)`).choices([...BACKEND_CHOICES]).default('auto'))
    .addOption(new Option('--accel <accel>', `${p}QEMU accelerator (auto: KVM when usable, else TCG; env FIREBUILD_ACCEL)`).choices(['auto', 'kvm', 'tcg']).default('auto'))
    .addOption(new Option('--firecracker-mode <mode>', `${p}configure Firecracker over its API socket or with --config-file`).choices(['api', 'config-file']).default('api'))
    .option('--jailer-uid <uid>', `${p}the uid Firecracker runs as in the jail`, '65534')
    .option('--jailer-gid <gid>', `${p}the gid Firecracker runs as in the jail`, '65534');
}

export interface VmCliOpts { network?: string; cniNetworkName?: string; cniConfDir: string; cniBinDir?: string; backend: string; accel: string; firecrackerMode: string; jailerUid: string; jailerGid: string }

export function intFlag(v: string, flag: string): number {
  if (!/^\d{1,10}$/.test(v)) throw new UserError(`malformed ${flag} '${v}': give a number`);
  return Number(v);
}

export const seconds = (v: string, flag: string): number => {
  if (!/^\d+(\.\d+)?$/.test(v)) throw new UserError(`malformed ${flag} '${v}': give seconds, e.g. 60`);
  return Number(v) * 1000;
};

/** withVmOptions' flags as a VM choice (the jailer's ids checked here, the rest by commander's choices). */
export function vmChoice(o: VmCliOpts): VmChoice {
  if (o.cniNetworkName && o.network) throw new UserError('--network and --cni-network-name exclude each other: keep one');
  return {
    backend: o.backend as VmChoice['backend'],
    ...(o.network ? { network: o.network as NonNullable<VmChoice['network']> } : {}),
    ...(o.cniNetworkName ? { cni: { network: o.cniNetworkName, confDir: o.cniConfDir, ...(o.cniBinDir ? { binDir: o.cniBinDir } : {}) } } : {}),
    jailer: { uid: intFlag(o.jailerUid, '--jailer-uid'), gid: intFlag(o.jailerGid, '--jailer-gid') },
    firecrackerMode: o.firecrackerMode as FirecrackerMode,
  };
}
