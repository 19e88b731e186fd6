import * as path from 'node:path';
import { parseBuildArgs } from '../dockerfile/build-args.js';
import { buildPlan } from '../dockerfile/plan.js';
import type { Plan } from '../dockerfile/plan-schema.js';
import { resolveSource } from '../source/resolve.js';
import type { Logger } from '../util/logger.js';
import type { ImageConfig } from '../store/metadata.js';

export interface PlanCommandOptions {
  dockerfile: string;
  context?: string;
  buildArgs?: string[];
  target?: string;
  cacheDir: string;
  baseConfig?: (ref: string) => Promise<Partial<ImageConfig> | undefined>;
  /** --allow-host-urls: ADD URLs may reach host-only addresses (net/host-only.ts). */
  allowHostUrls?: boolean;
}

/** Resolve the source and print nothing: returns the plan. */
export async function planCommand(o: PlanCommandOptions, log: Logger): Promise<Plan> {
  const src = await resolveSource(o.dockerfile, { ...(o.context ? { context: o.context } : {}), cacheDir: o.cacheDir, logger: log });
  const source: Plan['source'] = { kind: src.kind, ref: src.ref, dockerfile: src.kind === 'literal' ? 'Dockerfile' : src.dockerfile };
  if (src.context.kind !== 'none') source.context = src.context.kind === 'local' ? path.resolve(src.context.root) : src.context.root;
  if (src.commit) source.commit = src.commit;
  const plan = await buildPlan(src.text, {
    buildArgs: parseBuildArgs(o.buildArgs),
    ...(o.target !== undefined ? { target: o.target } : {}),
    context: src.context,
    source,
    ...(o.baseConfig ? { baseConfig: o.baseConfig } : {}),
    ...(o.allowHostUrls ? { allowHostUrls: true } : {}),
  });
  for (const a of plan.unusedBuildArgs) log.warn(`build arg ${a} was not consumed by any ARG of the stages built`);
  return plan;
}
