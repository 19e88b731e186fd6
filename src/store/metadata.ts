import { z } from 'zod';

/**
 * metadata.json beside every stored rootfs.ext4. Versioned: readers accept every schemaVersion they know
 * and refuse newer ones with a clear message.
 */
export const METADATA_SCHEMA_VERSION = 1;

const stringMap = z.record(z.string(), z.string());

export const HealthcheckSchema = z.object({
  test: z.array(z.string()),
  intervalNs: z.number().optional(),
  timeoutNs: z.number().optional(),
  startPeriodNs: z.number().optional(),
  startIntervalNs: z.number().optional(),
  retries: z.number().optional(),
});

export const ImageConfigSchema = z.object({
  entrypoint: z.array(z.string()).nullable().default(null),
  cmd: z.array(z.string()).nullable().default(null),
  env: z.array(z.string()).default([]),
  workingDir: z.string().default(''),
  user: z.string().default(''),
  exposedPorts: z.array(z.string()).default([]),
  labels: stringMap.default({}),
  volumes: z.array(z.string()).default([]),
  stopSignal: z.string().default(''),
  healthcheck: HealthcheckSchema.nullable().default(null),
  onBuild: z.array(z.string()).default([]),
  shell: z.array(z.string()).nullable().default(null),
});
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

export const ImageMetadataSchema = z.object({
  schemaVersion: z.literal(METADATA_SCHEMA_VERSION),
  tag: z.string(),
  type: z.enum(['baseos', 'rootfs']),
  created: z.string().datetime(),
  /** Where the image came from: a Dockerfile source, a Docker image, a registry reference. */
  source: z.object({
    kind: z.enum(['dockerfile', 'docker-image', 'registry', 'import', 'test']),
    ref: z.string(),
    commit: z.string().optional(),
    stage: z.string().optional(),
  }),
  /** The tag or image this one was built from, nearest first. */
  parents: z.array(z.string()).default([]),
  config: ImageConfigSchema,
  build: z
    .object({
      engine: z.string(),
      builder: z.string().optional(),
      planDigest: z.string().optional(),
      buildArgs: stringMap.optional(),
      durationMs: z.number().optional(),
      dockerImageId: z.string().optional(),
      /** vm engine: the key of the final step's result and the image's size settings (an unchanged rebuild keeps the image). */
      cacheKey: z.string().optional(),
    })
    .optional(),
  rootfs: z.object({
    file: z.literal('rootfs.ext4'),
    sha256: z.string().regex(/^[a-f0-9]{64}$/),
    apparentSize: z.number().int().nonnegative(),
    contentSize: z.number().int().nonnegative().optional(),
  }),
});
export type ImageMetadata = z.infer<typeof ImageMetadataSchema>;
export type ImageMetadataInput = z.input<typeof ImageMetadataSchema>;

export const KernelMetadataSchema = z.object({
  schemaVersion: z.literal(METADATA_SCHEMA_VERSION),
  id: z.string(),
  created: z.string().datetime(),
  format: z.enum(['elf', 'bzimage', 'unknown']),
  source: z.string(),
  vmlinux: z.object({ sha256: z.string(), size: z.number() }),
  initrd: z.object({ sha256: z.string(), size: z.number() }).optional(),
  cmdline: z.string().optional(),
});
export type KernelMetadata = z.infer<typeof KernelMetadataSchema>;

/** A short reason from a zod error, for one-line messages. */
export function describeZodError(err: z.ZodError): string {
  return err.issues
    .slice(0, 3)
    .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
    .join('; ');
}
