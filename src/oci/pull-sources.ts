import { resolveRegistryImage, type RegistryImage } from './image-pull.js';
import { DOCKER_HUB, DOCKER_HUB_API, type NormalizedRef } from './reference.js';
import { dockerConfigCredentials, ManifestNotFound, RegistryClient } from './registry.js';

/**
 * Where a normalized reference is pulled from, in order, as dockerd does with `registry-mirrors`: a
 * docker.io reference goes to each mirror first, then to docker.io's API host; a mirror that fails for
 * any reason (unreachable, 404, an error) is passed over. Any other registry is asked directly: mirrors
 * are for docker.io only. A mirror is sent the credentials `docker login <mirror host>` stored, never
 * Docker Hub's.
 */

/** Where docker.io's API is (default registry-1.docker.io): tests point it at a closed port so they never reach the internet. */
export const ENV_DOCKER_IO_REGISTRY = 'FIREBUILD_DOCKER_IO_REGISTRY';

export interface PullPlace {
  /** What the one-line error calls it: `http://127.0.0.1:5000 (mirror)`, `registry-1.docker.io`. */
  label: string;
  host: string;
  scheme?: 'http' | 'https';
  mirror: boolean;
}

export interface PullAttempt { place: string; reason: string }

/** The places, in the order they are tried. `mirrors` are `http(s)://host[:port]` (profile/settings.ts checked them). */
export function pullPlaces(ref: NormalizedRef, mirrors: readonly string[], env: NodeJS.ProcessEnv = process.env): PullPlace[] {
  if (ref.domain !== DOCKER_HUB) return [{ label: ref.domain, host: ref.domain, mirror: false }];
  const origin = env[ENV_DOCKER_IO_REGISTRY] || DOCKER_HUB_API;
  return [
    ...mirrors.map((m): PullPlace => {
      const u = new URL(m);
      return { label: `${u.protocol}//${u.host} (mirror)`, host: u.host, scheme: u.protocol === 'http:' ? 'http' : 'https', mirror: true };
    }),
    { label: origin, host: origin, mirror: false },
  ];
}

/** The image from the first place that has it, and what every place before it answered. */
export async function pullFromRegistries(ref: NormalizedRef, mirrors: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ image?: RegistryImage; tried: PullAttempt[] }> {
  const tried: PullAttempt[] = [];
  for (const p of pullPlaces(ref, mirrors, env)) {
    try {
      // docker.io's credentials are stored under its own name (index.docker.io), not its API host's.
      const creds = await dockerConfigCredentials(p.mirror ? p.host : p.host === DOCKER_HUB_API ? DOCKER_HUB : p.host, env);
      const client = new RegistryClient(p.host, creds, false, p.scheme);
      const image = await resolveRegistryImage(ref.full, { ref: { registry: p.host, repository: ref.repository, reference: ref.reference }, client });
      return { image, tried };
    } catch (err) {
      tried.push({ place: p.label, reason: reasonOf(err, p.host) });
    }
  }
  return { tried };
}

/** A short reason: `not found`, `unreachable (ECONNREFUSED ...)`, `unreachable through proxy http://p:3128 (...)`, else the error's own line. */
function reasonOf(err: unknown, host: string): string {
  if (err instanceof ManifestNotFound) return 'not found';
  const msg = (err as Error).message;
  const unreachable = `cannot reach registry ${host}`;
  if (!msg.startsWith(unreachable)) return msg;
  const m = /^( through proxy \S+)?: ([^]*)$/.exec(msg.slice(unreachable.length));
  return m ? `unreachable${m[1] ?? ''} (${m[2]})` : msg;
}
