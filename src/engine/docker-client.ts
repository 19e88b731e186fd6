import Docker from 'dockerode';
import { UserError, errnoCode } from '../util/errors.js';
import { RUNNER_SETUP_DOCKER, currentUser } from '../util/privilege.js';

/** The Docker engine, through dockerode (honours DOCKER_HOST). */
export function dockerClient(): Docker {
  return new Docker();
}

export const DOCKER_START_HINT = 'start it with scripts/install-deps.sh (or systemctl start docker), or set DOCKER_HOST';

/**
 * How to fix an engine that did not answer: start it; or, when its socket refused this user (EACCES), grant
 * access on purpose (Docker access is root-equivalent: runner-setup gives it only when asked).
 */
export function dockerHint(err: unknown): string {
  const denied = errnoCode(err) === 'EACCES' || /\bEACCES\b/.test((err as Error)?.message ?? '');
  return denied ? `${currentUser()} may not use the Docker engine, whose access is root-equivalent: grant it on purpose with ${RUNNER_SETUP_DOCKER}, or build with engine vm (no Docker needed)` : DOCKER_START_HINT;
}

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
    throw new UserError(`Docker engine not reachable (${(err as Error).message}): ${dockerHint(err)}`, { cause: err });
  } finally {
    if (timer) clearTimeout(timer);
  }
}
