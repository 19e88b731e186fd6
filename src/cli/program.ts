import { createRequire } from 'node:module';
import * as path from 'node:path';
import type { Command } from 'commander';
// Only what the command definitions need is imported here, as every command and --help load this module:
// each command's implementation (dockerode, @actions/*, the ext4 writer, OCI, zod schemas, proper-lockfile...)
// is imported by its own action when it runs. Keep new static imports type-only, or of modules with no
// dependency beyond node: (bench/cli-start.mjs measures the start-up).
import { OPTIONAL_PARTS } from '../commands/doctor-parts.js';
import { BACKEND_CHOICES } from '../commands/vm-choices.js';
import { defaultCacheDir, defaultProfileConfDir } from '../profile/paths.js';
import type { NetworkMode, RunOptions } from '../commands/run.js';
import type { FirecrackerMode } from '../vmm/firecracker-run.js';
import type { Settings, SettingsFlags } from '../profile/settings.js';
import type { StorageProvider } from '../store/provider.js';
import { parseSize } from '../util/size.js';
import { UserError } from '../util/errors.js';
import { JsonLogger, LOG_LEVELS, TerminalLogger, isLogLevel, type Logger, type Sink } from '../util/logger.js';
import { humanBytes, json, table } from './format.js';

// commander is a CommonJS package: require() loads it in about 60 % of the CPU time of an ESM import, which
// adds its ESM wrapper and a scan of its exports (Node 20), and every command but --version pays it.
const commander = createRequire(import.meta.url)('commander') as typeof import('commander');
const { Option } = commander;
export const { CommanderError } = commander;

export interface CliIO {
  stdout: Sink;
  stderr: Sink;
  env: NodeJS.ProcessEnv;
}

const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

/** Options every command that touches images, kernels or VMs takes. */
function withProfileOptions(cmd: Command, env: NodeJS.ProcessEnv, what: { storage?: boolean; runtime?: boolean } = {}): Command {
  cmd
    .addOption(new Option('--profile <name>', 'profile to take settings from (flags given here beat it)').env('FIREBUILD_PROFILE'))
    .option('--profile-conf-dir <dir>', 'directory holding profiles', defaultProfileConfDir(env));
  if (what.storage || what.runtime) withSettingsOptions(cmd);
  return cmd;
}

/** The settings a profile holds; on commands they override the profile. */
function withSettingsOptions(cmd: Command): Command {
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
    .option('--no-tracing-log-enable', 'do not log trace spans');
}

interface SettingsCliOpts extends SettingsFlags {
  profile?: string;
  profileConfDir: string;
}

function settingsFlags(o: SettingsCliOpts): SettingsFlags {
  const f: SettingsFlags = {};
  const keys: (keyof SettingsFlags)[] = [
    'binaryFirecracker', 'binaryJailer', 'chrootBase', 'runCache', 'storageProvider', 'storageProviderPropertyString',
    'storageProviderPropertyInt64', 'tracingEnable', 'tracingCollectorHostPort', 'tracingLogEnable',
  ];
  for (const k of keys) if (o[k] !== undefined) (f as Record<string, unknown>)[k] = o[k];
  return f;
}

/** How a VM boots and reaches a network: shared by `run` and by `rootfs --engine vm` (its build VMs). */
function withVmOptions(cmd: Command, forBuild: boolean): Command {
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

interface VmCliOpts { network?: string; cniNetworkName?: string; cniConfDir: string; cniBinDir?: string; backend: string; accel: string; firecrackerMode: string; jailerUid: string; jailerGid: string }

/** The engine of a build: what --engine says; else vm for a Dockerfile (no step runs on the host) and docker for --docker-image (a conversion) and baseos. */
export function resolveEngine(type: 'baseos' | 'rootfs', engine: string | undefined, dockerImage: string | undefined): 'docker' | 'vm' {
  if (engine === 'docker' || engine === 'vm') return engine;
  return type === 'rootfs' && !dockerImage ? 'vm' : 'docker';
}

function intFlag(v: string, flag: string): number {
  if (!/^\d{1,10}$/.test(v)) throw new UserError(`malformed ${flag} '${v}': give a number`);
  return Number(v);
}

/** The network, CNI and Firecracker settings of withVmOptions' flags and the profile. */
async function vmSettings(o: VmCliOpts, settings: Settings): Promise<Pick<RunOptions, 'network' | 'backend' | 'firecracker'> & { cni?: RunOptions['cni'] }> {
  if (o.cniNetworkName && o.network) throw new UserError('--network and --cni-network-name exclude each other: keep one');
  const { chooseBackend, cniBinDir } = await import('../commands/run.js');
  const firecracker: NonNullable<RunOptions['firecracker']> = {
    ...(settings.binaryFirecracker ? { binary: settings.binaryFirecracker } : {}), ...(settings.binaryJailer ? { jailer: settings.binaryJailer } : {}),
    chrootBase: settings.chrootBase, uid: intFlag(o.jailerUid, '--jailer-uid'), gid: intFlag(o.jailerGid, '--jailer-gid'), mode: o.firecrackerMode as FirecrackerMode,
  };
  // The network's default follows the backend auto picks (Firecracker has no user-mode networking).
  const backend = chooseBackend({ backend: o.backend as RunOptions['backend'], firecracker });
  const network: NetworkMode = o.cniNetworkName ? 'cni' : ((o.network as NetworkMode | undefined) ?? (backend === 'firecracker' ? 'none' : 'user'));
  return {
    network,
    backend: o.backend as RunOptions['backend'],
    ...(o.cniNetworkName ? { cni: { network: o.cniNetworkName, confDir: path.resolve(o.cniConfDir), binDir: await cniBinDir(o.cniBinDir) } } : {}),
    firecracker,
  };
}

export function buildProgram(io: CliIO): Command {
  const program = new commander.Command('firebuild');
  const out = (s: string): void => io.stdout.write(s);
  let logger: Logger = new TerminalLogger(io.stderr);

  program
    .description('Build Firecracker/QEMU microVM root file systems from Dockerfiles and Docker images, and boot them.')
    // `firebuild --version` is answered by main(): a root --version option would also swallow
    // `kernel build --version 6.1`, since commander reads root options after the subcommand too.
    .addHelpText('after', '\nfirebuild --version prints the version.')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS as unknown as string[]).default('info').env('FIREBUILD_LOG_LEVEL'))
    .option('--log-as-json', 'log one JSON object a line (@level, @message, @module, @timestamp, fields)')
    .showSuggestionAfterError(true)
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride()
    .hook('preAction', (_root, action) => {
      const g = action.optsWithGlobals() as { logLevel: string; logAsJson?: boolean };
      const level = isLogLevel(g.logLevel) ? g.logLevel : 'info';
      logger = g.logAsJson ? new JsonLogger(io.stderr, level) : new TerminalLogger(io.stderr, level);
    });

  const ctx = async (o: SettingsCliOpts): Promise<{ settings: Settings; storage: StorageProvider }> => {
    const { loadSettings, openStorage } = await import('../profile/settings.js');
    const settings = await loadSettings({ ...(o.profile ? { profile: o.profile } : {}), profileConfDir: o.profileConfDir, flags: settingsFlags(o) });
    return { settings, storage: openStorage(settings) };
  };

  // Profiles ----------------------------------------------------------------------------------------
  withSettingsOptions(
    program
      .command('profile-create')
      .description('create a profile: per-host settings other commands take with --profile')
      .requiredOption('--profile <name>', 'name of the profile to create')
      .option('--profile-conf-dir <dir>', 'directory holding profiles', defaultProfileConfDir(io.env))
      .option('--overwrite', 'replace an existing profile'),
  ).action(async (o: SettingsCliOpts & { profile: string; overwrite?: boolean }) => {
    const { profileCreate } = await import('../commands/profile.js');
    const r = await profileCreate({ name: o.profile, profileConfDir: o.profileConfDir, flags: settingsFlags(o), overwrite: o.overwrite ?? false }, logger.child('profile'));
    out(`${r.file}\n`);
  });

  program
    .command('profile-ls')
    .description('list profiles')
    .option('--profile-conf-dir <dir>', 'directory holding profiles', defaultProfileConfDir(io.env))
    .option('--json', 'print JSON')
    .action(async (o: { profileConfDir: string; json?: boolean }) => {
      const { profileList } = await import('../commands/profile.js');
      const names = await profileList(o.profileConfDir);
      out(o.json ? json(names) : names.map((n) => `${n}\n`).join(''));
    });

  program
    .command('profile-inspect')
    .description('print a profile as JSON')
    .requiredOption('--profile <name>', 'profile name')
    .option('--profile-conf-dir <dir>', 'directory holding profiles', defaultProfileConfDir(io.env))
    .action(async (o: { profile: string; profileConfDir: string }) => {
      const { profileInspect } = await import('../commands/profile.js');
      out(json(await profileInspect(o.profile, o.profileConfDir)));
    });

  // Images ------------------------------------------------------------------------------------------
  const image = program.command('image').description('manage stored images (tags org/name:version)');
  withProfileOptions(image.command('ls').description('list stored images').option('--json', 'print JSON'), io.env, { storage: true })
    .action(async (o: SettingsCliOpts & { json?: boolean }) => {
      const { storage } = await ctx(o);
      const { imageList } = await import('../commands/image.js');
      const rows = await imageList(storage, logger.child('store'));
      if (o.json) return out(json(rows));
      out(table(
        ['TAG', 'TYPE', 'SIZE', 'APPARENT', 'CREATED', 'PARENT'],
        rows.map((r) => [r.tag, r.error ? 'CORRUPT' : r.type, humanBytes(r.sizeOnDisk), humanBytes(r.apparentSize), r.created, r.error ? r.error : r.parent]),
      ));
    });
  withProfileOptions(image.command('inspect').description('print an image\'s metadata as JSON').argument('<tag>', 'org/name:version'), io.env, { storage: true })
    .action(async (tag: string, o: SettingsCliOpts) => {
      const { storage } = await ctx(o);
      const { imageInspect } = await import('../commands/image.js');
      const img = await imageInspect(storage, tag);
      out(json({ tag: img.tag, path: img.dir, rootfs: img.rootfsPath, metadata: img.metadata }));
    });
  type RegistryCli = SettingsCliOpts & { username?: string; passwordStdin?: boolean; insecure?: boolean };
  const registryOpts = (c: Command): Command => c
    .option('--username <user>', 'registry user (default: the Docker config\'s credentials for that registry)')
    .option('--password-stdin', 'read the registry password or token from stdin')
    .option('--insecure', 'plain HTTP to the registry (always for localhost and 127.0.0.1)');
  const registryCreds = async (o: RegistryCli): Promise<{ credentials?: { username: string; password: string }; insecure?: boolean }> => {
    if (o.passwordStdin && !o.username) throw new UserError('--password-stdin needs --username');
    if (o.username && !o.passwordStdin) throw new UserError('--username needs --password-stdin (passwords never go on the command line)');
    let password = '';
    if (o.passwordStdin) {
      for await (const chunk of process.stdin) password += String(chunk);
      password = password.replace(/\r?\n$/, '');
      if (!password) throw new UserError('--password-stdin read an empty password');
    }
    return { ...(o.username ? { credentials: { username: o.username, password } } : {}), ...(o.insecure ? { insecure: true } : {}) };
  };
  withProfileOptions(registryOpts(image.command('push').description('push a stored image to an OCI registry as a firebuild artifact (rootfs.ext4 zstd + metadata.json)')
    .argument('<tag>', 'org/name:version').argument('<ref>', 'registry/repository:tag')), io.env, { storage: true })
    .action(async (tag: string, ref: string, o: RegistryCli) => {
      const { storage } = await ctx(o);
      const { pushImage } = await import('../oci/artifact.js');
      out(json(await pushImage(storage, tag, ref, await registryCreds(o), logger.child('oci'))));
    });
  withProfileOptions(registryOpts(image.command('pull').description('pull a firebuild artifact from an OCI registry into the store, verifying every digest')
    .argument('<ref>', 'registry/repository:tag or @sha256:digest')
    .option('--tag <org/name:version>', 'store it under this tag (default: the tag it was pushed from)')
    .option('--overwrite', 'replace an image with the same tag')), io.env, { storage: true })
    .action(async (ref: string, o: RegistryCli & { tag?: string; overwrite?: boolean }) => {
      const { storage } = await ctx(o);
      const { pullImage } = await import('../oci/artifact.js');
      const img = await pullImage(storage, ref, { ...(await registryCreds(o)), ...(o.tag ? { tag: o.tag } : {}), overwrite: o.overwrite ?? false }, logger.child('oci'));
      out(json({ tag: img.tag, rootfs: img.rootfsPath, sha256: img.metadata.rootfs.sha256, source: img.metadata.source.ref }));
    });
  withProfileOptions(image.command('rm').description('remove a stored image').argument('<tag>', 'org/name:version'), io.env, { storage: true })
    .action(async (tag: string, o: SettingsCliOpts) => {
      const { storage } = await ctx(o);
      const { imageRemove } = await import('../commands/image.js');
      await imageRemove(storage, tag, logger.child('store'));
    });

  // Kernels -----------------------------------------------------------------------------------------
  const kernel = program.command('kernel').description('manage guest kernels');
  withProfileOptions(
    kernel
      .command('import')
      .description('store a kernel (ELF vmlinux, or bzImage with --initrd for QEMU)')
      .argument('<file>', 'kernel image file')
      .requiredOption('--id <id>', 'kernel id, used by --vmlinux-id')
      .option('--initrd <file>', 'initrd to boot with (distribution kernels whose virtio drivers are modules)')
      .option('--cmdline <args>', 'extra kernel command line for this kernel')
      .option('--overwrite', 'replace a kernel with the same id'),
    io.env,
    { storage: true },
  ).action(async (file: string, o: SettingsCliOpts & { id: string; initrd?: string; cmdline?: string; overwrite?: boolean }) => {
    const { storage } = await ctx(o);
    const { kernelImport } = await import('../commands/kernel.js');
    const k = await kernelImport(storage, { id: o.id, vmlinux: file, ...(o.initrd ? { initrd: o.initrd } : {}), ...(o.cmdline ? { cmdline: o.cmdline } : {}), overwrite: o.overwrite ?? false }, logger.child('kernel'));
    out(`${k.id}\n`);
  });
  withProfileOptions(
    kernel
      .command('build')
      .description("build firebuild's fast guest kernel (allnoconfig + baseos/kernel/firebuild.config) and store it")
      .option('--id <id>', 'kernel id, used by --vmlinux-id; the kernel `default` is booted when no --vmlinux-id is given', 'default')
      .option('--fragment <file...>', 'extra kernel config fragments merged over firebuild\'s (repeatable)')
      .option('--source <dir>', 'a Linux source tree (built out of tree; never written)')
      .option('--version <series>', "Debian's linux-source-<series> package (default 6.1 when no --source)")
      .option('--jobs <n>', 'parallel make jobs (default: the number of CPUs)')
      .option('--cache-dir <dir>', 'where sources are extracted and builds kept (default: the firebuild cache)')
      .option('--overwrite', 'replace a kernel with the same id'),
    io.env,
    { storage: true },
  ).action(async (o: SettingsCliOpts & { id: string; source?: string; version?: string; jobs?: string; cacheDir?: string; overwrite?: boolean; fragment?: string[] }) => {
    const { storage } = await ctx(o);
    const { kernelBuild } = await import('../commands/kernel-build.js');
    const k = await kernelBuild(storage, {
      id: o.id, ...(o.source ? { source: o.source } : {}), ...(o.version ? { version: o.version } : {}), ...(o.fragment ? { fragments: o.fragment } : {}),
      ...(o.jobs ? { jobs: intFlag(o.jobs, '--jobs') } : {}), cacheDir: path.resolve(o.cacheDir ?? defaultCacheDir(io.env)), overwrite: o.overwrite ?? false,
    }, logger.child('kernel'));
    out(`${k.id}\n`);
  });
  withProfileOptions(kernel.command('ls').description('list stored kernels').option('--json', 'print JSON'), io.env, { storage: true })
    .action(async (o: SettingsCliOpts & { json?: boolean }) => {
      const { storage } = await ctx(o);
      const { kernelList } = await import('../commands/kernel.js');
      const list = await kernelList(storage, logger.child('kernel'));
      if (o.json) return out(json(list.map((k) => ({ id: k.id, path: k.dir, ...(k.metadata ? { metadata: k.metadata } : {}), ...(k.error ? { error: k.error } : {}) }))));
      out(table(
        ['ID', 'FORMAT', 'SIZE', 'INITRD', 'CREATED'],
        list.map((k) => k.metadata
          ? [k.id, k.metadata.format, humanBytes(k.metadata.vmlinux.size), k.metadata.initrd ? humanBytes(k.metadata.initrd.size) : '-', k.metadata.created]
          : [k.id, 'CORRUPT', '', '', k.error ?? '']),
      ));
    });
  withProfileOptions(kernel.command('rm').description('remove a stored kernel').argument('<id>', 'kernel id'), io.env, { storage: true })
    .action(async (id: string, o: SettingsCliOpts) => {
      const { storage } = await ctx(o);
      const { kernelRemove } = await import('../commands/kernel.js');
      await kernelRemove(storage, id, logger.child('kernel'));
    });

  // Builds ------------------------------------------------------------------------------------------
  type BuildCli = SettingsCliOpts & VmCliOpts & {
    dockerfile?: string; context?: string; buildArg?: string[]; dockerfileStage?: string; tag?: string; plan?: boolean;
    engine?: string; dockerImage?: string; dockerImageBase?: string; size?: string; freeSpace?: string; journal?: boolean; overwrite?: boolean;
    stepTimeout?: string; cache?: boolean; vmlinuxId?: string; mem?: string; maxDownloadSize?: string; allowHostUrls?: boolean;
  };
  const buildOptions = (cmd: Command, what: 'baseos' | 'rootfs'): Command => {
    cmd
      .option('--dockerfile <source>', 'a local path, Dockerfile text, an http(s) URL, or git+https://host/repo.git:/path/Dockerfile#ref')
      .option('--context <dir>', "build context directory (default: the Dockerfile's directory)")
      .option('--build-arg <name=value>', 'build argument, repeatable', collect)
      .option('--dockerfile-stage <name>', 'the stage to build (default: the last)')
      .option('--tag <org/name:version>', what === 'baseos' ? 'tag of the stored image (default: derived from FROM, alpine:3.12 -> _/alpine:3.12)' : 'tag of the stored image')
      .addOption(what === 'rootfs'
        ? new Option('--engine <engine>', "build engine: vm (firebuild's own: RUN steps inside a microVM booted from the base image; the default for --dockerfile) or docker (the Docker engine; the default for --docker-image)").choices(['docker', 'vm'])
        : new Option('--engine <engine>', 'build engine').choices(['docker']).default('docker'))
      .option('--size <size>', 'exact size of the ext4 file (e.g. 2G); default: content plus --free-space')
      .option('--free-space <size>', 'free space kept in the image after shrinking', '256M')
      .option('--journal', 'give the file system a journal (off by default: every VM boots a throwaway copy)')
      .option('--overwrite', 'replace an existing image with the same tag')
      .option('--max-download-size <size>', 'the largest ADD URL or http context file (e.g. 8G); default: $FIREBUILD_MAX_DOWNLOAD_SIZE, else 4G')
      .option('--allow-host-urls', "let the Dockerfile's ADD URLs (and redirects) reach this host's own addresses, loopback and link-local (trusted Dockerfiles only); also FIREBUILD_ALLOW_HOST_URLS=1");
    if (what === 'rootfs') {
      cmd
        .option('--docker-image <image>', 'convert an existing Docker image (pulled with your Docker credentials when absent)')
        .option('--docker-image-base <image>', 'record this image as the parent of --docker-image')
        .option('--plan', 'print the resolved build plan as JSON and stop')
        .option('--step-timeout <seconds>', 'vm engine: the longest a RUN step may take', '1800')
        .option('--no-cache', 'vm engine: run every step, ignoring (and not refilling) the step cache')
        .option('--vmlinux-id <id>', 'vm engine: the kernel that boots the build VMs (default: the only stored kernel)')
        .option('--mem <mib>', 'vm engine: memory of the build VMs in MiB', '512');
      withVmOptions(cmd, true);
    }
    return withProfileOptions(cmd, io.env, { storage: true });
  };
  const runBuild = async (type: 'baseos' | 'rootfs', o: BuildCli): Promise<void> => {
    if (o.plan) {
      if (!o.dockerfile) throw new UserError('--plan needs --dockerfile');
      const { planCommand } = await import('../commands/plan.js');
      const plan = await planCommand({
        dockerfile: o.dockerfile,
        ...(o.context ? { context: o.context } : {}),
        buildArgs: o.buildArg ?? [],
        ...(o.dockerfileStage ? { target: o.dockerfileStage } : {}),
        cacheDir: defaultCacheDir(io.env),
        ...(o.allowHostUrls ? { allowHostUrls: true } : {}),
      }, logger.child('plan'));
      return out(json(plan));
    }
    const { settings, storage } = await ctx(o);
    if (resolveEngine(type, o.engine, o.dockerImage) === 'vm') {
      if (!o.dockerfile) throw new UserError('--engine vm builds from --dockerfile: give one (or use --engine docker for --docker-image)');
      if (!/^\d+$/.test(o.stepTimeout ?? '') || Number(o.stepTimeout) < 1) throw new UserError(`malformed --step-timeout '${o.stepTimeout}': give seconds, e.g. 600`);
      if (!/^\d+$/.test(o.mem ?? '') || Number(o.mem) < 64) throw new UserError(`malformed --mem '${o.mem}': give MiB, at least 64`);
      const { buildWithVm } = await import('../engine/vm-engine.js');
      const v = await buildWithVm({
        dockerfile: o.dockerfile,
        ...(o.context ? { context: o.context } : {}),
        buildArgs: o.buildArg ?? [],
        ...(o.dockerfileStage ? { target: o.dockerfileStage } : {}),
        tag: o.tag ?? '',
        ...(o.size ? { sizeBytes: parseSize(o.size, '--size') } : {}),
        freeBytes: parseSize(o.freeSpace ?? '256M', '--free-space'),
        overwrite: o.overwrite ?? false,
        cacheDir: defaultCacheDir(io.env),
        ...(o.vmlinuxId ? { vmlinuxId: o.vmlinuxId } : {}),
        memMib: Number(o.mem),
        accel: o.accel ?? 'auto',
        stepTimeoutMs: Number(o.stepTimeout) * 1000,
        noCache: o.cache === false,
        vm: { ...(await vmSettings(o, settings)), runCache: settings.runCache },
        ...(o.maxDownloadSize ? { maxDownloadBytes: parseSize(o.maxDownloadSize, '--max-download-size') } : {}),
        ...(o.allowHostUrls ? { allowHostUrls: true } : {}),
      }, storage, logger.child('vm-build'));
      return out(json({ tag: v.image.tag, rootfs: v.image.rootfsPath, metadata: v.image.metadataPath, sha256: v.image.metadata.rootfs.sha256, size: v.image.metadata.rootfs.apparentSize, builder: 'vm', executed: v.executed, cached: v.cached, timings: v.timings }));
    }
    const { buildWithDocker } = await import('../commands/build.js');
    const r = await buildWithDocker({
      type,
      engine: 'docker',
      ...(o.dockerfile ? { dockerfile: o.dockerfile } : {}),
      ...(o.context ? { context: o.context } : {}),
      buildArgs: o.buildArg ?? [],
      ...(o.dockerfileStage ? { target: o.dockerfileStage } : {}),
      ...(o.tag ? { tag: o.tag } : {}),
      ...(o.dockerImage ? { dockerImage: o.dockerImage } : {}),
      ...(o.dockerImageBase ? { dockerImageBase: o.dockerImageBase } : {}),
      ...(o.size ? { sizeBytes: parseSize(o.size, '--size') } : {}),
      freeBytes: parseSize(o.freeSpace ?? '256M', '--free-space'),
      journal: o.journal ?? false,
      overwrite: o.overwrite ?? false,
      cacheDir: defaultCacheDir(io.env),
      ...(o.maxDownloadSize ? { maxDownloadBytes: parseSize(o.maxDownloadSize, '--max-download-size') } : {}),
      ...(o.allowHostUrls ? { allowHostUrls: true } : {}),
    }, storage, logger.child(type));
    out(json({ tag: r.image.tag, rootfs: r.image.rootfsPath, metadata: r.image.metadataPath, sha256: r.image.metadata.rootfs.sha256, size: r.image.metadata.rootfs.apparentSize, builder: r.builder }));
  };
  buildOptions(program.command('baseos').description('build a base OS root file system from a Dockerfile with the Docker engine'), 'baseos')
    .action(async (o: BuildCli) => {
      if (!o.dockerfile) throw new UserError('baseos needs --dockerfile PATH');
      await runBuild('baseos', o);
    });
  buildOptions(program.command('rootfs').description('build an application root file system from a Dockerfile or a Docker image (--plan prints the build plan)'), 'rootfs')
    .action(async (o: BuildCli) => runBuild('rootfs', o));

  // VMs -------------------------------------------------------------------------------------------
  type RunCli = SettingsCliOpts & VmCliOpts & {
    from: string; name?: string; vmlinuxId?: string; mem: string; cpu: string; hostname?: string; env?: string[]; envFile?: string[];
    sshUser?: string; identityFile?: string; port?: string[]; daemonize?: boolean; bootTimeout: string;
    ipAddress?: string; init: string;
    waitTcp?: string[]; waitHttp?: string[]; waitHttpStatus: string; waitHttpBody?: string; waitTimeout: string; waitExitCode?: string;
  };
  const seconds = (v: string, flag: string): number => {
    if (!/^\d+(\.\d+)?$/.test(v)) throw new UserError(`malformed ${flag} '${v}': give seconds, e.g. 60`);
    return Number(v) * 1000;
  };
  withProfileOptions(
    withVmOptions(program
      .command('run')
      .description('boot a stored image as a microVM (QEMU microvm, or Firecracker under the jailer)')
      .requiredOption('--from <org/name:version>', 'the image to boot')
      .argument('[command...]', 'a command to run instead of CMD (after --)')
      .option('--name <name>', 'a unique name, 1-20 letters and digits')
      .option('--vmlinux-id <id>', 'kernel to boot (default: the only stored kernel)')
      .option('--mem <MiB>', 'memory', '256')
      .option('--cpu <n>', 'vCPUs', '1')
      .option('--hostname <name>', 'the guest hostname (default: the VM name)')
      .option('--env <KEY=value>', 'environment variable, repeatable (beats --env-file)', collect)
      .option('--env-file <file>', 'KEY=value file, repeatable, applied in order', collect)
      .option('--ssh-user <user>', 'install the --identity-file key for this user and start sshd')
      .option('--identity-file <file.pub>', 'SSH public key for --ssh-user')
      .option('--ip-address <ip>', 'request this IP from the CNI network\'s IPAM')
      .option('--port <[hostip:]hostport:guestport[/proto]>', 'publish a guest port, repeatable (user networking: host side 127.0.0.1 by default; CNI: iptables DNAT, every local address by default)', collect)
      .addOption(new Option('--init <init>', "PID 1: firebuild's init runs the command; image hands over to the image's /sbin/init after the setup").choices(['firebuild', 'image']).default('firebuild'))
      .option('--daemonize', 'return once the VM is up, printing one JSON object')
      .option('--boot-timeout <seconds>', 'deadline for the init to start the command', '120')
      .option('--wait-tcp <port>', 'probe: a published host port must accept connections, repeatable', collect)
      .option('--wait-http <url>', 'probe: an HTTP GET must answer --wait-http-status, repeatable', collect)
      .option('--wait-http-status <code>', 'expected HTTP status', '200')
      .option('--wait-http-body <text>', 'expected substring of the HTTP body')
      .option('--wait-exit-code <n>', 'probe: the command must exit with this code before --wait-timeout (then the VM is removed)')
      .option('--wait-timeout <seconds>', 'deadline for the probes', '60'), false),
    io.env,
    { runtime: true },
  ).action(async (command: string[], o: RunCli) => {
    const { settings, storage } = await ctx(o);
    const [{ DEFAULT_LOCK_DIR, disownVm, exitCodeOf, followConsole, killVm, runVm, teardown, vmDiskFull }, { RunCache, vmmOf }, { runProbes, waitExitCode }] = await Promise.all([
      import('../commands/run.js'), import('../runtime/state.js'), import('../runtime/probes.js'),
    ]);
    const cache = new RunCache(settings.runCache);
    const log = logger.child('run');
    if (o.ipAddress && !o.cniNetworkName) throw new UserError('--ip-address needs --cni-network-name');
    const vm = await vmSettings(o, settings);
    const state = await runVm({
      from: o.from, ...(o.name ? { name: o.name } : {}), ...(o.vmlinuxId ? { vmlinuxId: o.vmlinuxId } : {}),
      memMib: Number(o.mem), cpus: Number(o.cpu), ...(o.hostname ? { hostname: o.hostname } : {}),
      env: o.env ?? [], envFiles: o.envFile ?? [], ...(o.sshUser ? { sshUser: o.sshUser } : {}), ...(o.identityFile ? { identityFile: o.identityFile } : {}),
      ports: o.port ?? [], accel: o.accel, ...(command.length ? { command } : {}),
      bootTimeoutMs: seconds(o.bootTimeout, '--boot-timeout'), init: o.init as 'firebuild' | 'image',
      ...vm, ...(vm.cni ? { cni: { ...vm.cni, ...(o.ipAddress ? { ip: o.ipAddress } : {}) } } : {}),
    }, storage, cache, log);
    const probes = { tcp: (o.waitTcp ?? []).map((p) => ({ host: '127.0.0.1', port: Number(p) })), http: (o.waitHttp ?? []).map((url) => ({ url, status: Number(o.waitHttpStatus), ...(o.waitHttpBody ? { body: o.waitHttpBody } : {}) })), timeoutMs: seconds(o.waitTimeout, '--wait-timeout') };
    if (probes.tcp.length || probes.http.length) {
      try {
        await runProbes(probes, state.serialLog);
        log.info('probes passed', { tcp: probes.tcp.length, http: probes.http.length });
      } catch (err) {
        await killVm(cache, state.id, 5000, log);
        throw err;
      }
    }
    if (o.waitExitCode !== undefined) {
      const want = intFlag(o.waitExitCode, '--wait-exit-code');
      try {
        await waitExitCode(state.serialLog, vmmOf(state), want, probes.timeoutMs);
        log.info('exit code probe passed', { 'exit-code': want });
      } finally {
        await killVm(cache, state.id, 5000, log);
      }
      if (o.daemonize) out(json({ 'vmm-id': state.id, name: state.name, 'exit-code': want }));
      return;
    }
    if (o.daemonize) {
      // The VM outlives this process from here: a signal no longer tears it down.
      disownVm(state.id);
      out(json({ 'vmm-id': state.id, name: state.name, pid: state.pid, 'ip-address': state.network.ip ?? null, 'cache-dir': state.cacheDir, 'serial-log': state.serialLog }));
      return;
    }
    // Foreground: stream the console until the VM ends. Ctrl-C (SIGINT) or SIGTERM: the process's cancel
    // handlers (bin/firebuild.js) tear the VM down, as they do during the boot, and exit 130/143.
    let text = '';
    for await (const chunk of followConsole(state.serialLog, vmmOf(state))) {
      out(chunk);
      text += chunk;
    }
    const exit = exitCodeOf(text);
    // A command that failed on a full host disk (QEMU hands the write error to the guest): say so.
    const full = exit === 0 ? undefined : await vmDiskFull(state);
    // The VM ended: everything it had on the host goes (cgroup, netns, CNI, port rules, jail, run cache), as kill does.
    await teardown(cache, state, DEFAULT_LOCK_DIR, log).catch(() => undefined);
    if (full) throw full;
    // The image's own init powers off without firebuild's exit line.
    if (exit === undefined && o.init === 'image') return;
    if (exit === undefined) throw new UserError('the VM ended without reporting an exit code (a crash or a kill)');
    if (exit !== 0) throw Object.assign(new UserError(`the command exited with code ${exit}`), { exitCode: exit });
  });

  withProfileOptions(program.command('ls').description('list VMs').option('--json', 'print JSON'), io.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { json?: boolean }) => {
      const { settings } = await ctx(o);
      const { RunCache } = await import('../runtime/state.js');
      const vms = await new RunCache(settings.runCache).list();
      if (o.json) return out(json(vms));
      out(table(['ID', 'NAME', 'IMAGE', 'RUNNING', 'PID', 'IP', 'STARTED'], vms.map((v) => [v.id, v.name, v.image, v.running ? 'yes' : 'no', String(v.pid), v.network.ip ?? '-', v.started])));
    });
  withProfileOptions(program.command('inspect').description('print a VM as JSON').requiredOption('--vmm-id <id>', 'the VM'), io.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string }) => {
      const { settings } = await ctx(o);
      const [{ inspectView }, { RunCache, vmRunning }] = await Promise.all([import('../commands/run.js'), import('../runtime/state.js')]);
      const s = await new RunCache(settings.runCache).read(o.vmmId);
      out(json(inspectView({ ...s, running: vmRunning(s) })));
    });
  withProfileOptions(program.command('logs').description("print a VM's console").requiredOption('--vmm-id <id>', 'the VM').option('--follow', 'keep printing until the VM ends'), io.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string; follow?: boolean }) => {
      const { settings } = await ctx(o);
      const [{ RunCache, vmmOf }, { followConsole, readConsole }] = await Promise.all([import('../runtime/state.js'), import('../commands/run.js')]);
      const s = await new RunCache(settings.runCache).read(o.vmmId);
      if (!o.follow) return out(await readConsole(s.serialLog));
      for await (const chunk of followConsole(s.serialLog, vmmOf(s))) out(chunk);
    });
  withProfileOptions(program.command('kill').description('stop a VM and remove everything it left').requiredOption('--vmm-id <id>', 'the VM').option('--shutdown-timeout <seconds>', 'wait this long before forcing', '10'), io.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string; shutdownTimeout: string }) => {
      const { settings } = await ctx(o);
      const [{ killVm }, { RunCache }] = await Promise.all([import('../commands/run.js'), import('../runtime/state.js')]);
      await killVm(new RunCache(settings.runCache), o.vmmId, seconds(o.shutdownTimeout, '--shutdown-timeout'), logger.child('kill'));
    });
  withProfileOptions(program.command('purge').description('remove every VM whose process is gone'), io.env, { runtime: true })
    .action(async (o: SettingsCliOpts) => {
      const { settings } = await ctx(o);
      const [{ purgeVms }, { RunCache }] = await Promise.all([import('../commands/run.js'), import('../runtime/state.js')]);
      const ids = await purgeVms(new RunCache(settings.runCache), logger.child('purge'));
      out(ids.map((i) => `${i}\n`).join(''));
    });

  // Doctor ------------------------------------------------------------------------------------------
  withProfileOptions(
    program
      .command('doctor')
      .description('check every part a build or run needs; exit 2 when a required part is missing')
      .option('--require <part>', `treat an optional part as required, repeatable (${OPTIONAL_PARTS.join(', ')})`, collect)
      .option('--json', 'print JSON'),
    io.env,
    { runtime: true },
  ).action(async (o: SettingsCliOpts & { require?: string[]; json?: boolean }) => {
    const { settings, storage } = await ctx(o);
    const { doctor, missingRequired } = await import('../commands/doctor.js');
    const results = await doctor({ settings, storage, profileConfDir: o.profileConfDir, require: o.require ?? [] });
    if (o.json) out(json(results));
    else out(table(['PART', 'STATUS', 'REQUIRED', 'DETAIL', 'FIX'], results.map((r) => [r.part, r.status, r.required ? 'yes' : 'no', r.detail, r.fix ?? ''])));
    const missing = missingRequired(results);
    if (missing.length > 0) {
      throw new UserError(`required parts missing: ${missing.map((m) => m.part).join(', ')}: ${missing[0]?.fix ?? 'see the table above'}`);
    }
  });

  return program;
}
