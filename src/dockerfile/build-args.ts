import { UserError } from '../util/errors.js';

/** `--build-arg K=V` (or `K`, taking the value from the environment, as docker build does). */
export function parseBuildArgs(items: readonly string[] | undefined, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items ?? []) {
    const i = item.indexOf('=');
    const key = i < 0 ? item : item.slice(0, i);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new UserError(`malformed --build-arg '${item}': use NAME=value`);
    if (i < 0) {
      const v = env[key];
      if (v === undefined) continue; // docker build ignores a bare name that is not set
      out[key] = v;
    } else out[key] = item.slice(i + 1);
  }
  return out;
}
