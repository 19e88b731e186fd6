import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as core from '@actions/core';
import { buildImage, resolveEngine, stepCacheFiles, type ImageBuildResult } from '../../commands/build.js';
import type { StorageProvider, StoredImage } from '../../store/provider.js';
import { parseTag } from '../../store/tag.js';
import { imageTag } from '../../commands/image.js';
import { UserError } from '../../util/errors.js';
import { defaultCacheDir } from '../../profile/profile.js';
import { openStorage } from '../../profile/settings.js';
import { parseSize } from '../../util/size.js';
import { ActionsLogger, actionSettings, aliasInput, boolInput, cacheVersionInput, cacheRestore, cacheSave, input, listInput, registryMirrorsInput, withCacheEntryDir } from '../common.js';
import { formatDuration, formatSize, summaryInput, writeSummary, type Cell } from '../summary.js';
import { getVmInputs, vmChoice, type VmInputs } from '../vm-inputs.js';
import { labelsInput, secretsInput, sshInput, tagsInput } from '../build-inputs.js';
import type { SshAgentSource } from '../../util/ssh-agent.js';
import type { SecretSource } from '../../util/secrets.js';

/** The build-rootfs action (and build-baseos, with type baseos): the CLI's `rootfs`/`baseos` build. */
export interface BuildInputs extends VmInputs {
  dockerfile: string;
  context: string;
  /** The stored tag: `tag`, else the first of `tags`. */
  tag: string;
  /** The further `tags`: the same image stored under each too. */
  moreTags: string[];
  /** `labels`, NAME=value: added to the image config's labels. */
  labels: Record<string, string>;
  /** `no-cache`: every step runs (no step cache, no Docker build cache; the Actions step cache is not restored). */
  noCache: boolean;
  /** `pull`: bases from their registries even when the local Docker engine has them. */
  pull: boolean;
  /** engine vm: the kernel of the build VMs (default the store's `default`). */
  vmlinuxId: string;
  buildArgs: string[];
  target: string;
  engine: string;
  dockerImage: string;
  dockerImageBase: string;
  size: string;
  freeSpace: string;
  overwrite: boolean;
  /** engine vm: carry the step cache between jobs through the Actions cache. */
  stepCache: boolean;
  cacheVersion: string;
  /** engine vm: docker.io mirrors (checked); empty: the profile's, else FIREBUILD_REGISTRY_MIRRORS. */
  registryMirrors: string[];
  /** Write the job summary (input `summary`). */
  summary: boolean;
  /** `secrets`, `secret-files`, `secret-envs` (docker/build-push-action's): for RUN --mount=type=secret; values masked. */
  secrets: SecretSource[];
  /** `ssh` (docker/build-push-action's): the agents RUN --mount=type=ssh forwards. */
  sshAgents: SshAgentSource[];
  /** engine vm: `cache-from`, `cache-to`, `cache-max-size` (the registry step cache, docs/step-cache.md). */
  cacheFrom: string[];
  cacheTo: string;
  cacheMaxSize: string;
}

export const ENGINES = ['docker'] as const;
/** build-rootfs also offers firebuild's own engine (RUN steps inside microVMs). */
export const ROOTFS_ENGINES = ['docker', 'vm'] as const;

export function getInputs(): BuildInputs {
  const dockerImage = input('docker-image');
  const [tag = '', ...moreTags] = tagsInput(true);
  // First: every secret value is masked before anything could print it.
  const secrets = secretsInput();
  return {
    secrets,
    sshAgents: sshInput(),
    // `file` is docker/build-push-action's name for it.
    dockerfile: aliasInput('dockerfile', 'file', { required: !dockerImage }),
    context: input('context'),
    tag,
    moreTags,
    labels: labelsInput(),
    noCache: boolInput('no-cache'),
    pull: boolInput('pull'),
    vmlinuxId: input('vmlinux-id'),
    buildArgs: listInput('build-args'),
    target: input('target'),
    // vm by default for a Dockerfile (no step runs on the runner's host); docker converts docker-image.
    engine: input('engine', { choices: ROOTFS_ENGINES, default: dockerImage ? 'docker' : 'vm' }),
    dockerImage,
    dockerImageBase: input('docker-image-base'),
    size: input('size'),
    freeSpace: input('free-space', { default: '256M' }),
    overwrite: boolInput('overwrite'),
    stepCache: boolInput('step-cache', true),
    cacheVersion: cacheVersionInput(),
    cacheFrom: listInput('cache-from'),
    cacheTo: input('cache-to'),
    cacheMaxSize: input('cache-max-size'),
    registryMirrors: registryMirrorsInput(),
    summary: summaryInput(),
    // engine vm: how the build VMs boot (the profile's Firecracker when backend is auto and setup installed it).
    ...getVmInputs(),
  };
}

/** The Actions cache keys of a tag's step cache: one prefix per repository name (any version), the build's own key after it. */
export function stepCacheKeys(tag: string, cacheVersion: string, cacheKey?: string): { prefix: string; key: string } {
  const repo = tag.replace(/:[^/:]*$/, '');
  // A digest of the name ends the prefix, so `org/foo` never matches `org/foo-bar`'s entries.
  const name = `${repo.replace(/[^A-Za-z0-9._-]/g, '-')}-${createHash('sha256').update(repo).digest('hex').slice(0, 8)}`;
  const prefix = `firebuild-vmsteps-${cacheVersion}-${name}-`;
  return { prefix, key: prefix + (cacheKey ?? 'none').slice(0, 20) };
}

/**
 * engine vm: before the build, the newest step cache saved for this image name (any version) comes back
 * from the Actions cache into the build cache; after it, the entries of this build's steps are saved
 * under the build's own key, unless that very entry was restored. Entries are still checked by their
 * digests when used; a failed restore or save is a warning, never a failed build.
 */
async function withStepCache(i: BuildInputs, log: ActionsLogger, build: () => Promise<ImageBuildResult>): Promise<{ result: ImageBuildResult; restored: string; saved: string }> {
  const steps = await stepCacheFiles(defaultCacheDir(), log);
  const { prefix } = stepCacheKeys(i.tag, i.cacheVersion);
  let restored = '';
  // One path for restore and save (@actions/cache's version hashes the paths), held only while in use: a
  // job building the same image name meanwhile waits for it, never the build between.
  const entry = `${prefix}steps`;
  // no-cache: nothing restored, and (as the vm engine saves nothing under it) nothing saved.
  if (i.stepCache && !i.noCache) {
    await withCacheEntryDir(entry, async (dir) => {
      try {
        const hit = await cacheRestore(dir, `${prefix}none`, [prefix]);
        if (hit) {
          const n = await steps.unpack(path.join(dir, 'steps.tar.zst'));
          restored = hit;
          core.info(`step cache: ${n} entries restored from ${hit}`);
        }
      } catch (err) {
        core.warning(`the step cache from the Actions cache is unusable (${(err as Error).message}): building without it`);
      }
    });
  }
  const result = await build();
  let saved = '';
  const { key } = stepCacheKeys(i.tag, i.cacheVersion, result.steps?.cacheKey);
  if (i.stepCache && !i.noCache && key !== restored) {
    try {
      await withCacheEntryDir(entry, async (out) => {
        await fsp.mkdir(out, { recursive: true });
        if ((await steps.pack(result.steps?.stepKeys ?? [], path.join(out, 'steps.tar.zst'))) > 0 && (await cacheSave(out, key))) saved = key;
      });
    } catch (err) {
      core.warning(`saving the step cache failed (${(err as Error).message})`);
    }
  }
  return { result, restored, saved };
}

export async function run(type: 'rootfs' | 'baseos', i: BuildInputs): Promise<void> {
  const log = new ActionsLogger(type);
  // The input's mirrors beat the profile's, as --registry-mirror does.
  const settings = await actionSettings(process.env, i.registryMirrors.length ? { registryMirror: i.registryMirrors } : {});
  const storage = openStorage(settings);
  const common = {
    type,
    ...(i.context ? { context: i.context } : {}),
    buildArgs: i.buildArgs,
    ...(i.target ? { target: i.target } : {}),
    overwrite: i.overwrite,
    cacheDir: defaultCacheDir(),
    ...(Object.keys(i.labels).length ? { labels: i.labels } : {}),
    ...(i.noCache ? { noCache: true } : {}),
    ...(i.pull ? { pull: true } : {}),
    ...(i.secrets.length ? { secrets: i.secrets } : {}),
    ...(i.sshAgents.length ? { sshAgents: i.sshAgents } : {}),
  };
  if (resolveEngine(type, i.engine, i.dockerImage) === 'vm') {
    if (type !== 'rootfs' || !i.dockerfile) throw new UserError("engine 'vm' builds a rootfs from a dockerfile: give 'dockerfile', or use engine 'docker'");
    // Inputs parsed once, here: the tag, the sizes, the VM choice.
    if (i.cacheMaxSize && !i.cacheTo) throw new UserError("cache-max-size prunes the cache-to registry step cache: give cache-to too");
    const registryCache = {
      ...(i.cacheFrom.length ? { cacheFrom: i.cacheFrom } : {}),
      ...(i.cacheTo ? { cacheTo: i.cacheTo } : {}),
      ...(i.cacheMaxSize ? { cacheMaxBytes: parseSize(i.cacheMaxSize, 'cache-max-size') } : {}),
    };
    const build = { ...common, type, engine: 'vm' as const, dockerfile: i.dockerfile, tag: parseTag(i.tag), ...sizeInputs(i), machine: vmChoice(i), ...(i.vmlinuxId ? { vmlinuxId: i.vmlinuxId } : {}), ...(process.env.FIREBUILD_ACCEL ? { accel: process.env.FIREBUILD_ACCEL } : {}), ...registryCache };
    const started = Date.now();
    const { result: v, restored, saved } = await core.group(`Build ${i.tag} with the vm engine`, () => withStepCache(i, log, () => buildImage(build, { settings, storage }, log)));
    core.setOutput('step-cache-restored', restored);
    core.setOutput('step-cache-saved', saved);
    const rc = v.steps?.registryCache;
    core.setOutput('cache-pulled', String(rc?.pulled ?? 0));
    core.setOutput('cache-pushed', String(rc?.pushed ?? 0));
    const t = v.steps?.timings;
    return report(type, i, await withMoreTags(v.image, i, storage), 'vm', Date.now() - started, [
      ...(t ? [['build phases', `boot ${formatDuration(t.bootMs)}, steps ${formatDuration(t.stepsMs)}, conversion ${formatDuration(t.convertMs)}`] as [string, Cell]] : []),
      ['steps', `${v.steps?.executed ?? 0} run, ${v.steps?.cached ?? 0} from the cache`],
      ['step cache', restored ? { code: restored } : 'nothing restored'],
      ...(saved ? [['step cache saved', { code: saved }] as [string, Cell]] : []),
      ...(rc?.from.length ? [['registry cache (from)', `${rc.pulled} pulled from ${rc.from.join(', ')}`] as [string, Cell]] : []),
      ...(rc?.to ? [['registry cache (to)', rc.exportWarning ? `export failed: ${rc.exportWarning}` : `${rc.pushed} pushed, ${rc.present} already there${rc.pruned ? `, ${rc.pruned} pruned` : ''} (${rc.to})`] as [string, Cell]] : []),
    ]);
  }
  if (i.cacheFrom.length || i.cacheTo || i.cacheMaxSize) throw new UserError("cache-from, cache-to and cache-max-size are the vm engine's registry step cache: use engine 'vm' (the Docker engine keeps its own build cache)");
  const build = {
    ...common,
    engine: 'docker' as const,
    ...(i.dockerfile ? { dockerfile: i.dockerfile } : {}),
    ...(i.tag ? { tag: parseTag(i.tag) } : {}),
    ...(i.dockerImage ? { dockerImage: i.dockerImage } : {}),
    ...(i.dockerImageBase ? { dockerImageBase: i.dockerImageBase } : {}),
    ...sizeInputs(i),
    journal: false,
  };
  const started = Date.now();
  const r = await core.group(`Build ${i.tag || i.dockerfile}`, () => buildImage(build, { settings, storage }, log));
  return report(type, i, await withMoreTags(r.image, i, storage), r.builder, Date.now() - started, []);
}

/** The image stored under every further tag too; returns the image with all its tags (the first is the built one). */
async function withMoreTags(image: StoredImage, i: BuildInputs, storage: StorageProvider): Promise<{ image: StoredImage; tags: string[] }> {
  for (const t of i.moreTags) await core.group(`Tag ${t}`, () => imageTag(storage, parseTag(image.tag), parseTag(t), { overwrite: i.overwrite }));
  return { image, tags: [image.tag, ...i.moreTags] };
}

/** Inputs size and free-space in bytes. */
function sizeInputs(i: BuildInputs): { sizeBytes?: number; freeBytes: number } {
  return { ...(i.size ? { sizeBytes: parseSize(i.size, 'size') } : {}), freeBytes: parseSize(i.freeSpace, 'free-space') };
}

async function report(type: 'rootfs' | 'baseos', i: BuildInputs, { image, tags }: { image: StoredImage; tags: string[] }, builder: string, durationMs: number, extra: [string, Cell][]): Promise<void> {
  const m = image.metadata;
  core.setOutput('tag', image.tag);
  core.setOutput('tags', tags.join('\n'));
  core.setOutput('rootfs', image.rootfsPath);
  core.setOutput('sha256', m.rootfs.sha256);
  core.setOutput('size', String(m.rootfs.apparentSize));
  // As docker/build-push-action's metadata: JSON (the content of metadata.json); its path as metadata-file.
  core.setOutput('metadata', JSON.stringify(m));
  core.setOutput('metadata-file', image.metadataPath);
  await writeSummary({
    title: `firebuild ${type}: ${image.tag}`,
    facts: [
      ['tag', { code: image.tag }],
      ...(tags.length > 1 ? [['more tags', tags.slice(1).join(', ')] as [string, Cell]] : []),
      ['source', m.source.ref],
      ['builder', builder],
      ['size', m.rootfs.contentSize !== undefined ? `${formatSize(m.rootfs.apparentSize)} (${formatSize(m.rootfs.contentSize)} of files)` : formatSize(m.rootfs.apparentSize)],
      ['build time', formatDuration(durationMs)],
      ...extra,
      ['sha256', { code: m.rootfs.sha256 }],
      ['rootfs', { code: image.rootfsPath }],
    ],
  }, i.summary);
}
