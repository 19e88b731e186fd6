import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { RegistryCacheReport } from '../engine/registry-step-cache.js';
import type { Readable } from 'node:stream';
import { buildxTar } from '../engine/buildx.js';
import type { ImageConfig } from '../store/metadata.js';
import { DockerBuildError, DockerEngine } from '../engine/docker-engine.js';
import { contextTar } from '../engine/context-tar.js';
import { withDownloads, type Downloads } from '../source/downloads.js';
import { fromDockerConfig, tagFromImageRef } from '../oci/image-config.js';
import { importStoredImage } from '../engine/import-stored.js';
import { parseDockerfile } from '../dockerfile/parse.js';
import { buildPlan } from '../dockerfile/plan.js';
import type { Plan, Step } from '../dockerfile/plan-schema.js';
import { convertTarStream, type ConvertResult } from '../rootfs/convert.js';
import { resolveSource, type ResolvedSource } from '../source/resolve.js';
import type { StorageProvider, StoredImage } from '../store/provider.js';
import { formatTag, isValidTag, parseTag, type Tag } from '../store/tag.js';
import { own } from '../util/cleanup.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { checkSecretFiles, type SecretSource } from '../util/secrets.js';
import { checkSshAgents, type SshAgentSource } from '../util/ssh-agent.js';
import { parseBuildArgs } from '../dockerfile/build-args.js';
import { vmSettingsFor, type VmChoice } from './vm-settings.js';
import { vmUnsupported } from '../engine/vm/plan.js';
import type { Settings } from '../profile/settings.js';

export interface BuildOptions {
  type: 'baseos' | 'rootfs';
  engine: 'docker';
  dockerfile?: string;
  context?: string;
  buildArgs?: string[];
  target?: string;
  /** Parsed by the face; baseos derives it from FROM when absent. */
  tag?: Tag;
  dockerImage?: string;
  dockerImageBase?: string;
  sizeBytes?: number;
  freeBytes?: number;
  journal?: boolean;
  overwrite?: boolean;
  cacheDir: string;
  /** The largest http context file the plan fetches (default: FIREBUILD_MAX_DOWNLOAD_SIZE, else 4 GiB). */
  maxDownloadBytes?: number;
  /** --allow-host-urls: URLs the Dockerfile names may reach host-only addresses (net/host-only.ts). */
  allowHostUrls?: boolean;
  /** --label: added to the image config's labels (firebuild's own org.firebuild.* labels win). */
  labels?: Record<string, string>;
  /** --no-cache: the Docker engine builds every step. */
  noCache?: boolean;
  /** --pull: the Docker engine pulls the bases even when it has them. */
  pull?: boolean;
  /** --secret: handed to BuildKit (`docker buildx build --secret`); the classic builder has no secrets. */
  secrets?: readonly SecretSource[];
  /** --ssh: handed to BuildKit (`docker buildx build --ssh`); the classic builder has no ssh mounts. */
  sshAgents?: readonly SshAgentSource[];
}

export interface BuildResult {
  image: StoredImage;
  builder: 'classic' | 'buildkit' | 'none';
  conversion: ConvertResult;
}

/** Features the classic builder lacks: the plan must not use them unless BuildKit builds it. */
export function buildkitOnly(step: Step): string | undefined {
  if (step.heredocs?.length) return 'heredocs';
  if (step.mounts?.some((m) => m.type === 'ssh')) return 'RUN --mount=type=ssh';
  if (step.mounts?.length) return 'RUN --mount';
  if (step.network !== undefined) return 'RUN --network';
  if (step.security !== undefined) return 'RUN --security';
  if (step.chmod !== undefined) return `${step.keyword} --chmod`;
  if (step.link !== undefined) return `${step.keyword} --link`;
  if (step.checksum !== undefined) return 'ADD --checksum';
  if (step.parents) return 'COPY --parents';
  if (step.exclude?.length) return `${step.keyword} --exclude`;
  if (step.healthcheck?.startIntervalNs !== undefined) return 'HEALTHCHECK --start-interval';
  const m = /^\s*\w+\s+(?:--\S+\s+)*--(unpack)\b/i.exec(step.original);
  if (m) return `${step.keyword} --${m[1]}`;
  return undefined;
}

/** `baseos` and `rootfs --engine docker`: build (or take) an image with the Docker engine and store it as ext4. */
export async function buildWithDocker(o: BuildOptions, storage: StorageProvider, log: Logger): Promise<BuildResult> {
  // The Docker engine fetches ADD URLs itself; http context files come from these downloads.
  return withDownloads(o, (downloads) => buildWithDockerDownloads(o, storage, log, downloads));
}

async function buildWithDockerDownloads(o: BuildOptions, storage: StorageProvider, log: Logger, downloads: Downloads): Promise<BuildResult> {
  if (!o.dockerfile && !o.dockerImage) throw new UserError('give --dockerfile SOURCE or --docker-image IMAGE');
  if (o.dockerfile && o.dockerImage) throw new UserError('--dockerfile and --docker-image are exclusive: give one');
  const started = Date.now();
  const engine = new DockerEngine(log.child('docker'));

  let src: ResolvedSource | undefined;
  let plan: Plan | undefined;
  let tag: Tag | undefined = o.tag;
  if (o.dockerfile) {
    src = await resolveSource(o.dockerfile, { ...(o.context ? { context: o.context } : {}), cacheDir: o.cacheDir, logger: log });
    plan = await buildPlan(src.text, {
      buildArgs: parseBuildArgs(o.buildArgs),
      ...(o.target !== undefined ? { target: o.target } : {}),
      context: src.context,
      source: { kind: src.kind, ref: src.ref, dockerfile: src.kind === 'literal' ? 'Dockerfile' : src.dockerfile, ...(src.commit ? { commit: src.commit } : {}) },
      downloads,
    });
    if (!tag && o.type === 'baseos') {
      const base = externalBase(plan);
      const derived = base ? tagFromImageRef(base) : undefined;
      if (!derived) throw new UserError(`cannot derive a tag from FROM ${base ?? 'scratch'}: pass --tag org/name:version`);
      log.info('tag derived from FROM', { from: base, tag: derived });
      tag = parseTag(derived);
    }
  }
  if (!tag) throw new UserError('--tag org/name:version is required');
  const canonical = formatTag(tag);
  if (!o.overwrite && (await storage.hasImage(canonical))) throw new UserError(`image ${canonical} already exists: choose another tag or pass --overwrite`);
  await engine.ensureReachable();

  let builder: BuildResult['builder'] = 'none';
  const parents: string[] = [];
  let sourceMeta: { kind: 'dockerfile' | 'docker-image'; ref: string; commit?: string; stage?: string };
  /** Where the root file system tar comes from, and the image config to record. */
  let produce: (scratch: string) => Promise<{ stream: Readable; done: () => Promise<void>; config: ImageConfig; dockerImageId?: string }>;

  if (plan && src) {
    const useBuildkit = await engine.hasBuildx();
    if (!useBuildkit) {
      for (const st of plan.stages) {
        for (const step of st.steps) {
          const feature = buildkitOnly(step);
          if (feature) {
            // The classic builder would refuse some of these and quietly build something else for others: never let it.
            const vm = vmUnsupported(step) === undefined ? ', build with --engine vm' : '';
            throw new UserError(`${feature} needs BuildKit (docker buildx), which this host's Docker lacks: install docker-buildx${vm}, or build without ${feature}`, { file: step.file, line: step.line });
          }
        }
      }
    }
    // FROM org/name:version naming a stored firebuild image: give the engine that image.
    for (const st of plan.stages) {
      if (st.base.kind === 'image' && isValidTag(st.base.ref) && (await storage.hasImage(st.base.ref))) {
        await importStoredImage(engine, await storage.getImage(st.base.ref), st.base.ref, log);
      }
    }
    const labels = { ...o.labels, 'org.firebuild.source': src.ref === '<literal>' ? 'literal' : src.ref, 'org.firebuild.plan-digest': plan.digest, 'org.firebuild.tag': canonical };
    const target = o.target !== undefined ? (plan.target.name ?? o.target) : undefined;
    const theSrc = src;
    const thePlan = plan;
    if (useBuildkit) {
      builder = 'buildkit';
      // BuildKit's tar output carries no image config: predict it from the plan, with the bases' configs.
      const predicted = await buildPlan(src.text, {
        buildArgs: plan.buildArgs,
        ...(o.target !== undefined ? { target: o.target } : {}),
        context: src.context,
        source: plan.source,
        baseConfig: async (ref) => fromDockerConfig((await engine.ensureImage(ref)).Config as never),
        downloads,
      });
      const config = predicted.stages.find((st) => st.index === predicted.target.index)!.config;
      config.labels = { ...config.labels, ...labels };
      produce = async (scratch) => {
        const ctx = await contextTar(theSrc, thePlan, scratch, downloads);
        log.info('building with BuildKit (docker buildx, --output type=tar)', { dockerfile: theSrc.dockerfile });
        const bx = buildxTar(ctx.stream, { dockerfile: ctx.dockerfile, buildArgs: thePlan.buildArgs, ...(target ? { target } : {}), labels, ...(o.noCache ? { noCache: true } : {}), ...(o.pull ? { pull: true } : {}), ...(o.secrets?.length ? { secrets: o.secrets } : {}), ...(o.sshAgents?.length ? { sshAgents: o.sshAgents } : {}) }, theSrc.dockerfile, log);
        return { ...bx, config };
      };
    } else {
      builder = 'classic';
      const t = tag;
      const ref = `firebuild-build/${t.name}:${t.org}-${t.version}`;
      const scratchDir = path.join(o.cacheDir, 'build', `${process.pid}-${Date.now()}`);
      // The context's scratch copy: a cancel mid-build removes it too.
      const release = own(`the build context's scratch directory ${scratchDir}`, () => fsp.rm(scratchDir, { recursive: true, force: true }));
      try {
        const ctx = await contextTar(src, plan, scratchDir, downloads);
        log.info('building with the Docker engine', { builder, dockerfile: src.dockerfile });
        await engine.build(ctx.stream, { dockerfile: ctx.dockerfile, buildArgs: plan.buildArgs, ...(target ? { target } : {}), labels, tag: ref, ...(o.noCache ? { noCache: true } : {}), ...(o.pull ? { pull: true } : {}) }).catch((err: unknown) => {
          throw buildFailure(err, theSrc);
        });
      } finally {
        await fsp.rm(scratchDir, { recursive: true, force: true });
        release();
      }
      produce = exportOf(engine, ref);
    }
    // The parent chain: the base, then (for a stored firebuild base) that image's own parents.
    const base = externalBase(plan);
    if (base) {
      parents.push(base);
      if (isValidTag(base) && (await storage.hasImage(base))) parents.push(...(await storage.getImage(base)).metadata.parents);
    }
    sourceMeta = { kind: 'dockerfile', ref: src.ref, ...(src.commit ? { commit: src.commit } : {}), ...(plan.target.name ? { stage: plan.target.name } : {}) };
  } else {
    const ref = o.dockerImage as string;
    await engine.ensureImage(ref);
    if (o.dockerImageBase) parents.push(o.dockerImageBase);
    sourceMeta = { kind: 'docker-image', ref };
    produce = exportOf(engine, ref);
  }

  let conversion: ConvertResult | undefined;
  const what = o.dockerImage ? `the export of ${o.dockerImage}` : `the build of ${src?.dockerfile ?? 'the Dockerfile'}`;
  const image = await storage.writeImage(canonical, async (staging) => {
    const source = await produce(path.join(staging.dir, 'scratch'));
    const progress = log.progress('converting to ext4');
    const [conv, done] = await Promise.allSettled([
      convertTarStream(source.stream, {
        image: staging.rootfsPath,
        what,
        ...(o.sizeBytes !== undefined ? { sizeBytes: o.sizeBytes } : {}),
        ...(o.freeBytes !== undefined ? { freeBytes: o.freeBytes } : {}),
        journal: o.journal ?? false,
        log,
      }),
      source.done(),
    ]);
    // A failed producer explains a truncated stream better than the converter can.
    if (done.status === 'rejected') throw done.reason;
    if (conv.status === 'rejected') throw conv.reason;
    conversion = conv.value;
    progress.done(`converted: ${conversion.stats.entries} entries, ${conversion.imageAllocated} bytes allocated of ${conversion.imageBytes}`);
    return {
      type: o.type,
      source: sourceMeta,
      parents,
      // A converted docker-image gets the labels here (a built Dockerfile has them from the build already).
      config: o.labels && o.dockerImage ? { ...source.config, labels: { ...source.config.labels, ...o.labels } } : source.config,
      contentSize: conversion.stats.bytes,
      build: {
        engine: 'docker',
        builder,
        ...(plan ? { planDigest: plan.digest, buildArgs: plan.buildArgs } : {}),
        durationMs: Date.now() - started,
        ...(source.dockerImageId ? { dockerImageId: source.dockerImageId } : {}),
      },
    };
  }, { overwrite: o.overwrite ?? false });
  log.info('image stored', { tag: image.tag, rootfs: image.rootfsPath });
  return { image, builder, conversion: conversion as ConvertResult };
}

/** The external image the target stage is built on (following FROM <stage>), if any. */
export function externalBase(plan: Plan): string | undefined {
  let st = plan.stages.find((s) => s.index === plan.target.index);
  while (st) {
    if (st.base.kind === 'image') return st.base.ref;
    if (st.base.kind === 'scratch') return undefined;
    const idx = st.base.stage;
    st = plan.stages.find((s) => s.index === idx);
  }
  return undefined;
}

/** A failed Docker build as one line at the failing instruction's file and line. */
function buildFailure(err: unknown, src: ResolvedSource): unknown {
  if (!(err instanceof DockerBuildError)) return err;
  const f = err.failure;
  // The classic builder numbers every instruction of the Dockerfile, global ARGs and FROMs included.
  const ins = f.step !== undefined ? parseDockerfile(src.text, src.dockerfile).instructions[f.step - 1] : undefined;
  const tail = f.tail.slice(-5).join(' | ');
  const what = f.instruction ? `${f.instruction.split(' ')[0]} failed` : 'the build failed';
  const code = f.exitCode !== undefined ? ` with exit code ${f.exitCode}` : '';
  const msg = f.exitCode !== undefined ? `${what}${code}${tail ? `; output: ${tail}` : ''}` : `${what}: ${f.message}`;
  return new UserError(msg, { ...(ins ? { file: ins.file, line: ins.line } : {}), cause: err });
}

/** Produce from an image in the engine: its config, and its export stream (the container removed after). */
function exportOf(engine: DockerEngine, ref: string): (scratch: string) => Promise<{ stream: Readable; done: () => Promise<void>; config: ImageConfig; dockerImageId: string }> {
  return async () => {
    const info = await engine.ensureImage(ref);
    const exp = await engine.exportImage(info.Id);
    return { stream: exp.stream, done: exp.done, config: fromDockerConfig(info.Config as never), dockerImageId: info.Id };
  };
}

/** The engine of a build: what --engine (input engine) says; else vm for a Dockerfile (no step runs on the host) and docker for --docker-image (a conversion) and baseos. */
export function resolveEngine(type: 'baseos' | 'rootfs', engine: string | undefined, dockerImage: string | undefined): 'docker' | 'vm' {
  if (engine === 'docker' || engine === 'vm') return engine;
  return type === 'rootfs' && !dockerImage ? 'vm' : 'docker';
}

/** What both engines take: the face parsed every value (tag, sizes, durations) once. */
interface ImageBuildCommon {
  type: 'baseos' | 'rootfs';
  context?: string;
  buildArgs: string[];
  target?: string;
  sizeBytes?: number;
  freeBytes: number;
  overwrite: boolean;
  cacheDir: string;
  maxDownloadBytes?: number;
  allowHostUrls?: boolean;
  /** Added to the image config's labels. */
  labels?: Record<string, string>;
  /** Bases from their registries even when the local Docker engine has them. */
  pull?: boolean;
  /** Every step runs: no step cache (vm) or build cache (docker) is used. */
  noCache?: boolean;
  /** Build secrets (--secret; the actions' secrets, secret-files, secret-envs) for RUN --mount=type=secret. */
  secrets?: readonly SecretSource[];
  /** Build ssh agents (--ssh; the actions' ssh input) for RUN --mount=type=ssh. */
  sshAgents?: readonly SshAgentSource[];
}

/** The Docker engine: a Dockerfile built by Docker, or a Docker image converted. */
export interface DockerImageBuild extends ImageBuildCommon {
  engine: 'docker';
  dockerfile?: string;
  tag?: Tag;
  dockerImage?: string;
  dockerImageBase?: string;
  journal: boolean;
}

/** firebuild's own engine: a Dockerfile's RUN steps inside microVMs booted from the base image (rootfs only). */
export interface VmImageBuild extends ImageBuildCommon {
  type: 'rootfs';
  engine: 'vm';
  dockerfile: string;
  tag: Tag;
  machine: VmChoice;
  vmlinuxId?: string;
  memMib?: number;
  accel?: string;
  stepTimeoutMs?: number;
  /** --cache-from registry:HOST/REPO (asked in order for steps the local cache lacks). */
  cacheFrom?: readonly string[];
  /** --cache-to registry:HOST/REPO: the build's step entries pushed after it (a failure is a warning). */
  cacheTo?: string;
  /** --cache-max-size: --cache-to pruned to this many bytes of layers, oldest entries first. */
  cacheMaxBytes?: number;
}

export type ImageBuild = DockerImageBuild | VmImageBuild;

/** One result for either engine; `steps` is the vm engine's (what ran, what came from the step cache). */
export interface ImageBuildResult {
  image: StoredImage;
  engine: 'docker' | 'vm';
  builder: BuildResult['builder'] | 'vm';
  steps?: { executed: number; cached: number; timings: { bootMs: number; stepsMs: number; convertMs: number; totalMs: number }; stepKeys: string[]; cacheKey: string; registryCache?: RegistryCacheReport };
}

/**
 * `baseos`, `rootfs` and the build-rootfs/build-baseos actions: build with the engine the face resolved
 * (resolveEngine), the build VMs booted as the profile's settings and the face's VM choice say.
 */
export async function buildImage(b: ImageBuild, env: { settings: Settings; storage: StorageProvider }, log: Logger): Promise<ImageBuildResult> {
  // A secret's file must be there before the build starts (as buildx checks it).
  if (b.secrets?.length) await checkSecretFiles(b.secrets);
  // An ssh agent's socket too (a key file is refused: it belongs in an agent).
  if (b.sshAgents?.length) await checkSshAgents(b.sshAgents);
  const common = {
    ...(b.context ? { context: b.context } : {}),
    buildArgs: b.buildArgs,
    ...(b.target ? { target: b.target } : {}),
    ...(b.sizeBytes !== undefined ? { sizeBytes: b.sizeBytes } : {}),
    freeBytes: b.freeBytes,
    overwrite: b.overwrite,
    cacheDir: b.cacheDir,
    ...(b.maxDownloadBytes !== undefined ? { maxDownloadBytes: b.maxDownloadBytes } : {}),
    ...(b.allowHostUrls ? { allowHostUrls: true } : {}),
    ...(b.labels && Object.keys(b.labels).length ? { labels: b.labels } : {}),
    ...(b.pull ? { pull: true } : {}),
    ...(b.noCache ? { noCache: true } : {}),
    ...(b.secrets?.length ? { secrets: b.secrets } : {}),
    ...(b.sshAgents?.length ? { sshAgents: b.sshAgents } : {}),
  };
  if (b.engine === 'vm') {
    const vm = { ...(await vmSettingsFor(b.machine, env.settings)), runCache: env.settings.runCache, cgroupParent: env.settings.cgroupParent };
    const [{ buildWithVm, DEFAULT_CACHE_MAX_BYTES }, { RegistryCaches }, { StepCache }] = await Promise.all([import('../engine/vm-engine.js'), import('../engine/registry-step-cache.js'), import('../engine/step-cache.js')]);
    // --cache-from/--cache-to are read (syntax, credentials) before anything is built; --no-cache asks none of them.
    const registry = b.noCache ? undefined : await RegistryCaches.open({ ...(b.cacheFrom ? { from: b.cacheFrom } : {}), ...(b.cacheTo ? { to: b.cacheTo } : {}), maxEntryBytes: DEFAULT_CACHE_MAX_BYTES }, log);
    const remote = registry?.remote();
    const v = await buildWithVm({
      dockerfile: b.dockerfile, tag: formatTag(b.tag), ...common,
      ...(b.vmlinuxId ? { vmlinuxId: b.vmlinuxId } : {}),
      ...(b.memMib !== undefined ? { memMib: b.memMib } : {}),
      ...(b.accel ? { accel: b.accel } : {}),
      ...(b.stepTimeoutMs !== undefined ? { stepTimeoutMs: b.stepTimeoutMs } : {}),
      registryMirrors: env.settings.registryMirrors,
      ...(remote ? { remoteCache: remote } : {}),
      vm,
    }, env.storage, log);
    const registryCache = registry ? await registry.export(v.stepKeys, new StepCache(b.cacheDir, DEFAULT_CACHE_MAX_BYTES, log), b.cacheMaxBytes) : undefined;
    return { image: v.image, engine: 'vm', builder: 'vm', steps: { executed: v.executed, cached: v.cached, timings: v.timings, stepKeys: v.stepKeys, cacheKey: v.cacheKey, ...(registryCache ? { registryCache } : {}) } };
  }
  const r = await buildWithDocker({
    type: b.type, engine: 'docker', ...common,
    ...(b.dockerfile ? { dockerfile: b.dockerfile } : {}),
    ...(b.tag ? { tag: b.tag } : {}),
    ...(b.dockerImage ? { dockerImage: b.dockerImage } : {}),
    ...(b.dockerImageBase ? { dockerImageBase: b.dockerImageBase } : {}),
    journal: b.journal,
  }, env.storage, log);
  return { image: r.image, engine: 'docker', builder: r.builder };
}

/**
 * The vm engine's step cache under `cacheDir`, as files to carry between hosts (the build-rootfs action
 * through the Actions cache): `unpack` before a build, `pack` the build's entries (`steps.stepKeys`) after.
 */
export async function stepCacheFiles(cacheDir: string, log: Logger): Promise<{ unpack: (file: string) => Promise<number>; pack: (keys: string[], file: string) => Promise<number> }> {
  const [{ StepCache }, { DEFAULT_CACHE_MAX_BYTES }] = await Promise.all([import('../engine/step-cache.js'), import('../engine/vm-engine.js')]);
  const steps = new StepCache(cacheDir, DEFAULT_CACHE_MAX_BYTES, log);
  return { unpack: (file) => steps.unpack(file), pack: (keys, file) => steps.pack(keys, file) };
}
