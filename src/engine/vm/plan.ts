import * as path from 'node:path';
import { parseBuildArgs } from '../../dockerfile/build-args.js';
import { buildPlan } from '../../dockerfile/plan.js';
import type { Plan, Stage, Step } from '../../dockerfile/plan-schema.js';
import type { Downloads } from '../../source/downloads.js';
import { resolveSource, type ResolvedSource } from '../../source/resolve.js';
import type { ImageConfig } from '../../store/metadata.js';
import { UserError } from '../../util/errors.js';
import type { Logger } from '../../util/logger.js';
import type { ImageResolver, ImageSource } from './bases.js';
import { sha } from './keys.js';
import type { Resource } from '../../source/resource.js';
import type { BuildContext } from '../../source/context.js';
import { runMounts, stepNetwork, type RunMount } from './mounts.js';
import { parseSecretMount } from './secrets.js';
import { sshMounts } from './ssh.js';

/**
 * The vm engine's planning: the Dockerfile's plan (source resolved, build args applied, features the
 * engine does not do refused) and, before anything runs, every file-system step's cache key, chained
 * from its parent's key and its inputs (the instruction after expansion, resource digests, USER, WORKDIR).
 */

/** The steps that change the file system: each is executed (or restored from the step cache) and keyed. */
export const FS_STEPS = new Set(['RUN', 'COPY', 'ADD', 'WORKDIR']);
/** Starts every step key: bumped whenever what a step makes of the same inputs changes, so older cache entries (local, or carried by the Actions cache) and up-to-date images no longer match. */
export const ENGINE_SEMANTICS = 'vm-engine-semantics-4';

export interface PlanInputs {
  dockerfile: string;
  context?: string;
  buildArgs?: string[];
  target?: string;
  cacheDir: string;
}

/** The source and the plan of a build; refuses the BuildKit features the vm engine does not do. */
export async function resolvePlan(o: PlanInputs, images: ImageResolver, downloads: Downloads, log: Logger): Promise<{ src: ResolvedSource; plan: Plan }> {
  const src = await resolveSource(o.dockerfile, { ...(o.context ? { context: o.context } : {}), cacheDir: o.cacheDir, logger: log });
  const plan: Plan = await buildPlan(src.text, {
    buildArgs: parseBuildArgs(o.buildArgs),
    ...(o.target !== undefined ? { target: o.target } : {}),
    context: src.context,
    source: { kind: src.kind, ref: src.ref, dockerfile: src.kind === 'literal' ? 'Dockerfile' : src.dockerfile, ...(src.commit ? { commit: src.commit } : {}) },
    baseConfig: async (ref): Promise<Partial<ImageConfig> | undefined> => (await images.resolve(ref))?.config,
    downloads,
  });
  for (const st of plan.stages) {
    for (const step of st.steps) {
      const feature = vmUnsupported(step);
      if (feature) throw new UserError(`${feature} is not supported by the vm engine yet: remove it, or build with --engine docker on a host with BuildKit`, { file: step.file, line: step.line });
      // Secret mounts checked before anything runs (their targets are resolved against the WORKDIR when the step runs);
      // the other mounts (vm/mounts.ts) when the plan is keyed, with the WORKDIR, also before anything runs.
      for (const m of step.mounts ?? []) if (m.type === 'secret') parseSecretMount(m, { file: step.file, line: step.line });
      // Ssh mounts too (their relative targets are resolved against the WORKDIR again when the step runs).
      sshMounts(step, '/');
      if (step.keyword === 'RUN') stepNetwork(step);
    }
  }
  return { src, plan };
}

/**
 * BuildKit features the vm engine does not do (refused rather than ignored). `COPY --link` changes only how
 * BuildKit caches layers, not the tree: accepted. `RUN --mount=type=secret` is done (vm/secrets.ts),
 * `type=ssh` (vm/ssh.ts), the cache, bind and tmpfs mounts and `RUN --network=default|none` too
 * (vm/mounts.ts, vm/run-mounts.ts). `RUN --security=insecure` stays refused: a build VM runs nothing
 * privileged beyond the VM itself.
 */
export function vmUnsupported(step: Step): string | undefined {
  if (step.security !== undefined) return 'RUN --security';
  return undefined;
}

export interface StepState { user: string; workdir: string }

export interface PlannedStage {
  base: { kind: 'image'; image: ImageSource } | { kind: 'stage'; stage: number } | { kind: 'scratch' };
  parents: string[];
  /** Per step of the stage (every step, file-system or not): its key and the USER and WORKDIR it runs with. */
  keys: string[];
  states: StepState[];
  /** Per step: a RUN's cache, bind and tmpfs mounts, checked, targets absolute (empty for other steps). */
  mounts: PlannedMount[][];
  finalKey: string;
}

/** A RUN mount as planned: a bind from the build context carries what it reads (its resources, hashed into the key). */
export type PlannedMount = RunMount & { resources?: Resource[] };

export interface KeyedPlan {
  planned: Map<number, PlannedStage>;
  /** The stage built into the image: the last one. */
  target: Stage;
  /** The step cache keys of every file-system step (what carries a build to another runner). */
  stepKeys: string[];
  /** The image's own key: an unchanged rebuild of the same tag keeps the stored image. */
  finalKey: string;
}

/** Every step's key, before anything runs. */
export async function keyPlan(plan: Plan, images: ImageResolver, o: { freeBytes?: number; sizeBytes?: number; buildContext?: BuildContext }): Promise<KeyedPlan> {
  const planned = new Map<number, PlannedStage>();
  for (const stage of plan.stages) planned.set(stage.index, await planStage(stage, plan, planned, images, o.buildContext));
  const target = plan.stages[plan.stages.length - 1];
  if (!target) throw new UserError('the Dockerfile has no stage to build');
  const stepKeys = plan.stages.flatMap((st) => st.steps.flatMap((x, k) => (FS_STEPS.has(x.keyword) ? [planned.get(st.index)!.keys[k]!] : [])));
  const finalKey = sha('image', planned.get(target.index)!.finalKey, String(o.freeBytes ?? 64 * 1024 ** 2), String(o.sizeBytes ?? ''));
  return { planned, target, stepKeys, finalKey };
}

/** What a step's result depends on besides its parent: the instruction after expansion, never where it is written. */
function stepInputs(step: Step, state: StepState, fromKey?: string, mountInputs: string[] = []): string {
  const { file: _f, line: _l, original: _o, ...rest } = step;
  return JSON.stringify({ ...rest, user: state.user, workdir: state.workdir, ...(fromKey ? { fromKey } : {}), ...(mountInputs.length ? { mountInputs } : {}) });
}

/**
 * A RUN's mounts, checked, and what their content adds to the step's key: a bind reads a context subtree
 * (its digest after .dockerignore), a stage (its key) or an image (its digest). A cache's content never is
 * part of the key (only its spec, in the step), as in BuildKit.
 */
async function planMounts(step: Step, stage: Stage, plan: Plan, planned: Map<number, PlannedStage>, images: ImageResolver, context: BuildContext | undefined, workdir: string): Promise<{ mounts: PlannedMount[]; inputs: string[] }> {
  if (step.keyword !== 'RUN') return { mounts: [], inputs: [] };
  const where = { file: step.file, line: step.line };
  const mounts: PlannedMount[] = runMounts(step, plan.stages, stage.index, workdir);
  const inputs: string[] = [];
  for (const [i, m] of mounts.entries()) {
    if (m.type === 'bind' && m.from.kind === 'context') {
      if (!context) throw new UserError(`RUN --mount=type=bind,target=${m.target}: a bind from the build context needs one: pass --context DIR`, where);
      const source = m.source === '/' ? '.' : m.source.slice(1);
      const resources = await context.resolve(source, { ...where, keyword: 'RUN --mount=type=bind' });
      mounts[i] = { ...m, resources };
      inputs.push(sha('context', JSON.stringify(resources.map((r) => ({ kind: r.kind, path: r.path, sha256: r.sha256, mode: r.mode, linkTarget: r.linkTarget })))));
    } else if (m.type === 'bind' && m.from.kind === 'stage') {
      const prev = planned.get(m.from.stage);
      if (!prev) throw new UserError(`RUN --mount=type=bind,from=${m.from.stage}: that stage is not built before this one`, where);
      inputs.push(sha('stage', prev.finalKey));
    } else if (m.type === 'bind' && m.from.kind === 'image') {
      inputs.push(sha('image', (await images.need(m.from.ref, `RUN --mount=type=bind,from=${m.from.ref}: `, where)).key));
    } else if (m.type === 'cache' && m.from?.kind === 'image') {
      // Checked now (a missing image is an error before anything runs); its content seeds an empty cache only.
      await images.need(m.from.ref, `RUN --mount=type=cache,from=${m.from.ref}: `, where);
    }
  }
  return { mounts, inputs };
}

/** Resolve a WORKDIR value against the current one. */
function joinWorkdir(current: string, value: string): string {
  return path.posix.resolve(current || '/', value);
}

/** A stage's base and the key of every step (chained from the base's digest or the base stage's final key). */
async function planStage(stage: Stage, plan: Plan, planned: Map<number, PlannedStage>, images: ImageResolver, context?: BuildContext): Promise<PlannedStage> {
  const where = { file: stage.file, line: stage.line };
  let key: string;
  let baseCfg: ImageConfig | undefined;
  let base: PlannedStage['base'];
  const parents: string[] = [];
  if (stage.base.kind === 'stage') {
    const prev = planned.get(stage.base.stage);
    if (!prev) throw new UserError(`stage ${stage.base.stage} was not built before stage ${stage.index}`, where);
    key = prev.finalKey;
    base = { kind: 'stage', stage: stage.base.stage };
    const baseIndex = stage.base.stage;
    baseCfg = plan.stages.find((s) => s.index === baseIndex)?.config;
  } else if (stage.base.kind === 'image') {
    const r = await images.need(stage.base.ref, 'base ', where);
    key = sha(ENGINE_SEMANTICS, r.key);
    base = { kind: 'image', image: r.source };
    baseCfg = r.config;
    parents.push(r.parent);
  } else {
    key = sha(ENGINE_SEMANTICS, 'scratch');
    base = { kind: 'scratch' };
  }
  const state = { user: baseCfg?.user ?? '', workdir: baseCfg?.workingDir || '/' };
  const keys: string[] = [];
  const states: StepState[] = [];
  const mounts: PlannedMount[][] = [];
  for (const step of stage.steps) {
    if (step.keyword === 'USER') state.user = step.value ?? '';
    if (step.keyword === 'WORKDIR') state.workdir = joinWorkdir(state.workdir, step.value ?? '/');
    let from: string | undefined;
    if (step.from && 'stage' in step.from) from = planned.get(step.from.stage)?.finalKey;
    else if (step.from) from = (await images.need(step.from.image, `COPY --from=${step.from.image}: `, { file: step.file, line: step.line })).key;
    const m = await planMounts(step, stage, plan, planned, images, context, state.workdir);
    key = sha(key, stepInputs(step, state, from, m.inputs));
    keys.push(key);
    states.push({ ...state });
    mounts.push(m.mounts);
  }
  return { base, parents, keys, states, mounts, finalKey: key };
}
