import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { pickKernel } from '../runtime/kernel.js';
import type { Stage } from '../dockerfile/plan-schema.js';
import { Ext4Tools } from '../rootfs/ext4.js';
import { withDownloads, type Downloads } from '../source/downloads.js';
import type { StorageProvider, StoredImage } from '../store/provider.js';
import { formatTag, parseTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import { throwIfCancelled } from '../util/cleanup.js';
import { copySparse } from '../util/fs.js';
import type { Logger } from '../util/logger.js';
import { secretsById, type SecretSource } from '../util/secrets.js';
import { sshAgentsById, type SshAgentSource } from '../util/ssh-agent.js';
import { StepCache } from './step-cache.js';
import { emptyImage, external, ImageResolver, materialize } from './vm/bases.js';
import { growTo, roomForCopy } from './vm/disk.js';
import { FS_STEPS, keyPlan, resolvePlan } from './vm/plan.js';
import { makeWorkDir } from './vm/workdir.js';
import { cacheVolumesDir } from './vm/cache-volumes.js';
import { DEFAULT_STEP_TIMEOUT_MS, executeStep, type BootContext, type BuildVmSettings } from './vm/steps.js';

export { ENGINE_SEMANTICS, vmUnsupported } from './vm/plan.js';
export { DEFAULT_STEP_TIMEOUT_MS, failureHint, runArgv, type BuildVmSettings } from './vm/steps.js';

/**
 * firebuild's own build engine (`rootfs --engine vm`): no Docker engine, and no step of the Dockerfile
 * runs on the host. Each stage starts from a copy of its base (a stored firebuild image, or an earlier
 * stage) grown to the build size. RUN boots that copy as a microVM (QEMU here; user-mode networking),
 * with the step's command, environment, USER and WORKDIR on the config disk, the output streamed live;
 * the guest is shut down cleanly and the image checked (`e2fsck -fn`). COPY, ADD and WORKDIR are applied
 * to the image offline through debugfs. Every file-system step's result is cached under a key chained
 * from its parent's key and its inputs (the instruction after expansion, resource digests, USER, WORKDIR),
 * so an unchanged rebuild boots nothing and a change at step k rebuilds from k.
 *
 * This file runs a build in order; vm/plan.ts plans and keys it, vm/bases.ts finds and makes the bases,
 * vm/steps.ts executes the steps.
 */
export interface VmBuildOptions {
  dockerfile: string;
  context?: string;
  buildArgs?: string[];
  target?: string;
  tag: string;
  /** The build disk (and at least the final image's) size; default: the base plus 1 GiB. */
  sizeBytes?: number;
  freeBytes?: number;
  overwrite?: boolean;
  cacheDir: string;
  vmlinuxId?: string;
  memMib?: number;
  accel?: string;
  stepTimeoutMs?: number;
  noCache?: boolean;
  /** --pull: a FROM or COPY --from image comes from its registry even when the local Docker engine has it (as `docker build --pull`). */
  pull?: boolean;
  /** --label: added to the image config's labels (over the Dockerfile's LABELs). */
  labels?: Record<string, string>;
  /** The step cache's cap; least recently used entries go first. */
  cacheMaxBytes?: number;
  /** How build VMs boot (default: QEMU with user-mode networking, its run cache under cacheDir). */
  vm?: BuildVmSettings;
  /** The largest ADD URL or http context file (default: FIREBUILD_MAX_DOWNLOAD_SIZE, else 4 GiB). */
  maxDownloadBytes?: number;
  /** --allow-host-urls: URLs the Dockerfile names may reach host-only addresses (net/host-only.ts). */
  allowHostUrls?: boolean;
  /** docker.io mirrors (`http(s)://host[:port]`) asked before docker.io for a FROM or COPY --from image. */
  registryMirrors?: readonly string[];
  /** Build secrets (RUN --mount=type=secret): never part of a step's key, the image or its metadata. */
  secrets?: readonly SecretSource[];
  /** Build ssh agents (RUN --mount=type=ssh): forwarded to the RUNs that mount them, never part of a key, the image or its metadata. */
  sshAgents?: readonly SshAgentSource[];
  /**
   * Where a step the local cache lacks may come from (--cache-from registry:...): asked, from the last
   * step back, only when the local cache has no entry; `pull` puts a verified entry into the local cache.
   */
  remoteCache?: { pull(key: string, local: StepCache): Promise<boolean>; rejected?(key: string): void };
}

export interface VmBuildResult {
  image: StoredImage;
  /** Steps executed (not from the cache) and reused. */
  executed: number;
  cached: number;
  timings: { bootMs: number; stepsMs: number; convertMs: number; totalMs: number };
  /** The step cache keys of every file-system step built (what carries a build to another runner), and the image's own key. */
  stepKeys: string[];
  cacheKey: string;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

export const DEFAULT_CACHE_MAX_BYTES = 20 * 1024 ** 3;

export async function buildWithVm(o: VmBuildOptions, storage: StorageProvider, log: Logger): Promise<VmBuildResult> {
  return withDownloads(o, (downloads) => buildWithDownloads(o, storage, log, downloads));
}

async function buildWithDownloads(o: VmBuildOptions, storage: StorageProvider, log: Logger, downloads: Downloads): Promise<VmBuildResult> {
  const started = Date.now();
  const tag = formatTag(parseTag(o.tag));
  const images = new ImageResolver(storage, log, { registryMirrors: o.registryMirrors ?? [], ...(o.pull ? { pull: true } : {}) });
  const { src, plan } = await resolvePlan(o, images, downloads, log);
  // RUN steps boot the build VMs: their kernel must be there before anything runs (a build without RUN boots nothing).
  if (plan.stages.some((st) => st.steps.some((x) => x.keyword === 'RUN'))) {
    await pickKernel(storage, o.vmlinuxId).catch((err: Error) => {
      throw err instanceof UserError ? new UserError(`the vm engine boots RUN steps in microVMs, and ${err.message}; or build with --engine docker`) : err;
    });
  }
  const cache = new StepCache(o.cacheDir, o.cacheMaxBytes ?? DEFAULT_CACHE_MAX_BYTES, log);
  let executed = 0;
  let cached = 0;
  let stepsMs = 0;
  // Every step's key, before anything runs: an unchanged rebuild of the same tag keeps the stored image.
  const { planned, stepKeys, finalKey } = await keyPlan(plan, images, { ...o, buildContext: src.context });
  if (await storage.hasImage(tag)) {
    const existing = await storage.getImage(tag);
    // Labels are not in the step keys: other labels than the stored image's make it out of date.
    if (!o.noCache && existing.metadata.build?.cacheKey === finalKey && sameLabels(existing.metadata.config.labels, { ...plan.stages.at(-1)?.config.labels, ...o.labels })) {
      log.info('up to date: every step is unchanged', { tag });
      return { image: existing, executed: 0, cached: plan.stages.reduce((a, s) => a + s.steps.filter((x) => FS_STEPS.has(x.keyword)).length, 0), timings: { bootMs: 0, stepsMs: 0, convertMs: 0, totalMs: Date.now() - started }, stepKeys, cacheKey: finalKey };
    }
    if (!o.overwrite) throw new UserError(`image ${tag} already exists (built from other inputs): choose another tag or pass --overwrite`);
  }
  // The work dir holds every stage's disk (GiBs): a cancelled build (SIGINT/SIGTERM) removes it too, and
  // `purge` one whose build was SIGKILLed.
  const { dir: work, remove: removeWork } = await makeWorkDir();
  const b: BootContext = {
    vm: o.vm ?? { backend: 'qemu', network: 'user', runCache: path.join(o.cacheDir, 'build-vms') },
    storage, ...(o.vmlinuxId ? { vmlinuxId: o.vmlinuxId } : {}), accel: o.accel ?? 'auto', memMib: o.memMib ?? 512,
    stepTimeoutMs: o.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS, log, tag, bootMs: 0, secrets: secretsById(o.secrets ?? []), sshAgents: sshAgentsById(o.sshAgents ?? []),
    cacheMounts: cacheVolumesDir(o.cacheDir),
  };
  try {
    const results = new Map<number, { image: string; key: string }>();
    const externals = new Map<string, string>();
    let last: { stage: Stage; image: string; key: string; parents: string[] } | undefined;
    for (const stage of plan.stages) {
      throwIfCancelled();
      const image = path.join(work, `stage-${stage.index}.ext4`);
      const p = planned.get(stage.index)!;
      const { keys, states, parents, mounts } = p;
      let start = 0;
      if (!o.noCache) {
        for (let k = stage.steps.length - 1; k >= 0; k--) {
          if (!FS_STEPS.has(stage.steps[k]!.keyword)) continue;
          const pulled = !(await cache.has(keys[k]!));
          if (pulled && !(await o.remoteCache?.pull(keys[k]!, cache))) continue;
          if (!(await cache.restore(keys[k]!, image))) {
            if (pulled) o.remoteCache?.rejected?.(keys[k]!);
          } else {
            start = k + 1;
            cached += stage.steps.slice(0, k + 1).filter((s) => FS_STEPS.has(s.keyword)).length;
            log.info('steps restored from the cache', { stage: stage.name ?? stage.index, through: `${path.basename(stage.steps[k]!.file)}:${stage.steps[k]!.line}` });
            // A larger --size than the cached build's (a full disk, retried): the restored steps grow too.
            if (o.sizeBytes) await growTo(image, o.sizeBytes);
          }
          break;
        }
      }
      if (start === 0) {
        if (p.base.kind === 'stage') {
          await roomForCopy(results.get(p.base.stage)!.image, image, `the copy of stage ${p.base.stage}`);
          await copySparse(results.get(p.base.stage)!.image, image);
        }
        else if (p.base.kind === 'scratch') await emptyImage(image, path.join(work, `scratch-${stage.index}`), log);
        else await materialize(p.base.image, image, path.join(work, `base-${stage.index}`), log);
        await growTo(image, o.sizeBytes ?? (await fsp.stat(image)).size + 1024 ** 3);
      }
      for (let k = start; k < stage.steps.length; k++) {
        const step = stage.steps[k]!;
        if (!FS_STEPS.has(step.keyword)) continue;
        // A cancel between two steps: the next one never starts (the current one's VM is torn down by its owner).
        throwIfCancelled();
        const t0 = Date.now();
        log.info(`step ${path.basename(step.file)}:${step.line}`, { instruction: step.original.split('\n')[0]!.slice(0, 120) });
        await executeStep(image, step, states[k]!, b, {
          context: src.context,
          downloads,
          scratch: path.join(work, `copy-${stage.index}-${k}`),
          mounts: mounts[k] ?? [],
          stageImage: (s) => results.get(s)?.image,
          externalImage: (ref, where) => external(ref, images, work, externals, log, where),
          fromImage: async (s) => {
            if (s.from && 'stage' in s.from) return results.get(s.from.stage)?.image;
            if (s.from) return external(s.from.image, images, work, externals, log, { file: s.file, line: s.line });
            return undefined;
          },
        });
        stepsMs += Date.now() - t0;
        executed++;
        throwIfCancelled();
        if (!o.noCache) await cache.save(keys[k]!, image);
      }
      results.set(stage.index, { image, key: p.finalKey });
      last = { stage, image, key: p.finalKey, parents };
    }
    if (!last) throw new UserError('the Dockerfile has no stage to build');
    throwIfCancelled();
    const t1 = Date.now();
    const target = last;
    const stored = await storage.writeImage(tag, async (staging) => {
      await copySparse(target.image, staging.rootfsPath);
      const tools = new Ext4Tools(log);
      await tools.check(staging.rootfsPath);
      await tools.shrink(staging.rootfsPath, { freeBytes: o.freeBytes ?? 64 * 1024 ** 2 });
      await tools.check(staging.rootfsPath);
      // Cancelled while the image was shrunk: no tag is stored.
      throwIfCancelled();
      return {
        type: 'rootfs',
        source: { kind: 'dockerfile', ref: src.ref, ...(src.commit ? { commit: src.commit } : {}), ...(target.stage.name ? { stage: target.stage.name } : {}) },
        parents: target.parents,
        config: o.labels ? { ...target.stage.config, labels: { ...target.stage.config.labels, ...o.labels } } : target.stage.config,
        build: { engine: 'vm', planDigest: plan.digest, buildArgs: plan.buildArgs, durationMs: Date.now() - started, cacheKey: finalKey },
      };
    }, { overwrite: o.overwrite ?? false });
    const convertMs = Date.now() - t1;
    log.info('built with the vm engine', { tag, executed, cached, seconds: Math.round((Date.now() - started) / 100) / 10 });
    return { image: stored, executed, cached, timings: { bootMs: b.bootMs, stepsMs, convertMs, totalMs: Date.now() - started }, stepKeys, cacheKey: finalKey };
  } finally {
    await removeWork();
  }
}
