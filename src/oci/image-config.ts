import { ImageConfigSchema, type ImageConfig } from '../store/metadata.js';

/** An image's config as Docker and OCI registries give it (the fields firebuild keeps). */
export interface DockerImageConfig {
  Env?: string[] | null;
  Cmd?: string[] | null;
  Entrypoint?: string[] | null;
  WorkingDir?: string;
  User?: string;
  ExposedPorts?: Record<string, unknown> | null;
  Labels?: Record<string, string> | null;
  Volumes?: Record<string, unknown> | null;
  StopSignal?: string;
  Healthcheck?: { Test?: string[]; Interval?: number; Timeout?: number; StartPeriod?: number; StartInterval?: number; Retries?: number } | null;
  OnBuild?: string[] | null;
  Shell?: string[] | null;
}

/** Docker's image config in firebuild's metadata shape. */
export function fromDockerConfig(c: DockerImageConfig | undefined): ImageConfig {
  const hc = c?.Healthcheck;
  return ImageConfigSchema.parse({
    entrypoint: c?.Entrypoint ?? null,
    cmd: c?.Cmd ?? null,
    env: c?.Env ?? [],
    workingDir: c?.WorkingDir ?? '',
    user: c?.User ?? '',
    exposedPorts: Object.keys(c?.ExposedPorts ?? {}).sort(),
    labels: c?.Labels ?? {},
    volumes: Object.keys(c?.Volumes ?? {}).sort(),
    stopSignal: c?.StopSignal ?? '',
    healthcheck: hc?.Test
      ? {
          test: hc.Test,
          ...(hc.Interval ? { intervalNs: hc.Interval } : {}),
          ...(hc.Timeout ? { timeoutNs: hc.Timeout } : {}),
          ...(hc.StartPeriod ? { startPeriodNs: hc.StartPeriod } : {}),
          ...(hc.StartInterval ? { startIntervalNs: hc.StartInterval } : {}),
          ...(hc.Retries ? { retries: hc.Retries } : {}),
        }
      : null,
    onBuild: c?.OnBuild ?? [],
    shell: c?.Shell ?? null,
  });
}

/** The firebuild tag a base OS gets from its FROM when no --tag is given (the seed's rule). */
export function tagFromImageRef(ref: string): string | undefined {
  if (ref.includes('@')) return undefined;
  let parts = ref.split('/');
  // A first component with a dot, a colon or `localhost` is a registry: drop it.
  if (parts.length > 1 && /[.:]|^localhost$/.test(parts[0] as string)) parts = parts.slice(1);
  if (parts[0] === 'library' && parts.length === 2) parts = parts.slice(1);
  const last = parts[parts.length - 1] as string;
  const colon = last.indexOf(':');
  const name = colon >= 0 ? last.slice(0, colon) : last;
  const version = colon >= 0 ? last.slice(colon + 1) : 'latest';
  if (parts.length === 1) return `_/${name}:${version}`;
  if (parts.length === 2) return `${parts[0]}/${name}:${version}`;
  return undefined;
}
