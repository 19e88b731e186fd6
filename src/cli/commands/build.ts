import type { Command } from 'commander';
import { defaultCacheDir } from '../../profile/paths.js';
import { parseSize } from '../../util/size.js';
import { parseTag } from '../../store/tag.js';
import { UserError } from '../../util/errors.js';
import { parseSecretFlag } from '../../util/secrets.js';
import { parseSshFlag } from '../../util/ssh-agent.js';
import { json } from '../format.js';
import { collect, Option, vmChoice, withProfileOptions, withRegistryMirrorOption, withVmOptions, type CliContext, type SettingsCliOpts, type VmCliOpts } from '../options.js';

/** baseos and rootfs. */
export function register(program: Command, ctx: CliContext): void {
  const { out } = ctx;
  type BuildCli = SettingsCliOpts & VmCliOpts & {
    dockerfile?: string; context?: string; buildArg?: string[]; target?: string; dockerfileStage?: string; tag?: string; plan?: boolean;
    engine?: string; dockerImage?: string; dockerImageBase?: string; size?: string; freeSpace?: string; journal?: boolean; overwrite?: boolean;
    stepTimeout?: string; cache?: boolean; vmlinuxId?: string; mem?: string; maxDownloadSize?: string; allowHostUrls?: boolean;
    label?: string[]; pull?: boolean; secret?: string[]; ssh?: string[]; cacheFrom?: string[]; cacheTo?: string; cacheMaxSize?: string;
  };
  const buildOptions = (cmd: Command, what: 'baseos' | 'rootfs'): Command => {
    cmd
      .option('--dockerfile <source>', 'a local path, Dockerfile text, an http(s) URL, or git+https://host/repo.git:/path/Dockerfile#ref')
      .option('--context <dir>', "build context directory (default: the Dockerfile's directory)")
      .option('--build-arg <name=value>', 'build argument, repeatable', collect)
      .option('--target <stage>', 'the Dockerfile stage to build, by name or index (default: the last)')
      .option('--dockerfile-stage <stage>', 'the same as --target (kept for compatibility)')
      .option('--tag <org/name:version>', what === 'baseos' ? 'tag of the stored image (default: derived from FROM, alpine:3.12 -> _/alpine:3.12)' : 'tag of the stored image')
      .addOption(what === 'rootfs'
        ? new Option('--engine <engine>', "build engine: vm (firebuild's own: RUN steps inside a microVM booted from the base image; the default for --dockerfile) or docker (the Docker engine; the default for --docker-image)").choices(['docker', 'vm'])
        : new Option('--engine <engine>', 'build engine').choices(['docker']).default('docker'))
      .option('--size <size>', 'exact size of the ext4 file (e.g. 2G); default: content plus --free-space')
      .option('--free-space <size>', 'free space kept in the image after shrinking', '256M')
      .option('--journal', 'give the file system a journal (off by default: every VM boots a throwaway copy)')
      .option('--overwrite', 'replace an existing image with the same tag')
      .option('--label <name=value>', "label added to the image config (over the Dockerfile's LABELs), repeatable", collect)
      .option('--pull', 'take FROM and COPY --from images from their registries even when the local Docker engine has them')
      .option('--secret <id=NAME,src=FILE|env=VAR>', 'a build secret for RUN --mount=type=secret, as docker buildx build --secret (type=file|env; the id defaults to the file\'s base name or the variable\'s name); never stored in the image, its metadata or the step cache; repeatable', collect)
      .option('--ssh <default|ID=SOCKET>', "an ssh agent for RUN --mount=type=ssh, as docker build --ssh: `default` (or an ID alone) is $SSH_AUTH_SOCK, ID=SOCKET names an agent's socket (a key file is refused: load it with ssh-add); only listing keys and signing reach the agent; repeatable", collect)
      .option('--no-cache', 'run every step: no step cache (vm engine; nor is it refilled) or Docker build cache (docker engine)')
      .option('--max-download-size <size>', 'the largest ADD URL or http context file (e.g. 8G); default: $FIREBUILD_MAX_DOWNLOAD_SIZE, else 4G')
      .option('--allow-host-urls', "let the Dockerfile's ADD URLs (and redirects) reach this host's own addresses, loopback and link-local (trusted Dockerfiles only); also FIREBUILD_ALLOW_HOST_URLS=1");
    if (what === 'rootfs') {
      cmd
        .option('--docker-image <image>', 'convert an existing Docker image (pulled with your Docker credentials when absent)')
        .option('--docker-image-base <image>', 'record this image as the parent of --docker-image')
        .option('--plan', 'print the resolved build plan as JSON and stop')
        .option('--step-timeout <seconds>', 'vm engine: the longest a RUN step may take', '1800')
        .option('--vmlinux-id <id>', 'vm engine: the kernel that boots the build VMs (default: the only stored kernel)')
        .option('--mem <mib>', 'vm engine: memory of the build VMs in MiB', '512')
        .option('--cache-from <registry:HOST/REPO>', "vm engine: take steps the local step cache lacks from this registry step cache (docs/step-cache.md); repeatable, asked in order; credentials as docker login's", collect)
        .option('--cache-to <registry:HOST/REPO>', 'vm engine: push the build\'s step entries to this registry step cache after the build (a failure is a warning, not the build\'s)')
        .option('--cache-max-size <size>', 'vm engine: with --cache-to, prune the registry step cache to this size (compressed entries, e.g. 20G), oldest entries first');
      withVmOptions(cmd, true);
      withRegistryMirrorOption(cmd);
    }
    return withProfileOptions(cmd, ctx.env, { storage: true });
  };
  /** --target, or its older name --dockerfile-stage. */
  const targetOf = (o: BuildCli): string | undefined => {
    if (o.target !== undefined && o.dockerfileStage !== undefined && o.target !== o.dockerfileStage) {
      throw new UserError(`--target ${o.target} and --dockerfile-stage ${o.dockerfileStage} disagree: give one of them`);
    }
    return o.target ?? o.dockerfileStage;
  };
  const runBuild = async (type: 'baseos' | 'rootfs', o: BuildCli): Promise<void> => {
    const target = targetOf(o);
    if (o.plan) {
      if (!o.dockerfile) throw new UserError('--plan needs --dockerfile');
      const { planCommand } = await import('../../commands/plan.js');
      const plan = await planCommand({
        dockerfile: o.dockerfile,
        ...(o.context ? { context: o.context } : {}),
        buildArgs: o.buildArg ?? [],
        ...(target ? { target } : {}),
        cacheDir: defaultCacheDir(ctx.env),
        ...(o.allowHostUrls ? { allowHostUrls: true } : {}),
      }, ctx.logger.child('plan'));
      return out(json(plan));
    }
    const { settings, storage } = await ctx.load(o);
    const { buildImage, resolveEngine } = await import('../../commands/build.js');
    const common = {
      type,
      ...(o.context ? { context: o.context } : {}),
      buildArgs: o.buildArg ?? [],
      ...(target ? { target } : {}),
      overwrite: o.overwrite ?? false,
      cacheDir: defaultCacheDir(ctx.env),
      ...(o.allowHostUrls ? { allowHostUrls: true } : {}),
      ...(o.label?.length ? { labels: labelFlags(o.label) } : {}),
      ...(o.pull ? { pull: true } : {}),
      ...(o.cache === false ? { noCache: true } : {}),
      ...(o.secret?.length ? { secrets: o.secret.map((x) => parseSecretFlag(x, ctx.env)) } : {}),
      ...(o.ssh?.length ? { sshAgents: o.ssh.map((x) => parseSshFlag(x, ctx.env)) } : {}),
    };
    const registryCache = Boolean(o.cacheFrom?.length || o.cacheTo || o.cacheMaxSize);
    if (o.cacheMaxSize && !o.cacheTo) throw new UserError('--cache-max-size prunes the --cache-to registry step cache: give --cache-to too');
    if (resolveEngine(type, o.engine, o.dockerImage) === 'vm') {
      if (!o.dockerfile) throw new UserError('--engine vm builds from --dockerfile: give one (or use --engine docker for --docker-image)');
      if (!/^\d+$/.test(o.stepTimeout ?? '') || Number(o.stepTimeout) < 1) throw new UserError(`malformed --step-timeout '${o.stepTimeout}': give seconds, e.g. 600`);
      if (!/^\d+$/.test(o.mem ?? '') || Number(o.mem) < 64) throw new UserError(`malformed --mem '${o.mem}': give MiB, at least 64`);
      const sizes = sizeFlags(o);
      const machine = vmChoice(o);
      const v = await buildImage({
        ...common, type: 'rootfs', engine: 'vm', dockerfile: o.dockerfile, ...sizes, tag: parseTag(o.tag ?? ''), machine,
        ...(o.vmlinuxId ? { vmlinuxId: o.vmlinuxId } : {}), memMib: Number(o.mem), accel: o.accel ?? 'auto',
        stepTimeoutMs: Number(o.stepTimeout) * 1000,
        ...(o.cacheFrom?.length ? { cacheFrom: o.cacheFrom } : {}),
        ...(o.cacheTo ? { cacheTo: o.cacheTo } : {}),
        ...(o.cacheMaxSize ? { cacheMaxBytes: parseSize(o.cacheMaxSize, '--cache-max-size') } : {}),
      }, { settings, storage }, ctx.logger.child('vm-build'));
      const s = v.steps!;
      return out(json({ tag: v.image.tag, rootfs: v.image.rootfsPath, metadata: v.image.metadataPath, sha256: v.image.metadata.rootfs.sha256, size: v.image.metadata.rootfs.apparentSize, builder: 'vm', executed: s.executed, cached: s.cached, timings: s.timings, ...(s.registryCache ? { registryCache: s.registryCache } : {}) }));
    }
    if (registryCache) throw new UserError('--cache-from, --cache-to and --cache-max-size are the vm engine\'s registry step cache: add --engine vm (the Docker engine keeps its own build cache)');
    const sizes = sizeFlags(o);
    const r = await buildImage({
      ...common, engine: 'docker', ...sizes,
      ...(o.dockerfile ? { dockerfile: o.dockerfile } : {}),
      ...(o.tag ? { tag: parseTag(o.tag) } : {}),
      ...(o.dockerImage ? { dockerImage: o.dockerImage } : {}),
      ...(o.dockerImageBase ? { dockerImageBase: o.dockerImageBase } : {}),
      journal: o.journal ?? false,
    }, { settings, storage }, ctx.logger.child(type));
    out(json({ tag: r.image.tag, rootfs: r.image.rootfsPath, metadata: r.image.metadataPath, sha256: r.image.metadata.rootfs.sha256, size: r.image.metadata.rootfs.apparentSize, builder: r.builder }));
  };
  /** --label NAME=value flags as a map (the last of one name wins, as docker build's). */
  const labelFlags = (labels: string[]): Record<string, string> => Object.fromEntries(labels.map((l) => {
    const eq = l.indexOf('=');
    if (eq <= 0) throw new UserError(`malformed --label '${l}': write NAME=value, e.g. org.opencontainers.image.title=web`);
    return [l.slice(0, eq), l.slice(eq + 1)];
  }));
  /** --size, --free-space and --max-download-size in bytes, parsed here once. */
  const sizeFlags = (o: BuildCli): { sizeBytes?: number; freeBytes: number; maxDownloadBytes?: number } => ({
    ...(o.size ? { sizeBytes: parseSize(o.size, '--size') } : {}),
    freeBytes: parseSize(o.freeSpace ?? '256M', '--free-space'),
    ...(o.maxDownloadSize ? { maxDownloadBytes: parseSize(o.maxDownloadSize, '--max-download-size') } : {}),
  });
  buildOptions(program.command('baseos').description('build a base OS root file system from a Dockerfile with the Docker engine'), 'baseos')
    .action(async (o: BuildCli) => {
      if (!o.dockerfile) throw new UserError('baseos needs --dockerfile PATH');
      await runBuild('baseos', o);
    });
  buildOptions(program.command('rootfs').description('build an application root file system from a Dockerfile or a Docker image (--plan prints the build plan)'), 'rootfs')
    .action(async (o: BuildCli) => runBuild('rootfs', o));
}
