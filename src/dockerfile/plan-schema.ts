import { z } from 'zod';
import { ResourceSchema } from '../source/resource.js';
import { HealthcheckSchema, ImageConfigSchema } from '../store/metadata.js';

/**
 * The resolved build plan: the contract between the Dockerfile front end and the build engines.
 * Versioned; `docs/plan.schema.json` is generated from this schema.
 */
export const PLAN_SCHEMA_VERSION = 1;

const Where = { file: z.string(), line: z.number().int().positive() };

export { ResourceSchema, type Resource } from '../source/resource.js';

const HeredocSchema = z.object({ name: z.string(), content: z.string(), expand: z.boolean(), chomp: z.boolean() });

export const StepSchema = z.object({
  ...Where,
  keyword: z.string(),
  /** The instruction as written (continuations included). */
  original: z.string(),
  /** Set for steps that came from a base's ONBUILD triggers. */
  onbuild: z.boolean().optional(),
  // RUN, CMD, ENTRYPOINT, HEALTHCHECK
  form: z.enum(['shell', 'exec']).optional(),
  command: z.array(z.string()).optional(),
  shell: z.array(z.string()).optional(),
  heredocs: z.array(HeredocSchema).optional(),
  mounts: z.array(z.record(z.string(), z.string())).optional(),
  network: z.string().optional(),
  security: z.string().optional(),
  /** RUN: the environment the command sees (ENV, then the build args in scope). */
  env: z.array(z.string()).optional(),
  // COPY, ADD
  sources: z.array(z.string()).optional(),
  dest: z.string().optional(),
  from: z.union([z.object({ stage: z.number().int() }), z.object({ image: z.string() })]).optional(),
  chown: z.string().optional(),
  chmod: z.string().optional(),
  link: z.boolean().optional(),
  /** COPY --parents: sources keep their path below the context root (or their `/./` pivot) under the destination. */
  parents: z.boolean().optional(),
  /** COPY/ADD --exclude: patterns (as .dockerignore's) of what the sources hold that is not copied. */
  exclude: z.array(z.string()).optional(),
  resources: z.array(ResourceSchema).optional(),
  checksum: z.string().optional(),
  // ENV, LABEL, ARG
  pairs: z.array(z.object({ key: z.string(), value: z.string() })).optional(),
  args: z.array(z.object({ name: z.string(), value: z.string().nullable() })).optional(),
  // EXPOSE, VOLUME
  values: z.array(z.string()).optional(),
  // USER, WORKDIR, STOPSIGNAL, MAINTAINER, SHELL, ONBUILD
  value: z.string().optional(),
  healthcheck: HealthcheckSchema.optional(),
});
export type Step = z.infer<typeof StepSchema>;

export const StageSchema = z.object({
  index: z.number().int().nonnegative(),
  name: z.string().optional(),
  ...Where,
  base: z.union([
    z.object({ kind: z.literal('image'), ref: z.string() }),
    z.object({ kind: z.literal('stage'), stage: z.number().int().nonnegative() }),
    z.object({ kind: z.literal('scratch') }),
  ]),
  platform: z.string().optional(),
  steps: z.array(StepSchema),
  /** The image config at the end of the stage (inherited from a base stage where there is one). */
  config: ImageConfigSchema,
});
export type Stage = z.infer<typeof StageSchema>;

export const PlanSchema = z.object({
  schemaVersion: z.literal(PLAN_SCHEMA_VERSION),
  source: z.object({
    kind: z.enum(['local', 'literal', 'http', 'git']),
    ref: z.string(),
    dockerfile: z.string(),
    context: z.string().optional(),
    commit: z.string().optional(),
  }),
  directives: z.object({ escape: z.string(), syntax: z.string().optional() }),
  buildArgs: z.record(z.string(), z.string()),
  /** Build args given but declared by no ARG of a needed stage (Docker warns about these). */
  unusedBuildArgs: z.array(z.string()),
  globalArgs: z.array(z.object({ name: z.string(), value: z.string().nullable() })),
  target: z.object({ index: z.number().int().nonnegative(), name: z.string().optional() }),
  /** The stages the target needs, in Dockerfile order. */
  stages: z.array(StageSchema),
  /** Stages the target does not need: not built. */
  skipped: z.array(z.object({ index: z.number().int(), name: z.string().optional() })),
  /** sha256 of the plan without this field: identifies what will be built. */
  digest: z.string(),
});
export type Plan = z.infer<typeof PlanSchema>;

/** The plan's JSON Schema (docs/plan.schema.json is this, written by `npm run docs:schema`). */
export function planJsonSchema(): Record<string, unknown> {
  return {
    $id: `urn:firebuild:schema:plan:v${PLAN_SCHEMA_VERSION}`,
    title: `firebuild build plan, schema version ${PLAN_SCHEMA_VERSION}`,
    ...(z.toJSONSchema(PlanSchema, { io: 'output' }) as Record<string, unknown>),
  };
}
