import Docker from 'dockerode';
import { UserError } from '../util/errors.js';

/** The Docker engine, through dockerode (honours DOCKER_HOST). */
export function dockerClient(): Docker {
  return new Docker();
}

export const DOCKER_START_HINT = 'start it with scripts/install-deps.sh (or systemctl start docker), or set DOCKER_HOST';

/** The engine's version, or a UserError saying how to start it. */
export async function dockerVersion(docker: Docker = dockerClient(), timeoutMs = 5000): Promise<{ version: string; apiVersion: string }> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const v = await Promise.race([
      docker.version(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return { version: v.Version, apiVersion: v.ApiVersion };
  } catch (err) {
    throw new UserError(`Docker engine not reachable (${(err as Error).message}): ${DOCKER_START_HINT}`, { cause: err });
  } finally {
    if (timer) clearTimeout(timer);
  }
}
